"""The TCMU ring against the fake kernel (same memory layout as Linux 6.1)."""

import pytest

from overlaybd.abi import tcmu as T
from overlaybd.errors import FormatError
from overlaybd.tcmu.fakekernel import FakeKernel
from overlaybd.tcmu.ring import CommandRing

TUR = bytes(6)
READ10 = bytes([0x28, 0, 0, 0, 0, 8, 0, 0, 1, 0])


@pytest.fixture
def fk():
    k = FakeKernel(cmdr_size=4096 - T.MAILBOX_SIZE, data_size=1 << 20)
    yield k
    k.close()


def test_layout_offsets_match_linux_6_1():
    assert (T.MB_CMD_HEAD, T.MB_CMD_TAIL) == (12, 64)
    assert (T.REQ_IOV_CNT, T.REQ_CDB_OFF, T.REQ_IOV) == (8, 24, 48)
    assert (T.RSP_STATUS, T.RSP_READ_LEN, T.RSP_SENSE, T.ENTRY_SIZE) == (8, 12, 16, 112)


def test_parse_entry_cdb_and_iovecs(fk):
    ring = CommandRing(fk.mm)
    cid = fk.submit(READ10, data_in_len=3 * 4096, split=4096)
    [cmd] = ring.fetch()
    assert cmd.cmd_id == cid
    assert cmd.cdb == READ10
    assert len(cmd.iovs) == 3 and cmd.data_len == 3 * 4096
    assert all(off >= fk.data_off for off, _ in cmd.iovs)
    # the CDB sits in the ring right after the iovecs
    ent = T.MAILBOX_SIZE
    assert T.U64.unpack_from(fk.mm, ent + T.REQ_CDB_OFF)[0] == ent + T.cmd_base_size(3)


def test_data_out_gather_and_data_in_scatter(fk):
    ring = CommandRing(fk.mm)
    payload = bytes(range(256)) * 40
    fk.submit(bytes([0x2A, 0, 0, 0, 0, 0, 0, 0, 20, 0]), data_out=payload, split=1024)
    [cmd] = ring.fetch()
    assert ring.gather(cmd.iovs) == payload
    assert ring.gather(cmd.iovs, 100) == payload[:100]
    cid = fk.submit(READ10, data_in_len=5000, split=2048)
    [cmd2] = ring.fetch()
    assert ring.scatter(cmd2.iovs, b"xy" * 2500) == 5000
    ring.complete(cmd.cmd_id, 0)
    ring.complete(cmd2.cmd_id, 0)
    got = {c.cmd_id: c for c in fk.reap()}
    assert got[cid].data == b"xy" * 2500


def test_pad_wrap_and_many_rounds(fk):
    """Entries of varying size go round a 4 KiB ring many times: PADs at the wrap are skipped
    by both cursors and every completion lands on the right command."""
    ring = CommandRing(fk.mm)
    for rnd in range(200):
        ids = []
        for k in range(1 + rnd % 5):
            ids.append(fk.submit(READ10, data_in_len=512 * (1 + k), split=512))
        cmds = ring.fetch()
        assert [c.cmd_id for c in cmds] == ids
        for c in cmds:
            ring.scatter(c.iovs, bytes([c.cmd_id & 0xFF]) * c.data_len)
            ring.complete(c.cmd_id, 0)
        done = fk.reap()
        assert [d.cmd_id for d in done] == ids
        for d in done:
            assert d.data == bytes([d.cmd_id & 0xFF]) * len(d.data)
    assert fk.pads >= 10
    assert ring.inflight == 0


def test_out_of_order_completion_in_tail_order(fk):
    ring = CommandRing(fk.mm)
    ids = [fk.submit(TUR) for _ in range(5)]
    ring.fetch()
    order = [ids[3], ids[0], ids[4], ids[1], ids[2]]
    for i, cid in enumerate(order):
        ring.complete(cid, 0x02 if i % 2 else 0, bytes([0x70, 0, 5]))
    done = fk.reap()
    # slots are consumed in ring order, each now carrying the completed command's id
    assert [d.cmd_id for d in done] == order
    assert [d.status for d in done] == [0, 2, 0, 2, 0]
    assert done[1].sense[:3] == bytes([0x70, 0, 5])


def test_kick_coalescing(fk):
    ring = CommandRing(fk.mm)
    assert not ring.take_kick()
    for _ in range(4):
        fk.submit(TUR)
    for c in ring.fetch():
        ring.complete(c.cmd_id, 0)
    assert ring.take_kick() is True
    assert ring.take_kick() is False


def test_unknown_op_gets_uflag_and_is_skipped(fk):
    ring = CommandRing(fk.mm)
    a = fk.submit(TUR)
    pos = fk.submit_raw(64, 5)
    b = fk.submit(TUR)
    cmds = ring.fetch()
    assert [c.cmd_id for c in cmds] == [a, b]
    assert fk.uflags_at(pos) & T.UFLAG_UNKNOWN_OP
    ring.complete(b, 0)
    ring.complete(a, 0)
    assert [d.cmd_id for d in fk.reap()] == [b, a]


def test_bad_mailbox_version_and_corrupt_entries(fk):
    fk.mm[0] = 1
    with pytest.raises(FormatError, match="version"):
        CommandRing(fk.mm)
    fk.mm[0] = 2
    ring = CommandRing(fk.mm)
    fk.submit(TUR)
    T.U32.pack_into(fk.mm, T.MAILBOX_SIZE, T.len_op(0, T.OP_CMD))     # zero length: no hang
    with pytest.raises(FormatError, match="len_op"):
        ring.fetch()


def test_iovec_outside_mapping_is_rejected(fk):
    ring = CommandRing(fk.mm)
    fk.submit(READ10, data_in_len=512)
    T.IOVEC.pack_into(fk.mm, T.MAILBOX_SIZE + T.REQ_IOV, fk.map_size - 100, 512)
    with pytest.raises(FormatError, match="iov_base"):
        ring.fetch()


def test_completion_without_inflight_is_an_error(fk):
    ring = CommandRing(fk.mm)
    with pytest.raises(FormatError):
        ring.complete(1, 0)
