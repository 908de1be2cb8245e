"""One registry-backed run of the real daemon with the metrics exporter, shared by the exporter
and overlaybd-logstat tests.

The golden lz4 image (three tar-wrapped ZFile layers) is pushed to the registry fixture and
served by the real Daemon with ``workers=2`` over the fake kernel, through the file cache,
with background download on, the log and audit files of the service (the audit file rotated
every 16 KiB, nothing dropped), and the exporter on port 0.  The manifest's ranges are read
through the ring and checked against their sha256; half-way, worker 1 is killed (-9).  The
result: the exporter's text and JSON, each slab's share, and the log and audit paths.
"""

import hashlib
import json
import os
import signal
import time
import types
import urllib.request

from overlaybd import log, metrics
from overlaybd.abi import scsi as S
from overlaybd.image import ImageOpener, open_image
from overlaybd.image.settings import load_service_config
from overlaybd.metrics import exporter as mexp
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine
from tests.helpers.registry import push_image
from tests.helpers.tcmu import read10


def _read(daemon, fk, off, length):
    cid = fk.submit(read10(off // 512, length // 512), data_in_len=length, split=64 << 10)
    for _ in range(2000):
        daemon.run_once(0.05)
        for c in fk.reap():
            assert c.cmd_id == cid and c.status == S.GOOD, c
            return c.data
    raise AssertionError(f"read at {off} did not complete")


def _scrape(port, query=""):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics{query}", timeout=10) as r:
        return r.headers.get("Content-Type"), r.read().decode()


def run_served(d, registry, manifest):
    """The run described above in directory ``d``: returns its facts (a SimpleNamespace)."""
    base, lowers = push_image(registry, "img/metrics", manifest["stacks"]["lz4"])
    for i, lo in enumerate(lowers):
        lo["dir"] = str(d / f"layer{i}")
    cfg = d / "config.v1.json"
    cfg.write_text(json.dumps({
        "repoBlobUrl": base, "lowers": lowers, "resultFile": str(d / "result"),
        "download": {"enable": True, "delay": 0, "delayExtra": 1, "maxMBps": 0,
                     "blockSize": 4096}}))
    svc_path = d / "overlaybd.json"
    svc_path.write_text(json.dumps({
        "logConfig": {"logPath": str(d / "log" / "overlaybd.log"), "logLevel": 1},
        "cacheConfig": {"cacheType": "file", "cacheDir": str(d / "cache"), "cacheSizeGB": 1,
                        "refillSize": 4096},      # many small refills: many audit lines
        "credentialConfig": {"mode": "file", "path": str(d / "cred.json")},
        "enableAudit": True, "auditPath": str(d / "log" / "audit.log"),
        "exporterConfig": {"enable": True, "port": 0, "updateInterval": 3600 * 10**6}}))
    svc = load_service_config(str(svc_path))
    log.setup_from_config(svc.log)
    engine = Engine(workers=2, chunk_size=64 << 10, heartbeat_sec=2.0)
    daemon = Daemon(engine, lambda c: open_image(c, str(svc_path)),
                    lambda c: ImageOpener(c, str(svc_path), svc.worker.cache_size_mb << 20),
                    use_netlink=False,
                    sys_uio=str(d / "none"), configfs=str(d))
    exp = mexp.start(svc.exporter, daemon, engine.workers)
    fk = FakeKernel(data_size=8 << 20)
    out = types.SimpleNamespace(dir=d, log=d / "log" / "overlaybd.log", audit=d / "log" / "audit.log",
                                config=str(cfg), lowers=lowers, base=base)
    try:
        daemon.start()
        exp.windows.tick()                      # the window starts with the reads
        info = UioInfo(0, f"tcm-user/1/obd0/overlaybd/{cfg};9", "1", "obd0", f"overlaybd/{cfg};9")
        assert daemon.add_device(info, fk.handle()) == 0
        ranges = manifest["merged"]["ranges"]
        for k, r in enumerate(ranges):
            if k == len(ranges) // 2:           # an idle worker killed: its successor counts on
                os.kill(engine.worker_pids()[1], signal.SIGKILL)
                deadline = time.monotonic() + 30
                while engine.restarts < 1 or None in engine.worker_pids():
                    assert time.monotonic() < deadline, "worker 1 was not replaced"
                    daemon.run_once(0.05)
            data = _read(daemon, fk, r["offset"], r["length"])
            assert hashlib.sha256(data).hexdigest() == r["sha256"], r["note"]
        deadline = time.monotonic() + 60        # background download done, layers switched
        while not all(os.path.exists(f"{lo['dir']}/overlaybd.commit") for lo in lowers):
            assert time.monotonic() < deadline, "background download did not finish"
            daemon.run_once(0.1)
        for _ in range(50):                     # worker 0 counts completion after the switch
            snap = exp.snapshot()
            if all(row["background_download"]["completed"] for row in snap["layers"]):
                break
            daemon.run_once(0.1)
        exp.windows.tick()
        out.content_type, out.text = _scrape(exp.port)
        out.json = json.loads(_scrape(exp.port, "?format=json")[1])
        out.slabs = metrics.table().array().sum(axis=(1, 2)).tolist()
        out.worker_pids = engine.worker_pids()
        out.port = exp.port
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{exp.port}/other", timeout=10)
            out.other_status = 200
        except urllib.error.HTTPError as e:
            out.other_status = e.code
    finally:
        assert daemon.shutdown() == 0
        fk.close()
        exp.stop()
        metrics.disable()
    return out


def audit_records(path):
    """(event, fields) of every audit line in the rotated set at ``path`` (oldest first)."""
    files = sorted((p for p in path.parent.iterdir() if p.name.startswith(path.name)),
                   key=lambda p: -int(p.name.rsplit(".", 1)[1]) if p.name != path.name else 1)
    out = []
    for p in files:
        for line in p.read_text().splitlines():
            ts, level, th, rest = line.split("|", 3)
            assert level == "AUDIT", line
            event, _, tail = rest.partition("[")
            fields = dict(f.split("=", 1) for f in ("[" + tail).strip("[]").split("]["))
            out.append((event, fields))
    return out

