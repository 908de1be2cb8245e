"""An in-process overlaybd-tcmu: the real Daemon and Engine over the fake kernel, serving a
raw disk file (no image stack involved)."""

import struct

from overlaybd.abi import scsi as S
from overlaybd.tcmu.daemon import Daemon
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.uio import UioInfo
from overlaybd.workers import Engine
from overlaybd.workers.rawfile import RawFile, RawFileOpener

SERIAL = "d3adbeef-0123-4567-89ab-cdef01234567"
DISKS = {}     # config path -> (disk file, read-only): what the fake "image" opener serves


class DaemonHarness:
    def __init__(self, tmp_path, size=8 << 20, read_only=False, content=None, name="dev0",
                 dev_id="7", minor=0, daemon=None, fk_kwargs=None, workers=0):
        self.path = tmp_path / f"{name}.img"
        with open(self.path, "wb") as f:
            if content is not None:
                f.write(content)
            f.truncate(size)
        cfs = tmp_path / "configfs"
        wwn = cfs / "user_1" / name / "wwn"
        wwn.mkdir(parents=True, exist_ok=True)
        (wwn / "vpd_unit_serial").write_text(f"T10 VPD Unit Serial Number: {SERIAL}\n")
        self.read_only = read_only
        config = f"{tmp_path}/{name}.json"
        DISKS[config] = (self.path, read_only)
        if daemon is None:
            daemon = Daemon(Engine(workers=workers),
                            validate=lambda cfg: RawFile(DISKS[cfg][0], not DISKS[cfg][1]),
                            opener=lambda cfg: RawFileOpener(DISKS[cfg][0], not DISKS[cfg][1]),
                            use_netlink=False, sys_uio=str(tmp_path / "no-uio"),
                            configfs=str(cfs), module_params=str(tmp_path / "no-params"))
            daemon.start()
        self.daemon = daemon
        self.fk = FakeKernel(**(fk_kwargs or {}))
        self.cfgstring = f"overlaybd/{config}" + (f";{dev_id}" if dev_id else "")
        self.info = UioInfo(minor, f"tcm-user/1/{name}/{self.cfgstring}", "1", name, self.cfgstring)
        self.status = daemon.add_device(self.info, self.fk.handle())

    def run(self, cdb, data_out=b"", data_in_len=0, split=None):
        """Submit one command, run the daemon until it completes; returns the Completion."""
        cid = self.fk.submit(bytes(cdb), data_out, data_in_len, split=split)
        for _ in range(100):
            self.daemon.run_once(0.05)
            for c in self.fk.reap():
                assert c.cmd_id == cid
                return c
        raise AssertionError("command did not complete")

    def close(self):
        self.daemon.shutdown()
        self.fk.close()


def read10(lba, n, flags=0):
    """A READ(10) CDB for ``n`` blocks at ``lba`` (``flags``: byte 1, e.g. DPO/FUA)."""
    return bytes([S.READ_10, flags]) + struct.pack(">I", lba) + b"\0" + struct.pack(">H", n) + b"\0"


def sense_of(c):
    """(key, asc<<8|ascq) of a completion's fixed-format sense."""
    return c.sense[2] & 0xF, (c.sense[12] << 8) | c.sense[13]


def file_bytes(path, off, n):
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)

