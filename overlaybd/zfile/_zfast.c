/* overlaybd.zfile._zfast: check and decompress a run of LZ4 ZFile blocks in one call.
 *
 * The pure-Python reader spends most of a sequential read on per-block call overhead (a CRC
 * call and a decompress call per 4 KiB block, each allocating).  This module does the whole
 * run in C, with the GIL released: for every block, the raw CRC-32C (seed given, no
 * inversions, spec 2.3) of its payload is compared with the little-endian u32 stored after
 * it, then LZ4_decompress_safe writes it straight into the output.
 *
 * LZ4 comes from the system's liblz4.so.1 (Debian's liblz4-1, already used for compression),
 * opened with dlopen, so no development headers are needed.  Without it, lz4_ok() is False and
 * the reader keeps its Python path.
 *
 * It never decides what an error means: on the first block that is short, too long, fails its
 * CRC or does not decompress to its expected length it stops and returns that block's index,
 * and the Python reader's slow path (evict, refetch, a clear error) takes over from there.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <stdint.h>
#include <string.h>

#if defined(__x86_64__)
#include <nmmintrin.h>
#define HAVE_SSE42_PATH 1
#endif

#define MAX_STORED 65536   /* a block's stored length (payload + CRC) above this is refused */

typedef int (*lz4_dec_fn)(const char *src, char *dst, int src_len, int dst_cap);
static lz4_dec_fn lz4_decompress_safe;

/* ---- CRC-32C, raw form (reflected 0x82F63B78, no initial or final inversion) ------------- */

static uint32_t crc_table[256];

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = (c >> 1) ^ (0x82F63B78u & (0u - (c & 1u)));
        crc_table[i] = c;
    }
}

static uint32_t crc_soft(uint32_t c, const unsigned char *p, size_t n)
{
    while (n--)
        c = crc_table[(c ^ *p++) & 0xFF] ^ (c >> 8);
    return c;
}

#ifdef HAVE_SSE42_PATH
__attribute__((target("sse4.2")))
static uint32_t crc_hw(uint32_t c, const unsigned char *p, size_t n)
{
    uint64_t c64 = c;
    while (n >= 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c64 = _mm_crc32_u64(c64, v);
        p += 8;
        n -= 8;
    }
    c = (uint32_t)c64;
    while (n--)
        c = _mm_crc32_u8(c, *p++);
    return c;
}

/* Three independent CRCs at once: the crc32 instruction has a latency of about three cycles
 * and a throughput of one, so three chains run in the time of one. */
__attribute__((target("sse4.2")))
static void crc3_hw(uint32_t seed, const unsigned char *const p[3], const size_t n[3],
                    uint32_t out[3])
{
    size_t m = n[0] < n[1] ? n[0] : n[1];
    if (n[2] < m)
        m = n[2];
    m &= ~(size_t)7;
    uint64_t c0 = seed, c1 = seed, c2 = seed;
    for (size_t o = 0; o < m; o += 8) {
        uint64_t v0, v1, v2;
        memcpy(&v0, p[0] + o, 8);
        memcpy(&v1, p[1] + o, 8);
        memcpy(&v2, p[2] + o, 8);
        c0 = _mm_crc32_u64(c0, v0);
        c1 = _mm_crc32_u64(c1, v1);
        c2 = _mm_crc32_u64(c2, v2);
    }
    out[0] = crc_hw((uint32_t)c0, p[0] + m, n[0] - m);
    out[1] = crc_hw((uint32_t)c1, p[1] + m, n[1] - m);
    out[2] = crc_hw((uint32_t)c2, p[2] + m, n[2] - m);
}
#endif

static uint32_t (*crc_update)(uint32_t, const unsigned char *, size_t) = crc_soft;
static int crc3_ok;   /* crc3_hw may be used */

/* ---- the run decoder ------------------------------------------------------------------- */

typedef struct {
    const unsigned char *raw;   /* compressed bytes of blocks [first, stop), from offs[first] */
    Py_ssize_t raw_len;
    const uint64_t *offs;       /* block start offsets in the file, offs[k+1] ends block k */
    Py_ssize_t first, stop;
    uint64_t bs, size;          /* block size, decompressed size of the whole file */
    int verify;
    uint32_t seed;
} run_t;

static uint64_t expected_len(const run_t *r, Py_ssize_t k)
{
    uint64_t start = (uint64_t)k * r->bs;
    if (start >= r->size)
        return 0;
    uint64_t left = r->size - start;
    return left < r->bs ? left : r->bs;
}

/* Total decompressed length of the run, or 0 if a block lies past the end of the file. */
static uint64_t run_total(const run_t *r)
{
    uint64_t total = 0;
    for (Py_ssize_t k = r->first; k < r->stop; k++) {
        uint64_t e = expected_len(r, k);
        if (e == 0)
            return 0;
        total += e;
    }
    return total;
}

/* Decode into dst (room for run_total bytes).  -1 when every block is good, else the index of
 * the first bad one (blocks before it are written).  Runs without the GIL.  Blocks go in
 * groups of three: bounds, then the three CRCs together, then decompression in order. */
static Py_ssize_t run_decode(const run_t *r, char *dst)
{
    uint64_t base = r->offs[r->first];
    for (Py_ssize_t g = r->first; g < r->stop; g += 3) {
        const unsigned char *p[3];
        size_t n[3];
        uint32_t crc[3], stored[3];
        int cnt = r->stop - g < 3 ? (int)(r->stop - g) : 3;
        for (int x = 0; x < cnt; x++) {
            Py_ssize_t k = g + x;
            uint64_t a = r->offs[k], b = r->offs[k + 1];
            if (b < a || a < base || b - base > (uint64_t)r->raw_len || b - a > MAX_STORED ||
                (r->verify && b - a < 4)) {
                cnt = x;            /* decode the good ones before it, then report it */
                break;
            }
            p[x] = r->raw + (a - base);
            n[x] = b - a;
            if (r->verify) {
                const unsigned char *t = p[x] + (n[x] -= 4);
                stored[x] = (uint32_t)t[0] | (uint32_t)t[1] << 8 | (uint32_t)t[2] << 16 |
                            (uint32_t)t[3] << 24;
            }
        }
        if (r->verify) {
#ifdef HAVE_SSE42_PATH
            if (cnt == 3 && crc3_ok)
                crc3_hw(r->seed, p, n, crc);
            else
#endif
                for (int x = 0; x < cnt; x++)
                    crc[x] = crc_update(r->seed, p[x], n[x]);
        }
        for (int x = 0; x < cnt; x++) {
            Py_ssize_t k = g + x;
            if (r->verify && crc[x] != stored[x])
                return k;
            uint64_t want = expected_len(r, k);
            int got = lz4_decompress_safe((const char *)p[x], dst, (int)n[x], (int)want);
            if (got < 0 || (uint64_t)got != want)
                return k;
            dst += want;
        }
        if (cnt < 3 && g + cnt < r->stop)
            return g + cnt;         /* the block whose bounds were bad */
    }
    return -1;
}

/* Parse the arguments: ctx = (offs, block_size, size, verify, seed), the ones a reader binds
 * once per file, then the run's raw bytes and [first, stop).  Fills r and the two buffers
 * (released by the caller). */
static int parse_run(PyObject *const *ctx, PyObject *raw_obj, PyObject *first, PyObject *stop,
                     run_t *r, Py_buffer *raw, Py_buffer *offs)
{
    unsigned long long bs, size, seed;
    int verify;
    if (PyObject_GetBuffer(raw_obj, raw, PyBUF_SIMPLE) < 0)
        return -1;
    if (PyObject_GetBuffer(ctx[0], offs, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) < 0) {
        PyBuffer_Release(raw);
        return -1;
    }
    r->first = PyLong_AsSsize_t(first);
    r->stop = PyLong_AsSsize_t(stop);
    bs = PyLong_AsUnsignedLongLong(ctx[1]);
    size = PyLong_AsUnsignedLongLong(ctx[2]);
    verify = PyObject_IsTrue(ctx[3]);
    seed = PyLong_AsUnsignedLongLong(ctx[4]);
    if (PyErr_Occurred() || verify < 0)
        goto fail;
    if (offs->itemsize != 8 || (offs->format && strcmp(offs->format, "Q") != 0 &&
                                strcmp(offs->format, "L") != 0 && strcmp(offs->format, "<Q") != 0)) {
        PyErr_SetString(PyExc_TypeError, "offs must be an array of unsigned 64-bit offsets");
        goto fail;
    }
    Py_ssize_t n_offs = offs->len / 8;
    if (r->first < 0 || r->stop <= r->first || r->stop >= n_offs) {
        PyErr_SetString(PyExc_ValueError, "block range outside the offsets table");
        goto fail;
    }
    if (bs == 0 || bs > (1u << 20) || seed > 0xFFFFFFFFull) {
        PyErr_SetString(PyExc_ValueError, "bad block size or seed");
        goto fail;
    }
    r->raw = raw->buf;
    r->raw_len = raw->len;
    r->offs = offs->buf;
    r->bs = bs;
    r->size = size;
    r->verify = verify;
    r->seed = (uint32_t)seed;
    return 0;
fail:
    PyBuffer_Release(raw);
    PyBuffer_Release(offs);
    return -1;
}

static int need_lz4(void)
{
    if (lz4_decompress_safe)
        return 0;
    PyErr_SetString(PyExc_RuntimeError, "liblz4.so.1 is not available");
    return -1;
}

PyDoc_STRVAR(decode_doc,
"decode(offs, block_size, size, verify, seed, raw, first, stop, parts) -> int\n\n"
"Check and decompress LZ4 blocks [first, stop).  offs is the array('Q') of block offsets,\n"
"size the file's decompressed size; raw holds the blocks' stored bytes, from file offset\n"
"offs[first].  Returns -1 with the decompressed bytes appended to the list parts, or the\n"
"index of the first bad block (nothing appended).  The first five arguments are the file's:\n"
"bind them once with functools.partial.");

static PyObject *zf_decode(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    run_t r;
    Py_buffer raw, offs;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "decode() takes 9 arguments");
        return NULL;
    }
    if (!PyList_Check(args[8])) {
        PyErr_SetString(PyExc_TypeError, "decode(): parts must be a list");
        return NULL;
    }
    if (need_lz4() < 0 || parse_run(args, args[5], args[6], args[7], &r, &raw, &offs) < 0)
        return NULL;
    PyObject *res = NULL, *out = NULL;
    uint64_t total = run_total(&r);
    if (total == 0 || total > PY_SSIZE_T_MAX) {
        PyErr_SetString(PyExc_ValueError, "block range past the end of the file");
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)total);
    if (!out)
        goto done;
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = run_decode(&r, PyBytes_AS_STRING(out));
    Py_END_ALLOW_THREADS
    if (bad >= 0 || PyList_Append(args[8], out) == 0)
        res = PyLong_FromSsize_t(bad);
    Py_DECREF(out);
done:
    PyBuffer_Release(&raw);
    PyBuffer_Release(&offs);
    return res;
}

PyDoc_STRVAR(decode_into_doc,
"decode_into(offs, block_size, size, verify, seed, out, raw, first, stop) -> int\n\n"
"As decode(), writing into the writable buffer out (at least the run's decompressed length).\n"
"Returns -1 when every block is good, else the index of the first bad block; the blocks\n"
"before it are written.");

static PyObject *zf_decode_into(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    run_t r;
    Py_buffer raw, offs, out;
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "decode_into() takes 9 arguments");
        return NULL;
    }
    if (need_lz4() < 0)
        return NULL;
    if (PyObject_GetBuffer(args[5], &out, PyBUF_WRITABLE) < 0)
        return NULL;
    if (parse_run(args, args[6], args[7], args[8], &r, &raw, &offs) < 0) {
        PyBuffer_Release(&out);
        return NULL;
    }
    PyObject *res = NULL;
    uint64_t total = run_total(&r);
    if (total == 0 || total > (uint64_t)out.len) {
        PyErr_SetString(PyExc_ValueError, "output buffer smaller than the run, or run past the end");
        goto done;
    }
    Py_ssize_t bad;
    Py_BEGIN_ALLOW_THREADS
    bad = run_decode(&r, out.buf);
    Py_END_ALLOW_THREADS
    res = PyLong_FromSsize_t(bad);
done:
    PyBuffer_Release(&out);
    PyBuffer_Release(&raw);
    PyBuffer_Release(&offs);
    return res;
}

PyDoc_STRVAR(crc_doc,
"crc32c_raw(data, seed=0) -> int\n\nRaw CRC-32C (no inversions) of data continued from seed.");

static PyObject *zf_crc32c_raw(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_buffer b;
    unsigned long long seed = 0;
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "crc32c_raw(data, seed=0)");
        return NULL;
    }
    if (nargs == 2) {
        seed = PyLong_AsUnsignedLongLong(args[1]);
        if (PyErr_Occurred())
            return NULL;
        if (seed > 0xFFFFFFFFull) {
            PyErr_SetString(PyExc_ValueError, "seed must fit in 32 bits");
            return NULL;
        }
    }
    if (PyObject_GetBuffer(args[0], &b, PyBUF_SIMPLE) < 0)
        return NULL;
    uint32_t c = crc_update((uint32_t)seed, b.buf, (size_t)b.len);
    PyBuffer_Release(&b);
    return PyLong_FromUnsignedLong(c);
}

static PyObject *zf_lz4_ok(PyObject *self, PyObject *unused)
{
    return PyBool_FromLong(lz4_decompress_safe != NULL);
}

static PyObject *zf_crc_impl(PyObject *self, PyObject *unused)
{
    return PyUnicode_FromString(crc_update == crc_soft ? "table" : "sse4.2");
}

static PyMethodDef methods[] = {
    {"decode", (PyCFunction)(void (*)(void))zf_decode, METH_FASTCALL, decode_doc},
    {"decode_into", (PyCFunction)(void (*)(void))zf_decode_into, METH_FASTCALL, decode_into_doc},
    {"crc32c_raw", (PyCFunction)(void (*)(void))zf_crc32c_raw, METH_FASTCALL, crc_doc},
    {"lz4_ok", zf_lz4_ok, METH_NOARGS, "True when liblz4.so.1 was loaded."},
    {"crc_impl", zf_crc_impl, METH_NOARGS, "Which CRC-32C implementation is in use."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_zfast",
    "Batched check-and-decompress of LZ4 ZFile blocks (see the C source's header).",
    -1, methods,
};

PyMODINIT_FUNC PyInit__zfast(void)
{
    crc_init();
#ifdef HAVE_SSE42_PATH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("sse4.2")) {
        crc_update = crc_hw;
        crc3_ok = 1;
    }
#endif
    void *h = dlopen("liblz4.so.1", RTLD_NOW | RTLD_LOCAL);
    if (h)
        lz4_decompress_safe = (lz4_dec_fn)dlsym(h, "LZ4_decompress_safe");
    return PyModule_Create(&module);
}
