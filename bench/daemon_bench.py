"""The daemon's own cost per command: the real Daemon (workers=0) over the fake kernel and
image_bench's 4-layer plain image, timing only ``Daemon.run_once`` (ring parsing, SCSI, the
read, completion, kick and the wait's system calls; not the fake kernel's side).

    python3 -m bench.daemon_bench [--seconds 2]

Random 4 KiB READ(10)s at QD1 and QD32 and 1 MiB ones at QD4, best of 3, in microseconds per
command.  Bytes are checked against the flat file first.  Run it inside UML
(scripts/uml/run-in-uml.sh) to see the guest's costs; docs/performance.md has both.
"""

import argparse
import json
import os
import random
import struct
import tempfile
import time

from loguru import logger

from overlaybd.abi import scsi as S
from overlaybd.image import ImageOpener, open_image
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine

from .image_bench import build

IMG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "out", "image")


def read10(lba, n):
    return bytes([S.READ_10, 0]) + struct.pack(">I", lba) + b"\0" + struct.pack(">H", n) + b"\0"


def measure(d, cfg, svc, qd, bs, seconds, flat=None):
    """Commands per second of ``run_once`` time; checks every read's bytes if ``flat``."""
    daemon = Daemon(Engine(workers=0), lambda c: open_image(c, svc, write_result=False),
                    lambda c: ImageOpener(c, svc), use_netlink=False,
                    sys_uio=os.path.join(d, "none"), configfs=d)
    daemon.start()
    fk = FakeKernel(data_size=4 << 20)
    info = UioInfo(0, f"tcm-user/1/d/overlaybd/{cfg}", "1", "d", f"overlaybd/{cfg}")
    assert daemon.add_device(info, fk.handle()) == 0
    rnd = random.Random(1)
    lbas = {}

    def submit():
        lba = rnd.randrange(0, ((1 << 30) - bs) // 4096) * 8
        lbas[fk.submit(read10(lba, bs // 512), data_in_len=bs)] = lba

    for _ in range(qd):
        submit()
    n, busy, pc = 0, 0.0, time.perf_counter
    end = pc() + seconds
    try:
        while n % 64 or pc() < end:
            t = pc()
            daemon.run_once(None)
            busy += pc() - t
            for c in fk.reap():
                lba = lbas.pop(c.cmd_id)
                if c.status or (flat is not None and c.data != os.pread(flat, bs, lba * 512)):
                    raise RuntimeError(f"bad read at LBA {lba}: status {c.status}")
                n += 1
                submit()
    finally:
        daemon.shutdown()
        fk.close()
    return n / busy


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args(argv)
    build(IMG, 1)
    logger.remove()
    with tempfile.TemporaryDirectory(prefix="daemon-bench-") as d:
        cfg, svc = os.path.join(d, "image.json"), os.path.join(d, "obd.json")
        with open(cfg, "w") as f:
            json.dump({"lowers": [{"file": os.path.join(IMG, f"l{n}.plain")} for n in range(4)]}, f)
        with open(svc, "w") as f:
            json.dump({"enableAudit": False, "logConfig": {"logLevel": 1}}, f)
        flat = os.open(os.path.join(IMG, "flat.raw"), os.O_RDONLY)
        try:
            measure(d, cfg, svc, 4, 4096, 0.3, flat)
            measure(d, cfg, svc, 2, 1 << 20, 0.3, flat)
            print("daemon_bench: run_once time per command, workers=0, 4-layer plain image")
            for qd, bs in ((1, 4096), (32, 4096), (4, 1 << 20)):
                rate = max(measure(d, cfg, svc, qd, bs, a.seconds) for _ in range(3))
                print(f"  {bs // 1024:>5} KiB QD{qd:<3} {rate:>9,.0f} cmds/s {1e6 / rate:>8.1f} us/cmd",
                      flush=True)
        finally:
            os.close(flat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
