"""SPSC rings and descriptors: wrap-around, full/empty, round trips, two processes."""

import select

import multiprocess
import pytest

from overlaybd.errors import FormatError
from overlaybd.shm import Event, Ring, SharedRegion
from overlaybd.shm.descriptor import (
    COMPLETION,
    MAX_IOVS,
    PART_SIZE,
    Part,
    pack_part,
    unpack_part,
)


def make_ring(slots, slot_size=16):
    buf = bytearray(Ring.footprint(slots, slot_size))
    return Ring(buf, 0, slots, slot_size, init=True)


def entry(i, size=16):
    return i.to_bytes(8, "little") * (size // 8)


def test_empty_and_full():
    r = make_ring(4)
    assert r.pop() is None and len(r) == 0 and r.free() == 4
    for i in range(4):
        assert r.push(entry(i))
    assert not r.push(entry(99)), "a full ring must refuse"
    assert len(r) == 4 and r.free() == 0
    assert [r.pop() for _ in range(4)] == [entry(i) for i in range(4)]
    assert r.pop() is None


def test_wrap_around_many_times():
    r = make_ring(4)
    nxt_in = nxt_out = 0
    for round_ in range(50):           # fill to various levels so head/tail wrap at every slot
        for _ in range(round_ % 4 + 1):
            assert r.push(entry(nxt_in))
            nxt_in += 1
        while (e := r.pop()) is not None:
            assert e == entry(nxt_out)
            nxt_out += 1
    assert nxt_in == nxt_out > 4 * 10


def test_reset_empties():
    r = make_ring(8)
    for i in range(5):
        r.push(entry(i))
    r.pop()
    r.reset()
    assert len(r) == 0 and r.pop() is None
    assert r.push(entry(1)) and r.pop() == entry(1)


def test_attach_validates_header():
    buf = bytearray(Ring.footprint(8, 16))
    Ring(buf, 0, 8, 16, init=True)
    assert Ring(buf, 0).slots == 8
    with pytest.raises(FormatError) as e:
        Ring(buf, 0, slot_size=32)
    assert e.value.field == "slot_size"
    buf[8:12] = b"\0\0\0\0"
    with pytest.raises(FormatError) as e:
        Ring(buf, 0)
    assert e.value.field == "magic"
    with pytest.raises(ValueError):
        Ring(bytearray(4096), 0, 6, 16, init=True)       # not a power of two
    with pytest.raises(ValueError):
        Ring(bytearray(256), 0, 64, 16, init=True)       # does not fit


@pytest.mark.parametrize("niov", range(MAX_IOVS + 1))
def test_part_descriptor_round_trip(niov):
    buf = bytearray(PART_SIZE * 2)
    iovs = tuple((2**40 + i * 4096, 4096 + i) for i in range(niov))
    p = Part(2**63 + 5, 0xFFFFFFFF, 4, 2**50, 123456, iovs)
    pack_part(buf, PART_SIZE, *p)
    assert unpack_part(buf, PART_SIZE) == p
    COMPLETION.pack_into(buf, 0, 2**64 - 1, 3, 0)
    assert COMPLETION.unpack_from(buf, 0)[:2] == (2**64 - 1, 3)


def test_part_descriptor_rejects_too_many_iovecs():
    buf = bytearray(PART_SIZE)
    with pytest.raises(ValueError):
        pack_part(buf, 0, *Part(1, 1, 1, 0, 0, ((0, 1),) * (MAX_IOVS + 1)))
    pack_part(buf, 0, *Part(1, 1, 1, 0, 0, ()))
    buf[25] = MAX_IOVS + 1
    with pytest.raises(FormatError) as e:
        unpack_part(buf, 0)
    assert e.value.field == "niov"


N = 100_000


def _producer(region, ev_data, ev_space):
    ring = Ring(region.buf, 0, slot_size=PART_SIZE)
    for i in range(N):
        while (off := ring.reserve()) < 0:
            ev_space.clear()
            if ring.reserve() < 0:
                select.select([ev_space.fileno()], [], [], 1.0)
        pack_part(ring.buf, off, *Part(i, i % 7, 1 + i % 4, i * 512, 512, ((i, 512),) * (i % 3)))
        ring.commit()
        ev_data.set()


def test_two_processes_exchange_100k_descriptors():
    slots = 256
    region = SharedRegion.create(Ring.footprint(slots, PART_SIZE), "test")
    ring = Ring(region.buf, 0, slots, PART_SIZE, init=True)
    ev_data, ev_space = Event(), Event()
    proc = multiprocess.get_context("fork").Process(target=_producer, args=(region, ev_data, ev_space))
    proc.start()
    seen = 0
    while seen < N:
        ev_data.clear()
        got = 0
        while (off := ring.peek()) >= 0:
            p = Part(*unpack_part(ring.buf, off))
            ring.release()
            assert p.tag == seen, f"expected descriptor {seen}, got {p.tag}"   # none lost or doubled
            assert p.offset == seen * 512 and p.dev == seen % 7 and len(p.iovs) == seen % 3
            seen += 1
            got += 1
        if got:
            ev_space.set()
        elif seen < N:
            select.select([ev_data.fileno()], [], [], 1.0)
            assert proc.is_alive() or len(ring), "producer died early"
    proc.join(30)
    assert proc.exitcode == 0
    assert ring.pop() is None
    del ring
    region.close()
    ev_data.close()
    ev_space.close()



def _churn(region, n):
    ring = Ring(region.buf, 0)
    for i in range(n):
        ring.push(entry(i))
        ring.pop()


def test_counters_are_never_seen_torn_by_another_process():
    """struct.pack_into zero-fills before writing: a counter written that way is sometimes
    read as 0 by another process.  The ring's counters must never be."""
    region = SharedRegion.create(Ring.footprint(4, 16), "test")
    ring = Ring(region.buf, 0, 4, 16, init=True)
    proc = multiprocess.get_context("fork").Process(target=_churn, args=(region, 100_000))
    proc.start()
    reads = last_head = last_tail = 0
    while proc.is_alive() or reads == 0:
        for _ in range(1000):
            head, tail = ring._load_head(), ring._load_tail()
            assert head >= last_head and tail >= last_tail, "a counter went backwards"
            last_head, last_tail = head, tail
            reads += 1
    proc.join()
    assert proc.exitcode == 0 and ring._load_head() == 100_000
    ring.close()
    region.close()
