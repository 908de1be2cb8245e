"""The TCMU generic-netlink channel (family "TCM-USER", multicast group "config").

The kernel announces ADDED/REMOVED/RECONFIG of devices; once the daemon has sent
SET_FEATURES(SUPP_KERN_CMD_REPLY=1) it waits for a ``*_DONE`` reply carrying CMD_STATUS and
DEVICE_ID.  Devices whose ``nl_reply_supported`` is -1 do not wait: replying to them is
harmless (the kernel answers ENODEV, which is drained and ignored here).
"""

import errno
import os
import socket
import struct
from dataclasses import dataclass, field

from ..abi import tcmu as T
from ..errors import OverlaybdError

NETLINK_GENERIC = 16
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_NO_ENOBUFS = 5
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 1
GENL_ID_CTRL = 0x10
CTRL_CMD_GETFAMILY = 3
CTRL_ATTR_FAMILY_ID = 1
CTRL_ATTR_FAMILY_NAME = 2
CTRL_ATTR_MCAST_GROUPS = 7
CTRL_ATTR_MCAST_GRP_NAME = 1
CTRL_ATTR_MCAST_GRP_ID = 2
RCVBUF = 4 << 20

NLMSGHDR = struct.Struct("=IHHII")
GENLHDR = struct.Struct("=BBH")
NLATTR = struct.Struct("=HH")


def _align4(n):
    return (n + 3) & ~3


def attr(atype, payload):
    return NLATTR.pack(NLATTR.size + len(payload), atype) + payload + bytes(
        _align4(len(payload)) - len(payload))


def parse_attrs(data):
    """{type: payload bytes} of a run of netlink attributes (nested flag bits dropped)."""
    out, p = {}, 0
    while p + NLATTR.size <= len(data):
        length, atype = NLATTR.unpack_from(data, p)
        if length < NLATTR.size or p + length > len(data):
            break
        out[atype & 0x3FFF] = data[p + NLATTR.size:p + length]
        p += _align4(length)
    return out


def _cstr(b):
    return b.split(b"\0", 1)[0].decode(errors="replace")


@dataclass
class NetlinkEvent:
    """A command from the kernel on the TCMU netlink family (add, remove, reconfigure a device)."""

    cmd: int
    attrs: dict = field(default_factory=dict)

    @property
    def device(self):
        return _cstr(self.attrs.get(T.ATTR_DEVICE, b""))

    @property
    def minor(self):
        v = self.attrs.get(T.ATTR_MINOR)
        return struct.unpack("=I", v[:4])[0] if v and len(v) >= 4 else -1

    @property
    def dev_index(self):
        v = self.attrs.get(T.ATTR_DEVICE_ID)
        return struct.unpack("=I", v[:4])[0] if v and len(v) >= 4 else None


class TcmuNetlink:
    """A generic-netlink socket joined to TCM-USER's config group."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC,
                                      NETLINK_GENERIC)
        except OSError as e:
            raise OverlaybdError(f"cannot open a generic netlink socket: {e.strerror}") from e
        self.sock.bind((0, 0))
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)   # SO_RCVBUFFORCE (root)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        self.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
        self.seq = 1
        self.family, groups = self._resolve(T.GENL_FAMILY)
        if T.GENL_MCGRP_CONFIG not in groups:
            raise OverlaybdError(f"netlink family {T.GENL_FAMILY} has no "
                                 f"'{T.GENL_MCGRP_CONFIG}' group")
        self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, groups[T.GENL_MCGRP_CONFIG])
        self.sock.setblocking(False)

    def fileno(self):
        return self.sock.fileno()

    def close(self):
        self.sock.close()

    def _send(self, family, cmd, attrs, version):
        payload = GENLHDR.pack(cmd, version, 0) + b"".join(attrs)
        msg = NLMSGHDR.pack(NLMSGHDR.size + len(payload), family, NLM_F_REQUEST, self.seq,
                            0) + payload
        self.seq += 1
        self.sock.sendto(msg, (0, 0))

    def _resolve(self, name):
        """(family id, {group name: id}) from the generic netlink controller."""
        self._send(GENL_ID_CTRL, CTRL_CMD_GETFAMILY,
                   [attr(CTRL_ATTR_FAMILY_NAME, name.encode() + b"\0")], 1)
        self.sock.settimeout(5)
        try:
            while True:
                data = self.sock.recv(65536)
                for mtype, body in self._messages(data):
                    if mtype == NLMSG_ERROR:
                        err = -struct.unpack_from("=i", body, 0)[0]
                        if err:
                            raise OverlaybdError(
                                f"generic netlink family {name} not found "
                                f"({os.strerror(err)}): is target_core_user loaded? "
                                f"Run `modprobe target_core_user`", errno=err)
                        continue
                    if mtype != GENL_ID_CTRL:
                        continue
                    a = parse_attrs(body[GENLHDR.size:])
                    fam = struct.unpack("=H", a[CTRL_ATTR_FAMILY_ID][:2])[0]
                    groups = {}
                    for g in parse_attrs(a.get(CTRL_ATTR_MCAST_GROUPS, b"")).values():
                        ga = parse_attrs(g)
                        groups[_cstr(ga[CTRL_ATTR_MCAST_GRP_NAME])] = struct.unpack(
                            "=I", ga[CTRL_ATTR_MCAST_GRP_ID][:4])[0]
                    return fam, groups
        except TimeoutError as e:
            raise OverlaybdError(f"no answer from the generic netlink controller about {name}",
                                 errno=errno.ETIMEDOUT) from e
        finally:
            self.sock.settimeout(None)

    @staticmethod
    def _messages(data):
        p = 0
        while p + NLMSGHDR.size <= len(data):
            length, mtype, _flags, _seq, _pid = NLMSGHDR.unpack_from(data, p)
            if length < NLMSGHDR.size or p + length > len(data):
                break
            yield mtype, data[p + NLMSGHDR.size:p + length]
            p += _align4(length)

    def set_features(self):
        """Tell the kernel this daemon replies to ADDED/REMOVED commands."""
        self._send(self.family, T.CMD_SET_FEATURES,
                   [attr(T.ATTR_SUPP_KERN_CMD_REPLY, b"\1")], T.GENL_VERSION)

    def reply(self, cmd, status, dev_index):
        """Answer a kernel command (ADDED/REMOVED/RECONFIG) with ``status`` (0 or -errno)."""
        if dev_index is None or cmd not in T.DONE_OF:
            return
        self._send(self.family, T.DONE_OF[cmd],
                   [attr(T.ATTR_CMD_STATUS, struct.pack("=i", status)),
                    attr(T.ATTR_DEVICE_ID, struct.pack("=I", dev_index))], T.GENL_VERSION)

    def receive(self):
        """Every pending kernel command (non-blocking); error acks are dropped."""
        events = []
        while True:
            try:
                data = self.sock.recv(1 << 20)
            except (BlockingIOError, InterruptedError):
                return events
            for mtype, body in self._messages(data):
                if mtype != self.family or len(body) < GENLHDR.size:
                    continue
                cmd = body[0]
                events.append(NetlinkEvent(cmd, parse_attrs(body[GENLHDR.size:])))
