"""Remote-layer read speed, as ratios against baselines measured in the same run.

  python3 bench/remote_bench.py [--size-mib 256] [--read-kib 1024] [--reps 3]

Starts a private docker-registry on loopback (scripts/registry/harness.py, access log off),
pushes a random blob, then measures:

* plain: one ranged GET of the whole blob with urllib3, streamed through a read-size buffer;
* cold:  a sequential read of the blob through ``open_remote_layer`` (file cache, empty);
* warm:  the same read again, all from the cache file;
* local: the same read from a local copy of the blob (``LocalFile``, page cache hot).

Targets: cold/plain >= 0.5, warm/local >= 0.8.  The four reads are interleaved in each of
``--reps`` rounds; each figure is the best of its rounds (the machine may be shared), and the
per-round ratios are printed too.
"""

import argparse
import importlib.util
import os
import pathlib
import shutil
import sys
import tempfile
import time
import types

import urllib3

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from overlaybd.cache import open_remote_layer
from overlaybd.io import LocalFile

MiB = 1 << 20


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / "registry" / filename)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def svc_for(tmp):
    ns = types.SimpleNamespace
    try:
        from overlaybd.image.settings import ServiceConfig
        svc = ServiceConfig.from_dict({"cacheConfig": {"cacheType": "file", "cacheDir": f"{tmp}/cache",
                                                       "cacheSizeGB": 8},
                                       "credentialConfig": {"mode": "file", "path": ""},
                                       "enableAudit": False, "auditPath": ""})
    except ImportError:
        svc = ns(cache=ns(type="file", dir=f"{tmp}/cache", size_gb=8, refill_size=262144),
                 credential=ns(mode="", path=""), enable_audit=False, audit_path="",
                 p2p=ns(enable=False, address=""), user_agent="bench")
    return svc


def sequential(f, size, bs):
    buf = bytearray(bs)
    mv = memoryview(buf)
    t0 = time.perf_counter()
    off = 0
    while off < size:
        n = f.preadinto(mv, off)
        if n <= 0:
            raise RuntimeError(f"short read at {off}")
        off += n
    return size / (time.perf_counter() - t0)


def plain_get(url, size, bs):
    """One ranged GET of the whole blob, streamed through a ``bs`` buffer."""
    pm = urllib3.PoolManager()
    mv = memoryview(bytearray(bs))
    t0 = time.perf_counter()
    r = pm.request("GET", url, headers={"Range": f"bytes=0-{size - 1}"}, preload_content=False)
    assert r.status == 206, r.status
    got = 0
    while got < size:
        k = r.readinto(mv[:min(bs, size - got)])
        if not k:
            raise RuntimeError("short body")
        got += k
    r.release_conn()
    return size / (time.perf_counter() - t0)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mib", type=int, default=256)
    ap.add_argument("--read-kib", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=5)
    a = ap.parse_args(argv)
    harness, pusher = _load("harness", "harness.py"), _load("push_blob", "push-blob.py")
    tmp = tempfile.mkdtemp(prefix="remote-bench-")
    size, bs = a.size_mib * MiB, a.read_kib * 1024
    try:
        env = harness.start(f"{tmp}/reg", auth="none", log_level="warn")
        local = f"{tmp}/blob"
        with open(local, "wb") as f:
            f.writelines(os.urandom(MiB) for _ in range(a.size_mib))
        url = pusher.push(env["url"], "bench/blob", local)["url"]
        lf = LocalFile(local)
        sequential(lf, size, bs)                      # page cache warm for everyone
        plain, cold, warm, loc = [], [], [], []
        for _ in range(a.reps):
            plain.append(plain_get(url, size, bs))
            shutil.rmtree(f"{tmp}/cache", ignore_errors=True)
            svc = svc_for(tmp)
            rf = open_remote_layer(url, {"digest": url.rsplit("/", 1)[1], "size": size}, svc)
            cold.append(sequential(rf, size, bs))
            warm.append(sequential(rf, size, bs))
            rf.close()
            loc.append(sequential(lf, size, bs))
        lf.close()
        p, c, w, lo = (max(x) / MiB for x in (plain, cold, warm, loc))
        print(f"blob {a.size_mib} MiB, reads of {a.read_kib} KiB, best of {a.reps}")
        print(f"plain ranged GET (urllib3): {p:8.1f} MiB/s")
        print(f"cold via file cache:        {c:8.1f} MiB/s   cold/plain = {c / p:.2f}  (target >= 0.5)")
        print(f"local file:                 {lo:8.1f} MiB/s")
        print(f"warm via file cache:        {w:8.1f} MiB/s   warm/local = {w / lo:.2f}  (target >= 0.8)")
        print("per round cold/plain: " + " ".join(f"{x / y:.2f}" for x, y in zip(cold, plain)))
        print("per round warm/local: " + " ".join(f"{x / y:.2f}" for x, y in zip(warm, loc)))
    finally:
        harness.stop(f"{tmp}/reg")
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
