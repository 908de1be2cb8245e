"""A deliberately naive TCMU handler of one raw file: the "what can plain Python do here"
reference that tcmu_bench runs in the same guest boot (the issue quotes one for scale).

    python3 -m bench.naive_tcmu ID_SUBSTRING RAW_FILE

It serves the first uio device whose name contains ID_SUBSTRING (create it with
``tcmu-dev.sh create ID RAW_FILE --nl-reply -1`` so that no netlink reply is awaited): one
process, a blocking ``read`` of the uio fd per wake-up, ``CommandRing.fetch``, an ``os.preadv`` of
the raw file straight into the data area per READ(10/16), the project's ScsiDisk for every
other CDB, one kick per batch.  No image stack, no engine, no epoll, no writes.  Not a
product: it exits on SIGTERM without draining and trusts the kernel's ring.
"""

import os
import signal
import struct
import sys
import time

from overlaybd.abi import scsi as S
from overlaybd.tcmu import scsi, uio
from overlaybd.tcmu.ring import CommandRing

_R10 = struct.Struct(">xxIxH").unpack_from
_R16 = struct.Struct(">xxQI").unpack_from


def find(sub, wait=30.0):
    end = time.monotonic() + wait
    while time.monotonic() < end:
        for info in uio.list_devices():
            if sub in info.name:
                return info
        time.sleep(0.05)
    raise SystemExit(f"naive_tcmu: no uio device named like {sub!r}")


def main(argv):
    sub, raw = argv
    info = find(sub)
    h = uio.UioHandle(info.dev_path, uio.map_size(info.minor))
    rfd = os.open(raw, os.O_RDONLY)
    size = os.fstat(rfd).st_size
    disk = scsi.ScsiDisk(size // 512, read_only=True, serial="", cfgstring=info.cfgstring)
    ring = CommandRing(h.mm, info.dev_path)
    view = memoryview(h.mm)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print(f"naive_tcmu serving {info.dev_path} from {raw}", flush=True)
    while True:
        for c in ring.fetch():
            op = c.cdb[0]
            if op in (S.READ_10, S.READ_16) and len(c.iovs) == 1:
                lba, n = (_R10 if op == S.READ_10 else _R16)(c.cdb, 0)
                base, blen = c.iovs[0]
                want = n * 512
                if want <= blen and os.preadv(rfd, [view[base:base + want]], lba * 512) == want:
                    ring.complete(c.cmd_id, S.GOOD)
                    continue
            r = disk.execute(c.cdb, c.data_len)
            if isinstance(r, scsi.Reply):
                if r.data:
                    ring.scatter(c.iovs, r.data)
                ring.complete(c.cmd_id, r.status, r.sense)
            else:
                ring.complete(c.cmd_id, S.CHECK_CONDITION, scsi.INVALID_OPCODE.sense)
        if ring.take_kick():
            os.write(h.fd, b"\0\0\0\0")
        os.read(h.fd, 4)


if __name__ == "__main__":
    main(sys.argv[1:])
