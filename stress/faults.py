"""Faults for the full-stack stress harness (run INSIDE the UML guest): each fault kind is a
function ``inject(ctx) -> detail`` followed by ``recovered(ctx) -> bool``, which the driver polls.

Also the registry (the project's loopback docker-registry harness, restartable in place) and a
throttling TCP proxy on loopback that the devices reach the registry through."""
import os
import random
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HARNESS = os.path.join(REPO, "scripts", "registry", "harness.py")


class Registry:
    """docker-registry with token auth on 127.0.0.1:port, its files in ``d`` (kept across restarts)."""

    def __init__(self, d, port):
        self.d, self.port = d, port

    def start(self):
        subprocess.run(["/usr/bin/python3", HARNESS, "start", "--dir", self.d, "--auth", "token",
                        "--port", str(self.port)], check=True, stdout=subprocess.DEVNULL)

    def stop(self):
        subprocess.run(["/usr/bin/python3", HARNESS, "stop", "--dir", self.d], check=False,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up(self):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/v2/", timeout=2)
            return True
        except urllib.error.HTTPError:
            return True                      # 401: it answers
        except OSError:
            return False


def relay(src, dst, on_chunk=None, bufsize=16384):
    """Copy socket ``src`` to ``dst`` until either side closes (``on_chunk(data)`` runs before
    each chunk goes on: a delay, a count), then shut both down so the other direction ends too."""
    try:
        while data := src.recv(bufsize):
            if on_chunk is not None:
                on_chunk(data)
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class SlowProxy:
    """TCP proxy 127.0.0.1:port -> 127.0.0.1:target; while ``delay`` > 0 every chunk
    it forwards from the registry waits that long (a slow registry)."""

    def __init__(self, port, target):
        self.port, self.target, self.delay = port, target, 0.0
        self.sock = socket.create_server(("127.0.0.1", port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            c, _ = self.sock.accept()
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                c.close()
                continue
            u.settimeout(None)
            threading.Thread(target=self._pipe, args=(c, u, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(u, c, True), daemon=True).start()

    def _pipe(self, src, dst, slow):
        relay(src, dst, self._slow if slow else None)

    def _slow(self, _data):
        if self.delay:
            time.sleep(self.delay)


def _workers(ctx):
    import psutil
    try:
        return psutil.Process(ctx.daemon_pid).children()
    except psutil.NoSuchProcess:
        return []


def _workers_back(ctx):
    import psutil
    alive = [p for p in _workers(ctx) if p.status() not in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)]
    return len(alive) == ctx.workers and ctx.daemon_alive()


def kill9(ctx):
    v = random.choice(_workers(ctx))
    os.kill(v.pid, signal.SIGKILL)
    return f"SIGKILL worker pid {v.pid}"


def sigstop(ctx):
    v = random.choice(_workers(ctx))
    os.kill(v.pid, signal.SIGSTOP)
    time.sleep(ctx.hold)
    try:
        os.kill(v.pid, signal.SIGCONT)
    except ProcessLookupError:           # the supervisor's heartbeat check replaced it meanwhile
        return f"SIGSTOP worker pid {v.pid}; replaced by the supervisor within {ctx.hold}s"
    return f"SIGSTOP worker pid {v.pid} for {ctx.hold}s, then SIGCONT"


def registry_restart(ctx):
    ctx.registry.stop()
    time.sleep(ctx.hold)
    ctx.registry.start()
    return f"registry stopped for {ctx.hold}s and restarted"


def slow_registry(ctx):
    ctx.proxy.delay = 0.25
    time.sleep(ctx.hold * 2)
    ctx.proxy.delay = 0.0
    return f"registry responses delayed 250 ms per 16 KiB for {ctx.hold * 2}s"


def corrupt_cache(ctx):
    files = [os.path.join(r, f) for r, _, fs in os.walk(ctx.cache_dir) for f in fs]
    files = [f for f in files if os.path.getsize(f) > 8192]
    if not files:
        return "no cache file to corrupt"
    f = random.choice(files)
    with open(f, "r+b") as fh:
        off = random.randrange(0, os.path.getsize(f) - 4096) // 4096 * 4096
        fh.seek(off)
        fh.write(os.urandom(4096))
    return f"4 KiB of random bytes at {off} in {os.path.relpath(f, ctx.cache_dir)}"


def fill_cache_disk(ctx):
    st = os.statvfs(ctx.cache_dir)
    free = st.f_bavail * st.f_frsize
    path = ctx.fill_path                 # same filesystem, outside the cache's own directory
    with open(path, "wb") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, max(free - (4 << 20), 1 << 20))
        except OSError:
            pass
    time.sleep(ctx.hold * 2)
    os.unlink(path)
    return f"cache tmpfs filled ({free >> 20} MiB) for {ctx.hold * 2}s, then freed"


KINDS = {"kill9": (kill9, _workers_back), "sigstop": (sigstop, _workers_back),
         "registry_restart": (registry_restart, lambda c: c.registry.up()),
         "slow_registry": (slow_registry, lambda c: c.proxy.delay == 0.0),
         "corrupt_cache": (corrupt_cache, _workers_back),
         "fill_cache_disk": (fill_cache_disk, lambda c: not os.path.exists(c.fill_path))}
