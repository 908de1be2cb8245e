"""The engine with 0, 1 and 2 workers on a raw-file backend (docs/engine.md)."""

import itertools
import os
import signal
import time

import psutil
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from loguru import logger

from overlaybd.workers import (
    OP_DISCARD,
    OP_FLUSH,
    OP_READ,
    OP_WRITE,
    ST_GOOD,
    ST_READ_ERR,
    ST_WRITE_PROTECT,
    CommandError,
    Engine,
)
from overlaybd.workers.slot import place
from overlaybd.workers.split import route, split_iovs
from tests.helpers.workers import (
    DEV,
    AppendLog,
    AppendLogOpener,
    EngineHarness,
    FailingOpener,
    MiB,
    shm_names_of,
)

WORKERS = [0, 1, 2]


@pytest.mark.parametrize("workers", WORKERS)
def test_reads_land_in_the_data_area(tmp_path, workers):
    h = EngineHarness(tmp_path, workers)
    try:
        cases = []    # (cmd_id, device offset, length, mapping offset, iovec size)
        moff = 4096
        for i, (off, n, iov) in enumerate([(0, 4096, None), (MiB - 512, 1024, None),
                                           (3 * MiB + 512, 3 * MiB, 4096), (512, 65536, 512 * 3),
                                           (7 * MiB, MiB, 8192)]):
            cases.append((i, off, n, moff, iov))
            h.submit(i, OP_READ, off, n, moff, iov)
            moff += n + 4096
        h.wait_for(range(len(cases)))
        for i, off, n, moff, _ in cases:
            assert h.completions[i] == [ST_GOOD]
            assert h.data(moff, n) == h.src[off:off + n], f"command {i}"
    finally:
        h.close()


@pytest.mark.parametrize("workers", WORKERS)
def test_command_spanning_chunks_completes_once_after_all_parts(tmp_path, workers):
    h = EngineHarness(tmp_path, workers, chunk_size=64 * 1024)
    try:
        # 2 MiB over 32 chunks, in 4 KiB iovecs: many parts, some several per chunk.
        h.submit(1, OP_READ, 64 * 1024 - 4096, 2 * MiB, 0, 4096)
        h.wait_for([1])
        for _ in range(5):
            h.engine.wait(0.01)
        assert h.completions == {1: [ST_GOOD]}
        assert h.data(0, 2 * MiB) == h.src[64 * 1024 - 4096:64 * 1024 - 4096 + 2 * MiB]
        assert h.engine.in_flight == 0
    finally:
        h.close()


@pytest.mark.parametrize("workers", WORKERS)
def test_write_then_read_across_chunks(tmp_path, workers):
    h = EngineHarness(tmp_path, workers, writable=True)
    try:
        payload = os.urandom(3 * MiB)
        h.mm[0:len(payload)] = payload
        off = MiB // 2
        h.submit(1, OP_WRITE, off, len(payload), 0, 64 * 1024)
        h.wait_for([1])
        h.submit(2, OP_READ, off - 4096, len(payload) + 8192, 8 * MiB, 4096)
        h.wait_for([2])
        assert h.completions[1] == [ST_GOOD] and h.completions[2] == [ST_GOOD]
        expect = h.src[off - 4096:off] + payload + h.src[off + len(payload):off + len(payload) + 4096]
        assert h.data(8 * MiB, len(payload) + 8192) == expect
        h.submit(3, OP_DISCARD, off, 2 * MiB)
        h.submit(4, OP_FLUSH, 0, 0)
        h.wait_for([3, 4])
        h.submit(5, OP_READ, off, 2 * MiB, 0)
        h.wait_for([5])
        assert h.completions[3] == h.completions[4] == h.completions[5] == [ST_GOOD]
        assert h.data(0, 2 * MiB) == bytes(2 * MiB)
    finally:
        assert h.close() == [0] * workers
    content = h.path.read_bytes()
    assert content[off + 2 * MiB:off + len(payload)] == payload[2 * MiB:]


class CountingFsync:
    """Opener whose backends record every fsync in a file, one line per process."""

    def __init__(self, path, log):
        self.path, self.log = str(path), str(log)

    def __call__(self):
        from overlaybd.workers.rawfile import RawFile
        f = RawFile(self.path, writable=True)
        log = self.log

        def fsync():
            with open(log, "a") as out:
                out.write(f"{os.getpid()}\n")
        f.fsync = fsync
        return f


@pytest.mark.parametrize("workers", [1, 2])
def test_flush_reaches_every_worker(tmp_path, workers):
    log = tmp_path / "fsync.log"
    img = tmp_path / "img"
    img.write_bytes(bytes(MiB))
    h = EngineHarness(tmp_path, workers, opener=CountingFsync(img, log))
    try:
        h.submit(1, OP_FLUSH, 0, 0)
        h.wait_for([1])
        assert h.completions[1] == [ST_GOOD]
        assert sorted(map(int, log.read_text().split())) == sorted(h.engine.worker_pids())
    finally:
        h.close()


@pytest.mark.parametrize("workers", WORKERS)
def test_read_only_backend_refuses_writes(tmp_path, workers):
    h = EngineHarness(tmp_path, workers)
    try:
        h.submit(1, OP_WRITE, 0, 4096, 0)
        h.submit(2, OP_DISCARD, 0, 4096)
        h.submit(3, OP_FLUSH, 0, 0)
        h.submit(4, OP_READ, len(h.src) - 512, 1024, 0)     # runs past the end: short read
        h.wait_for([1, 2, 3, 4])
        assert h.completions == {1: [ST_WRITE_PROTECT], 2: [ST_WRITE_PROTECT], 3: [ST_GOOD],
                                 4: [ST_READ_ERR]}
    finally:
        h.close()


def test_bad_commands_raise_naming_the_field(tmp_path):
    h = EngineHarness(tmp_path, 1)
    try:
        cases = [((DEV + 1, 1, OP_READ, 0, 512, [(0, 512)]), "dev"),
                 ((DEV, 1, 99, 0, 512, [(0, 512)]), "op"),
                 ((DEV, 1, OP_READ, 100, 512, [(0, 512)]), "offset"),
                 ((DEV, 1, OP_READ, 0, 500, [(0, 500)]), "length"),
                 ((DEV, 1, OP_READ, 0, 1024, [(0, 512)]), "iovs"),
                 ((DEV, 1, OP_READ, 0, 512, [(h.map_size - 256, 512)]), "iovs")]
        for args, field in cases:
            with pytest.raises(CommandError) as e:
                h.engine.submit(*args)
            assert e.value.field == field
        h.submit(5, OP_READ, 0, 512, 0)
        with pytest.raises(CommandError) as e:
            h.submit(5, OP_READ, 0, 512, 0)
        assert e.value.field == "cmd_id"
        h.wait_for([5])
        h.submit(6, OP_READ, 0, 0, 0)                   # zero-length: completes, no parts
        h.wait_for([6])
        assert h.completions == {5: [ST_GOOD], 6: [ST_GOOD]}
    finally:
        h.close()


def test_worker_that_cannot_open_the_backend_fails_commands_not_itself(tmp_path):
    h = EngineHarness(tmp_path, 1)
    try:
        fd = os.memfd_create("other")
        os.ftruncate(fd, MiB)
        h.engine.add_device(DEV + 1, FailingOpener(), fd, MiB)
        h.engine.submit(DEV + 1, 1, OP_READ, 0, 512, [(0, 512)])
        h.submit(2, OP_READ, 0, 512, 0)
        h.wait_for([2])
        while h.engine.in_flight:
            h.engine.wait(0.05)
        assert h.completions == {2: [ST_GOOD]} and h.other == {DEV + 1: {1: [ST_READ_ERR]}}
        h.engine.remove_device(DEV + 1)
        os.close(fd)
        assert h.engine.restarts == 0
    finally:
        h.close()


def test_inline_add_device_reports_open_errors(tmp_path):
    e = Engine(workers=0)
    e.start()
    fd = os.memfd_create("x")
    os.ftruncate(fd, 4096)
    with pytest.raises(OSError):
        e.add_device(1, FailingOpener(), fd, 4096)
    e.stop()
    os.close(fd)


def test_workers_take_the_last_cpus_and_say_when_one_shares_the_supervisors(tmp_path):
    allowed = sorted(os.sched_getaffinity(0))[:2]
    assert len(allowed) == 2, "this test needs two CPUs"
    said = []
    hid = logger.add(lambda m: said.append((m.record["level"].name, m.record["message"])),
                     level="INFO", filter=lambda r: "pinned to CPUs" in r["message"])
    try:
        # One worker on two CPUs: pinned to the last, the first left to the supervisor.
        h = EngineHarness(tmp_path, 1, cpus=allowed)
        try:
            h.submit(1, OP_READ, 0, 4096, 0)
            h.wait_for([1])
            (pid,) = h.engine.worker_pids()
            assert psutil.Process(pid).cpu_affinity() == [allowed[1]]
            assert [w["cpu"] for w in h.engine.stats()] == [allowed[1]]
        finally:
            h.close()
        assert said == [("INFO", f"1 worker(s) pinned to CPUs [{allowed[1]}]")]
        # Three on two: round the CPUs, a replacement pinned as the worker it replaces, and
        # the log says that one shares the supervisor's CPU.
        h = EngineHarness(tmp_path, 3, cpus=allowed)
        try:
            h.submit(1, OP_READ, 0, 4096, 0)
            h.wait_for([1])
            pids = h.engine.worker_pids()
            want = [allowed[0], allowed[1], allowed[0]]
            assert [psutil.Process(p).cpu_affinity() for p in pids] == [[c] for c in want]
            assert [w["cpu"] for w in h.engine.stats()] == want
            os.kill(pids[1], signal.SIGKILL)
            deadline = time.monotonic() + 30
            while h.engine.worker_pids()[1] in (pids[1], None):
                assert time.monotonic() < deadline, "the killed worker was not replaced"
                h.engine.wait(0.05)
            assert psutil.Process(h.engine.worker_pids()[1]).cpu_affinity() == [allowed[1]]
            h.submit(2, OP_READ, 4096, 4096, 0)
            h.wait_for([2])
            assert h.completions[2] == [ST_GOOD] and h.data(0, 4096) == h.src[4096:8192]
        finally:
            h.close()
        assert said[1][0] == "INFO" and "shares the supervisor's CPU" in said[1][1]
        assert len(said) == 2
    finally:
        logger.remove(hid)


def test_placement_leaves_the_first_cpus_to_the_supervisor():
    assert place(3, [0, 1, 2, 3]) == [1, 2, 3]
    assert place(1, [4, 9]) == [9]
    assert place(4, [0, 1, 2, 3]) == [0, 1, 2, 3]       # one shares the supervisor's
    assert place(5, [2, 3]) == [2, 3, 2, 3, 2]
    assert place(2, []) == [None, None]


def test_a_buffer_over_two_chunks_of_one_worker_is_one_part(tmp_path):
    cs = 64 * 1024
    h = EngineHarness(tmp_path, 2, writable=True, chunk_size=cs)
    same = next(c for c in range(1, 100) if route(DEV, c, 2) == route(DEV, c + 1, 2))
    other = next(c for c in range(1, 100) if route(DEV, c, 2) != route(DEV, c + 1, 2))

    def parts_done():
        return sum(w["parts_done"] for w in h.engine.stats())

    try:
        for cmd_id, (chunk, parts) in enumerate([(same, 1), (other, 2)], 1):
            before = parts_done()
            off = chunk * cs + cs // 2           # half of one chunk, half of the next
            h.submit(cmd_id, OP_READ, off, cs, 0)
            h.wait_for([cmd_id])
            assert h.completions[cmd_id] == [ST_GOOD]
            assert h.data(0, cs) == h.src[off:off + cs]
            assert parts_done() - before == parts
        # The same buffer in 8 KiB iovecs (the general path; 8 of them fill a descriptor):
        # one part over one worker's chunks, two over two workers'.
        for cmd_id, (chunk, parts) in enumerate([(same, 1), (other, 2)], 3):
            before = parts_done()
            off = chunk * cs + cs // 2
            h.submit(cmd_id, OP_READ, off, cs, 0, 8192)
            h.wait_for([cmd_id])
            assert h.completions[cmd_id] == [ST_GOOD]
            assert h.data(0, cs) == h.src[off:off + cs]
            assert parts_done() - before == parts
        # A write as one part, then reads of each chunk alone (the same worker, after the
        # write in its ring): both halves are there.
        payload = os.urandom(cs)
        h.mm[cs:2 * cs] = payload
        off = same * cs + cs // 2
        h.submit(10, OP_WRITE, off, cs, cs)
        h.submit(11, OP_READ, same * cs, cs, 2 * cs)
        h.submit(12, OP_READ, (same + 1) * cs, cs, 3 * cs)
        h.wait_for([10, 11, 12])
        assert all(h.completions[i] == [ST_GOOD] for i in (10, 11, 12))
        assert h.data(2 * cs + cs // 2, cs // 2) == payload[:cs // 2]
        assert h.data(3 * cs, cs // 2) == payload[cs // 2:]
    finally:
        h.close()


def test_clean_stop_drains_flushes_and_leaves_no_shm(tmp_path):
    before = shm_names_of(os.getpid())
    h = EngineHarness(tmp_path, 2, writable=True, chunk_size=256 * 1024)
    pids = h.engine.worker_pids()
    payload = os.urandom(2 * MiB)
    h.mm[16 * MiB:18 * MiB] = payload
    h.submit(0, OP_WRITE, 0, 2 * MiB, 16 * MiB, 128 * 1024)
    for i in range(1, 40):                         # nothing waited for: all in flight at stop
        h.submit(i, OP_READ, 2 * MiB + i * 65536, 65536, i * 65536)
    codes = h.close(drain=True)
    assert codes == [0, 0]
    assert sorted(h.completions) == list(range(40))
    assert all(s == [ST_GOOD] for s in h.completions.values())
    assert h.path.read_bytes()[:2 * MiB] == payload
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert shm_names_of(os.getpid()) == before


def test_shared_allocator_keeps_multi_process_appends_apart(tmp_path):
    """Writable uppers written by several workers: positions from a SharedCounter, records
    appended with O_APPEND; replaying the log gives back exactly what was written."""
    from overlaybd.shm import SharedCounter
    size = 4 * MiB
    data, log = tmp_path / "data", tmp_path / "log"
    data.write_bytes(b"H" * 4096)
    log.write_bytes(b"")
    counter = SharedCounter(initial=4096)
    h = EngineHarness(tmp_path, 2, size=size, chunk_size=64 * 1024,
                opener=AppendLogOpener(str(data), str(log), size, counter))
    try:
        expect = bytearray(size)
        for i in range(64):
            off = (i * 7 % 60) * 65536
            n = 65536 + (i % 3) * 4096
            buf = os.urandom(n)
            h.mm[i * 131072:i * 131072 + n] = buf
            expect[off:off + n] = buf
            h.submit(i, OP_WRITE, off, n, i * 131072, 16384)
            h.wait_for([i])          # in order: overlapping writes must land in order
        assert all(s == [ST_GOOD] for s in h.completions.values())
    finally:
        h.close()
    got, recs = AppendLog.replay(data, log, size)
    assert got == bytes(expect)
    spans = sorted((pos, pos + n) for _, pos, n in recs)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans)), "two appends overlap"
    assert spans[0][0] == 4096 and counter.value == spans[-1][1]
    counter.close()


def test_split_never_crosses_chunks_and_routes_stably():
    parts = split_iovs(1000 * 512, [(0, 4096)] * 300, 65536, 8)
    assert sum(n for _, n, _ in parts) == 300 * 4096
    pos = 1000 * 512
    for off, n, iovs in parts:
        assert off == pos and len(iovs) <= 8 and sum(x for _, x in iovs) == n
        assert off // 65536 == (off + n - 1) // 65536
        pos += n
    assert {route(3, 17, 4) for _ in range(5)} == {route(3, 17, 4)}
    assert {route(3, c, 2) for c in range(64)} == {0, 1}


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_spawned_workers_get_everything_through_the_channel(tmp_path, method):
    """With spawn or forkserver nothing is inherited: rings, eventfds, the data area and the
    opener all reach the worker through the control channel."""
    h = EngineHarness(tmp_path, 1, start_method=method, heartbeat_sec=1.0)
    try:
        h.submit(1, OP_READ, MiB, 2 * MiB, 4096, 65536)
        h.wait_for([1])
        assert h.completions == {1: [ST_GOOD]}
        assert h.data(4096, 2 * MiB) == h.src[MiB:3 * MiB]
        for i in range(2, 12):                  # several of the worker's 250 ms liveness checks
            h.engine.wait(0.15)
            h.submit(i, OP_READ, i * 4096, 4096, 0)
            h.wait_for([i])
        assert h.engine.restarts == 0           # e.g. not mistaking a forkserver for an orphaning
    finally:
        assert h.close() == [0]


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 64), st.lists(st.integers(1, 40), min_size=1, max_size=30),
       st.sampled_from([512, 4096, 65536]))
def test_split_covers_every_byte_once_in_order(first_sector, iov_sectors, chunk):
    """Each part stays in one chunk and holds <= MAX_IOVS iovecs; concatenated, the parts map
    the same device bytes to the same data-area bytes as the command."""
    from overlaybd.shm.descriptor import MAX_IOVS
    iovs, moff = [], 0
    for n in iov_sectors:
        iovs.append((moff, n * 512))
        moff += n * 512 + 512                     # gaps between buffers
    want = [(first_sector * 512 + i, m) for i, m in enumerate(
        m for off, n in iovs for m in range(off, off + n))]
    got = []
    for off, n, piov in split_iovs(first_sector * 512, iovs, chunk, MAX_IOVS):
        assert off // chunk == (off + n - 1) // chunk and len(piov) <= MAX_IOVS
        flat = [m for o, k in piov for m in range(o, o + k)]
        assert len(flat) == n
        got.extend((off + i, m) for i, m in enumerate(flat))
    assert got == want


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 64), st.lists(st.integers(1, 40), min_size=1, max_size=30),
       st.sampled_from([512, 4096, 65536]), st.lists(st.integers(0, 1), min_size=1, max_size=8))
def test_split_cuts_only_where_the_owner_changes(first_sector, iov_sectors, chunk, owners):
    """With an owner per chunk, each part lies in chunks of one owner; a part ends where the
    owner changes, where the command ends, or with MAX_IOVS iovecs; the bytes are the same."""
    from overlaybd.shm.descriptor import MAX_IOVS

    def owner(c):
        return owners[c % len(owners)]
    iovs, moff = [], 0
    for n in iov_sectors:
        iovs.append((moff, n * 512))
        moff += n * 512 + 512
    end = first_sector * 512 + sum(n for _, n in iovs)
    want = [(first_sector * 512 + i, m) for i, m in enumerate(
        m for off, n in iovs for m in range(off, off + n))]
    got = []
    for off, n, piov in split_iovs(first_sector * 512, iovs, chunk, MAX_IOVS, owner):
        assert len({owner(c) for c in range(off // chunk, (off + n - 1) // chunk + 1)}) == 1
        last = off + n
        assert last == end or len(piov) == MAX_IOVS or \
            (last % chunk == 0 and owner(last // chunk) != owner((last - 1) // chunk))
        flat = [m for o, k in piov for m in range(o, o + k)]
        assert len(flat) == n
        got.extend((off + i, m) for i, m in enumerate(flat))
    assert got == want


@pytest.mark.parametrize("workers", WORKERS)
def test_device_number_reused_after_remove_reads_the_new_backend(tmp_path, workers):
    from overlaybd.workers.rawfile import RawFileOpener
    h = EngineHarness(tmp_path, workers)
    other = tmp_path / "other.img"
    other.write_bytes(bytes(reversed(h.src)))
    try:
        for round_, path in enumerate([other, h.path, other]):
            h.engine.remove_device(DEV)
            h.engine.add_device(DEV, RawFileOpener(path), h.map_fd, h.map_size)
            h.submit(round_, OP_READ, 0, 3 * MiB, 0, 65536)      # no wait in between
            h.wait_for([round_])
            assert h.data(0, 3 * MiB) == path.read_bytes()[:3 * MiB], f"round {round_}"
    finally:
        h.close()


def test_unpicklable_opener_is_refused_and_leaves_the_engine_working(tmp_path):
    h = EngineHarness(tmp_path, 1)
    try:
        fd = os.memfd_create("other")
        os.ftruncate(fd, MiB)
        with pytest.raises(CommandError) as e:
            h.engine.add_device(DEV + 1, lambda: None, fd, MiB)
        assert e.value.field == "opener"
        os.close(fd)
        os.kill(h.engine.worker_pids()[0], 9)          # a replacement must not choke on it
        h.submit(1, OP_READ, 0, 4096, 0)
        h.wait_for([1])
        assert h.completions == {1: [ST_GOOD]} and h.engine.restarts == 1
    finally:
        h.close()


def test_commands_submitted_from_on_complete_run_without_another_poll(tmp_path):
    """A caller that selects on a fileno() it fetched once still sees its commands and their
    follow-ups run (heartbeat 60 s: the worker's own 15 s timeout cannot be what wakes it)."""
    import select
    h = EngineHarness(tmp_path, 1, heartbeat_sec=60)
    fd = h.engine.fileno()
    chained = []

    def on_complete(dev, cmd_id, status):
        h.completions.setdefault(cmd_id, []).append(status)
        if cmd_id == 1:
            h.submit(2, OP_READ, 4096, 4096, 8192)
            chained.append(2)
    h.engine.on_complete = on_complete
    try:
        h.submit(1, OP_READ, 0, 4096, 0)
        h.engine.poll()         # the contract: submit, then poll before sleeping on fileno()
        while 2 not in h.completions:            # (a worker asleep is woken by that poll)
            assert select.select([fd], [], [], 10)[0], "the chained command never ran"
            h.engine.poll()
        assert h.completions == {1: [ST_GOOD], 2: [ST_GOOD]}
        assert h.data(8192, 4096) == h.src[4096:8192]
    finally:
        h.close()


def test_a_slow_part_does_not_hold_back_completions_before_it(tmp_path):
    import select

    from tests.helpers.workers import GateOpener
    release = tmp_path / "release"
    h = EngineHarness(tmp_path, 1, heartbeat_sec=60)
    h.engine.remove_device(DEV)
    h.engine.add_device(DEV, GateOpener(h.path, 5 * 4096, release), h.map_fd, h.map_size)
    try:
        for i in range(6):                         # the last one blocks until released
            h.submit(i, OP_READ, i * 4096, 4096, i * 4096)
        h.engine.poll()                            # starts them
        fd = h.engine.fileno()
        while len(h.completions) < 5:
            assert select.select([fd], [], [], 10)[0], "completions were not signalled"
            h.engine.poll()
        assert sorted(h.completions) == [0, 1, 2, 3, 4]
        release.touch()
        h.wait_for([5])
        assert h.data(0, 6 * 4096) == h.src[:6 * 4096]
    finally:
        release.touch()
        h.close()


class ReadOnlyImageLike:
    """Like overlaybd.image.Image without an upper: has pwrite/discard that raise EROFS."""

    def __init__(self, path):
        self.path = str(path)

    def __call__(self):
        from overlaybd.errors import ReadOnlyError
        from overlaybd.workers.rawfile import RawFile
        f = RawFile(self.path)
        del f.read_only

        def refuse(*args):
            raise ReadOnlyError("image is read-only", path=self.path)
        f.pwrite = f.discard = refuse
        return f


@pytest.mark.parametrize("workers", [0, 1])
def test_read_only_error_from_the_backend_is_write_protect(tmp_path, workers):
    img = tmp_path / "ro.img"
    img.write_bytes(bytes(MiB))
    h = EngineHarness(tmp_path, workers, opener=ReadOnlyImageLike(img))
    try:
        h.submit(1, OP_WRITE, 0, 4096, 0)
        h.submit(2, OP_DISCARD, 0, 4096)
        h.wait_for([1, 2])
        assert h.completions == {1: [ST_WRITE_PROTECT], 2: [ST_WRITE_PROTECT]}
    finally:
        h.close()
