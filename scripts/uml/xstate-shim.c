/*
 * xstate-shim.c: an LD_PRELOAD library for Debian's User-Mode Linux 6.1 on hosts whose XSAVE
 * area is larger than UML assumes (seen on Sapphire Rapids hosts with AMX: the host kernel's
 * standard-format xstate is 10,688 bytes, UML 6.1 sizes its buffer from CPUID at 2,696).
 *
 * Linux refuses PTRACE_SETREGSET(NT_X86_XSTATE) unless the buffer is exactly the kernel's full
 * user xstate size (EFAULT otherwise), so UML's first register restore fails ("userspace -
 * ptrace set fp regs failed, errno = 14") and the guest's init dies.  PTRACE_GETREGSET with a
 * short buffer is fine (the kernel truncates).
 *
 * On that one failure this shim reads the traced process's full xstate, lays UML's shorter
 * image over its start (legacy area, header and the components UML knows), and sets the full
 * buffer.  Components past UML's size (the AMX tiles, which UML's guests never use) keep the
 * values the kernel already holds.  Every other ptrace call, and every call on hosts where
 * UML's size is right, goes straight to libc.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/types.h>
#include <sys/uio.h>

#define SHIM_NT_X86_XSTATE 0x202
#define SHIM_MAX (64 * 1024)

typedef long (*ptrace_fn)(int, pid_t, void *, void *);
static unsigned char full[SHIM_MAX] __attribute__((aligned(64)));

long ptrace(enum __ptrace_request request, ...)
{
    static ptrace_fn real;
    va_list ap;
    pid_t pid;
    void *addr, *data;
    long ret;

    va_start(ap, request);
    pid = va_arg(ap, pid_t);
    addr = va_arg(ap, void *);
    data = va_arg(ap, void *);
    va_end(ap);
    if (!real)
        real = (ptrace_fn)dlsym(RTLD_NEXT, "ptrace");

    ret = real(request, pid, addr, data);
    if (request != PTRACE_SETREGSET || (unsigned long)addr != SHIM_NT_X86_XSTATE ||
        data == NULL || ret == 0 || errno != EFAULT)
        return ret;

    struct iovec *user = data;
    struct iovec whole = { full, sizeof(full) };
    if (real(PTRACE_GETREGSET, pid, addr, &whole) != 0)
        return -1;
    if (whole.iov_len <= user->iov_len) {     /* not the size mismatch this shim is for */
        errno = EFAULT;
        return -1;
    }
    memcpy(full, user->iov_base, user->iov_len);
    return real(PTRACE_SETREGSET, pid, addr, &whole);
}
