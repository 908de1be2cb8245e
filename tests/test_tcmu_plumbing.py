"""uio discovery, netlink message codec, alog logging and rotation, the tool's front door."""

import re
import struct

import pytest
from loguru import logger

from overlaybd import log as olog
from overlaybd import logfile
from overlaybd.abi import tcmu as T
from overlaybd.tcmu import netlink, uio


def test_parse_uio_name_and_cfgstring():
    i = uio.parse_uio_name("tcm-user/999999999/dev_12/overlaybd//var/lib/x/config.v1.json;12", 3)
    assert (i.minor, i.hba, i.dev_name, i.subtype) == (3, "999999999", "dev_12", "overlaybd")
    assert i.config_path == "/var/lib/x/config.v1.json" and i.dev_id == "12"
    assert i.dev_path == "/dev/uio3"
    j = uio.parse_uio_name("tcm-user/0/d/overlaybd/rel/c.json")
    assert (j.config_path, j.dev_id) == ("rel/c.json", "")
    assert uio.parse_uio_name("uio_pci_generic") is None
    assert uio.parse_uio_name("tcm-user/0/d") is None


def test_list_devices_map_size_and_serial(tmp_path):
    sysfs = tmp_path / "uio"
    for n, name in [(0, "tcm-user/1/a/overlaybd//c.json;1"), (2, "other"),
                    (5, "tcm-user/1/b/qcow//x")]:
        d = sysfs / f"uio{n}" / "maps" / "map0"
        d.mkdir(parents=True)
        (sysfs / f"uio{n}" / "name").write_text(name + "\n")
        (d / "size").write_text("0x40800000\n")
    devs = uio.list_devices(str(sysfs))
    assert [(d.minor, d.subtype) for d in devs] == [(0, "overlaybd"), (5, "qcow")]
    assert uio.map_size(0, str(sysfs)) == 0x40800000
    cfs = tmp_path / "cfs"
    (cfs / "user_1" / "a" / "wwn").mkdir(parents=True)
    (cfs / "user_1" / "a" / "wwn" / "vpd_unit_serial").write_text(
        "T10 VPD Unit Serial Number: 5f0e-77\n")
    assert uio.unit_serial(devs[0], str(cfs)) == "5f0e-77"
    assert uio.unit_serial(devs[1], str(cfs)) is None
    from overlaybd.errors import OverlaybdError
    with pytest.raises(OverlaybdError, match="size"):
        uio.map_size(9, str(sysfs))


def test_netlink_attrs_round_trip_and_event_fields():
    name = b"tcm-user/1/dev_3/overlaybd//c.json;3\0"
    data = (netlink.attr(T.ATTR_DEVICE, name) + netlink.attr(T.ATTR_MINOR, struct.pack("=I", 4))
            + netlink.attr(T.ATTR_DEVICE_ID, struct.pack("=I", 17)))
    assert len(netlink.attr(T.ATTR_DEVICE, b"abc")) == 8          # padded to 4
    ev = netlink.NetlinkEvent(T.CMD_ADDED_DEVICE, netlink.parse_attrs(data))
    assert ev.device == name[:-1].decode() and ev.minor == 4 and ev.dev_index == 17
    # truncated input never loops or raises
    assert netlink.parse_attrs(data[:5]) == {}
    assert netlink.NetlinkEvent(T.CMD_REMOVED_DEVICE).minor == -1


def test_netlink_reply_message_layout():
    sent = []

    class Sock:
        def sendto(self, msg, addr):
            sent.append(msg)

    nl = netlink.TcmuNetlink.__new__(netlink.TcmuNetlink)
    nl.sock, nl.seq, nl.family = Sock(), 1, 0x1A
    nl.reply(T.CMD_ADDED_DEVICE, -2, 9)
    nl.reply(T.CMD_SET_FEATURES, 0, 9)         # not a command that takes a reply
    [msg] = sent
    length, mtype, flags, _, pid = netlink.NLMSGHDR.unpack_from(msg)
    assert (length, mtype, flags, pid) == (len(msg), 0x1A, 1, 0)
    cmd, version, _ = netlink.GENLHDR.unpack_from(msg, 16)
    assert (cmd, version) == (T.CMD_ADDED_DEVICE_DONE, 2)
    a = netlink.parse_attrs(msg[20:])
    assert struct.unpack("=i", a[T.ATTR_CMD_STATUS])[0] == -2
    assert struct.unpack("=I", a[T.ATTR_DEVICE_ID])[0] == 9


@pytest.fixture(autouse=True)
def _restore_loguru():
    """These tests replace loguru's handlers; give the default stderr one back afterwards."""
    yield
    import sys
    logger.remove()
    logger.add(sys.stderr)


ALOG = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{6}\|(INFO |WARN |ERROR|DEBUG|FATAL)\|"
                  r"th=[0-9A-F]{16}\|.+test_tcmu_plumbing\.py:\d+\|(\w+):(.*)$")


def test_log_line_format_and_levels(tmp_path):
    path = tmp_path / "l" / "overlaybd.log"
    olog.setup_logging(str(path), level=2)
    try:
        logger.info("hidden")
        logger.warning("careful {}", 1)
        logger.error("bad")
        logger.critical("dead")
    finally:
        logger.remove()
    lines = path.read_text().splitlines()
    assert len(lines) == 3
    m = [ALOG.match(x) for x in lines]
    assert all(m)
    assert [x.group(1) for x in m] == ["WARN ", "ERROR", "FATAL"]
    assert m[0].group(2) == "test_log_line_format_and_levels" and m[0].group(3) == "careful 1"
    assert oct(path.stat().st_mode & 0o777) == "0o600"          # logs are private
    assert oct(path.parent.stat().st_mode & 0o777) == "0o700"   # and so is the folder made


def test_log_rotation_naming(tmp_path):
    """f -> f.1 -> f.2, the oldest dropped: the files, oldest first, are the stream's tail."""
    path = tmp_path / "r.log"
    f = logfile.LogFile(str(path), max_bytes=1 << 20, max_files=3)
    lines = [f"{i:09d}".ljust(1023, "x") + "\n" for i in range(5000)]     # ~5 MiB
    for line in lines:
        f.write(line)
    f.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.log", "r.log.1", "r.log.2"]
    kept = "".join((tmp_path / n).read_text() for n in ("r.log.2", "r.log.1", "r.log"))
    assert "".join(lines).endswith(kept)
    for n in ("r.log.1", "r.log.2"):                           # rotated at the line that
        assert 1 << 20 < (tmp_path / n).stat().st_size <= (1 << 20) + 1024   # crossed the limit
    assert (tmp_path / "r.log").stat().st_size <= 1 << 20


def test_log_reopen_after_external_move(tmp_path):
    path = tmp_path / "o.log"
    olog.setup_logging(str(path))
    try:
        logger.info("one")
        path.rename(tmp_path / "o.log.old")
        olog.reopen()
        logger.info("two")
    finally:
        logger.remove()
    assert "two" in path.read_text() and "two" not in (tmp_path / "o.log.old").read_text()


def test_tool_help_and_missing_module(tmp_path, monkeypatch, capsys):
    from overlaybd.tools import tcmu as tool
    with pytest.raises(SystemExit) as e:
        tool.main(["--help"])
    assert e.value.code == 0
    assert "overlaybd.json" in capsys.readouterr().out
    cfg = tmp_path / "obd.json"
    cfg.write_text('{"logConfig": {"logPath": "%s"}}' % (tmp_path / "t.log"))
    monkeypatch.setattr(tool, "MODULE_DIR", str(tmp_path / "no-such-module"))
    try:
        assert tool.main([str(cfg)]) == 1
    finally:
        logger.remove()
    err = capsys.readouterr().err
    assert "modprobe target_core_user" in err


def test_tool_bad_service_config_names_file_and_field(tmp_path, capsys):
    from overlaybd.tools import tcmu as tool
    cfg = tmp_path / "obd.json"
    cfg.write_text('{"logConfig": {"logPath": 5}}')
    assert tool.main([str(cfg)]) == 1
    err = capsys.readouterr().err
    assert str(cfg) in err and "logPath" in err
