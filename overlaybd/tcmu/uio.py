"""Finding and opening TCMU devices: /sys/class/uio, /dev/uioN and their configfs directory.

A TCMU device shows up as a uio device named ``tcm-user/<hba>/<dev>/<cfgstring>``; the
cfgstring is ``<subtype>/<handler config>`` and ours is ``overlaybd/<config path>[;<dev_id>]``.
"""

import errno
import mmap
import os
from dataclasses import dataclass

from ..abi.tcmu import UIO_NAME_PREFIX
from ..errors import OverlaybdError

SUBTYPE = "overlaybd"
SYS_UIO = "/sys/class/uio"
CONFIGFS_CORE = "/sys/kernel/config/target/core"


@dataclass
class UioInfo:
    """What the uio name says about a TCMU device."""

    minor: int
    name: str            # the whole uio name
    hba: str
    dev_name: str
    cfgstring: str       # "<subtype>/<handler config>"

    @property
    def subtype(self):
        return self.cfgstring.partition("/")[0]

    @property
    def handler_cfg(self):
        """Everything after the subtype's slash: ``<config path>[;<dev_id>]``."""
        return self.cfgstring.partition("/")[2]

    @property
    def config_path(self):
        return self.handler_cfg.partition(";")[0]

    @property
    def dev_id(self):
        return self.handler_cfg.partition(";")[2]

    @property
    def dev_path(self):
        return f"/dev/uio{self.minor}"


def parse_uio_name(name, minor=-1):
    """``tcm-user/<hba>/<dev>/<cfgstring>`` -> UioInfo, or None for a non-TCMU name."""
    parts = name.split("/", 3)
    if len(parts) < 4 or parts[0] != UIO_NAME_PREFIX:
        return None
    return UioInfo(minor, name, parts[1], parts[2], parts[3])


def _read(path):
    with open(path) as f:
        return f.read().strip()


def list_devices(sys_uio=SYS_UIO):
    """Every TCMU device present now (any subtype), ordered by minor."""
    out = []
    try:
        entries = os.listdir(sys_uio)
    except FileNotFoundError:
        return out
    for e in entries:
        if not e.startswith("uio") or not e[3:].isdigit():
            continue
        try:
            name = _read(os.path.join(sys_uio, e, "name"))
        except OSError:
            continue
        info = parse_uio_name(name, int(e[3:]))
        if info is not None:
            out.append(info)
    return sorted(out, key=lambda i: i.minor)


def map_size(minor, sys_uio=SYS_UIO):
    """Size of the device's mapping, from maps/map0/size (hex)."""
    path = os.path.join(sys_uio, f"uio{minor}", "maps", "map0", "size")
    try:
        return int(_read(path), 0)
    except (OSError, ValueError) as e:
        raise OverlaybdError(f"cannot read the mapping size: {e}", path=path,
                             field="size") from e


def configfs_dir(info, root=CONFIGFS_CORE):
    return os.path.join(root, f"user_{info.hba}", info.dev_name)


def unit_serial(info, root=CONFIGFS_CORE):
    """The device's VPD unit serial from configfs wwn/vpd_unit_serial
    ("T10 VPD Unit Serial Number: <serial>"; often empty), or None if unreadable."""
    try:
        text = _read(os.path.join(configfs_dir(info, root), "wwn", "vpd_unit_serial"))
    except OSError:
        return None
    if ":" not in text:
        return None
    return text.partition(":")[2].strip()


def set_action(info, action, value, root=CONFIGFS_CORE):
    """Write ``value`` to the device's configfs action/<action> (block_dev, reset_ring).
    Returns False if the file is not there or the write fails."""
    path = os.path.join(configfs_dir(info, root), "action", action)
    try:
        with open(path, "w") as f:
            f.write(str(value))
        return True
    except OSError:
        return False


class UioHandle:
    """An open /dev/uioN and its shared mapping (one open per device: the kernel allows no
    second one, so this fd is what worker processes get too)."""

    def __init__(self, path, size):
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            hint = " (already open by another process?)" if e.errno == errno.EBUSY else ""
            raise OverlaybdError(f"cannot open: {e.strerror}{hint}", path=path,
                                 errno=e.errno) from e
        try:
            self.mm = mmap.mmap(self.fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except OSError as e:
            os.close(self.fd)
            raise OverlaybdError(f"cannot map {size} bytes: {e.strerror}", path=path,
                                 errno=e.errno) from e
        self.map_fd = self.fd      # what the engine maps
        self.event_fd = self.fd    # read 4 bytes: event; write 4 bytes: kick
        self.edge = True           # each notify wakes an edge-triggered epoll: no read needed
        self.size = size

    def close(self):
        if self.fd >= 0:
            self.mm.close()
            os.close(self.fd)
            self.fd = -1
