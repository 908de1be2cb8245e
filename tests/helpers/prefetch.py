"""An ext4 image in two remote layers, an in-process overlaybd-tcmu serving it over the fake
kernel with prefetch on, and "start" workloads: the reads a container start makes.

Used by the prefetch tests and by ``bench/prefetch_bench.py``."""

import hashlib
import json
import os
import random
import shutil
import subprocess
import time

from overlaybd import lsmt
from overlaybd.abi import scsi as S
from overlaybd.detect import open_blob
from overlaybd.ext4 import Ext4
from overlaybd.image import ImageOpener, open_image
from overlaybd.io import LocalFile
from overlaybd.prefetch.session import PrefetchService
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine
from tests.helpers.ext4 import mkfs, raw_to_layer
from tests.helpers.tcmu import read10

MiB = 1 << 20
REGION = MiB                # layers alternate 1 MiB regions of the disk: reads cross layers


def make_app_disk(d, size_mib=192, seed=7, pad_mib=80, tail_mib=48, modules=60):
    """An ext4 disk (4 KiB blocks) with an application between two big padding files, so
    that its data sits in the middle of the layer blobs, away from the head (~33 MiB) and
    tail (~16 MiB) of each blob that the cache's readahead fetches when a layer opens:
    ``mkfs.ext4 -d`` with ``/pad/a.bin`` (``pad_mib``), then ``debugfs -w`` writes ``/app``
    (``modules`` files of 4-64 KiB, a 3 MiB ``lib.so``), ``/etc/app.conf`` and ``/zz/z.bin``
    (``tail_mib``) in that order.  Returns (raw path, {path in the filesystem: sha256})."""
    rnd = random.Random(seed)
    src, stage = os.path.join(d, "src"), os.path.join(d, "stage")
    os.makedirs(os.path.join(src, "pad"))
    os.makedirs(stage)
    files, cmds = {}, ["mkdir app", "mkdir etc", "mkdir zz"]

    def put(rel, data, later=True):
        host = os.path.join(stage if later else src, rel.replace("/", "_") if later else rel)
        with open(host, "wb") as f:
            f.write(data)
        files["/" + rel] = hashlib.sha256(data).hexdigest()
        if later:
            cmds.append(f"write {host} {rel}")

    put("pad/a.bin", rnd.randbytes(pad_mib * MiB), later=False)
    for i in range(modules):
        put(f"app/m{i:03d}.py", rnd.randbytes(rnd.randrange(4096, 65536)))
    put("app/lib.so", rnd.randbytes(3 * MiB))
    put("etc/app.conf", rnd.randbytes(3000))
    put("zz/z.bin", rnd.randbytes(tail_mib * MiB))
    raw = mkfs(src, os.path.join(d, "disk.raw"), size_mib, "ext4", htree=False)
    script = os.path.join(d, "debugfs.cmds")
    with open(script, "w") as f:
        f.write("\n".join(cmds) + "\n")
    subprocess.run(["debugfs", "-w", "-f", script, str(raw)], check=True, capture_output=True)
    shutil.rmtree(src)
    shutil.rmtree(stage)
    return str(raw), files


APP = ["/etc/app.conf", "/app/lib.so"] + [f"/app/m{i:03d}.py" for i in range(0, 60, 2)]


def build_image(d, seed=7, **disk):
    """``make_app_disk`` committed as two ZFile+tar layers (even / odd 1 MiB regions of the
    disk).  Returns {"raw", "files", "layers": [path, path]}."""
    os.makedirs(d, exist_ok=True)
    raw, files = make_app_disk(d, seed=seed, **disk)
    layers = []
    for k in (0, 1):
        out = os.path.join(d, f"layer{k}.tar")
        raw_to_layer(raw, out, d, select=lambda off, k=k: (off // REGION) % 2 == k)
        layers.append(out)
    return {"raw": raw, "files": files, "layers": layers}


_BUILT, _PUSHED = {}, {}


def shared_image(tmp_path_factory, registry, repo="pf/img"):
    """``build_image`` made once per test session and pushed once per registry instance
    (each test module starts its own): {"raw", "files", "layers", "base", "lowers",
    "bytes"}."""
    top = str(tmp_path_factory.getbasetemp())
    if top not in _BUILT:
        img = build_image(str(tmp_path_factory.mktemp("pf-image")))
        with open(img["raw"], "rb") as f:
            img["bytes"] = f.read()
        _BUILT[top] = img
    key = (top, registry.url, repo)
    if key not in _PUSHED:
        img = dict(_BUILT[top])
        img["base"], img["lowers"] = push_layers(registry, img["layers"], repo)
        _PUSHED[key] = img
    return _PUSHED[key]


def push_layers(registry, layers, repo):
    """Push the layer blobs; returns (repoBlobUrl, lowers)."""
    lowers, url = [], None
    for p in layers:
        blob = open(p, "rb").read()
        url = registry.push(blob, repo)
        lowers.append({"digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)})
    return url.rsplit("/", 1)[0], lowers


def write_config(path, base, lowers, **extra):
    doc = {"repoBlobUrl": base, "lowers": lowers, "resultFile": str(path) + ".result"}
    doc.update(extra)
    with open(path, "w") as f:
        json.dump(doc, f)
    return str(path)


class _Reads:
    """A file that logs the reads made through it (the reader's metadata reads)."""

    def __init__(self, f):
        self.f, self.size, self.log = f, f.size, []

    def pread(self, n, off):
        self.log.append((off, n))
        return self.f.pread(n, off)


def workload(raw, paths, piece=128 << 10):
    """The device reads of a "start" that opens and reads ``paths`` in order: the ext4
    metadata blocks looked up, then each file's data in ``piece``-byte reads (the kernel's
    readahead size).  Returns [(offset, length)], every one 4 KiB aligned."""
    with LocalFile(raw) as f:
        rf = _Reads(f)
        fs = Ext4(rf)
        reads = []
        for p in paths:
            n0 = len(rf.log)
            ranges = fs.file_extents(fs.lookup(p))
            reads += rf.log[n0:]
            for off, n in ranges:
                for k in range(0, n, piece):
                    reads.append((off + k, min(piece, n - k)))
    out, seen = [], set()
    for off, n in reads:
        a, b = off // 4096 * 4096, -(-(off + n) // 4096) * 4096
        if (a, b) not in seen:          # the page cache would serve a repeat
            seen.add((a, b))
            out.append((a, b - a))
    return out


class Recorder:
    """Expected layer reads of a workload: the same device reads through a local merged
    view whose layers log what they serve."""

    def __init__(self, layers):
        self.log = []
        self.files = [LocalFile(p) for p in layers]
        outer = self

        class Logged:
            def __init__(self, f, i):
                self.f, self.i, self.size = f, i, f.size

            def pread(self, n, off):
                data = self.f.pread(n, off)
                outer.log.append((self.i, n, off))
                return data

        self.decoded = [Logged(open_blob(f), i) for i, f in enumerate(self.files)]
        self.view = lsmt.open_merged(self.decoded)

    def expect(self, reads):
        self.log.clear()
        for off, n in reads:
            self.view.pread(n, off)
        return list(self.log)

    def close(self):
        for f in self.files:
            f.close()


class Served:
    """overlaybd-tcmu in this process (real Daemon, Engine and PrefetchService) over the fake
    kernel.  ``add(config)`` -> device key; ``read(key, off, n)`` -> bytes."""

    def __init__(self, tmp, svc, workers=0):
        self.svc = svc
        self.prefetch = PrefetchService(svc)
        self.daemon = Daemon(Engine(workers=workers, chunk_size=64 << 10),
                             lambda c: open_image(c, svc),
                             lambda c: ImageOpener(c, svc, 256 << 20),  # the cacheSizeMB default
                             use_netlink=False, sys_uio=os.path.join(tmp, "no-uio"),
                             configfs=str(tmp), module_params=os.path.join(tmp, "no-params"),
                             prefetch=self.prefetch)
        self.daemon.start()
        self.kernels = {}

    def add(self, config, minor=0):
        fk = FakeKernel(data_size=4 * MiB)
        name = f"d{minor}"
        info = UioInfo(minor, f"tcm-user/1/{name}/overlaybd/{config}", "1", name,
                       f"overlaybd/{config}")
        st = self.daemon.add_device(info, fk.handle())
        if st:
            fk.close()
            raise RuntimeError(f"add_device {config}: {st}")
        self.kernels[minor] = fk
        return minor

    def read(self, key, off, n):
        fk = self.kernels[key]
        cid = fk.submit(read10(off // 512, n // 512), data_in_len=n)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            self.daemon.run_once(0.05)
            for c in fk.reap():
                assert c.cmd_id == cid and c.status == S.GOOD, c
                return c.data
        raise AssertionError(f"read ({off}, {n}) did not complete")

    def run(self, key, reads, raw=None):
        """Issue ``reads`` one after another (QD1); check the bytes against ``raw``."""
        for off, n in reads:
            data = self.read(key, off, n)
            if raw is not None:
                assert data == raw[off:off + n], f"bad bytes at {off}"

    def remove(self, key):
        self.daemon.remove_device(key)
        self.kernels.pop(key).close()

    def close(self):
        rc = self.daemon.shutdown()
        for fk in self.kernels.values():
            fk.close()
        self.kernels.clear()
        return rc


def downloads(audit_path):
    """Registry reads the cache made so far (audit ``download`` lines)."""
    try:
        with open(audit_path) as f:
            return sum(1 for line in f if "|download[" in line)
    except FileNotFoundError:
        return 0


def wait_for(cond, timeout=10.0, step=0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()
