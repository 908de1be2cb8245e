"""The file helpers every layer shares (overlaybd/io.py): punching holes, reading exactly,
writing everything."""

import errno
import os
import threading

import pytest

from overlaybd.errors import FormatError
from overlaybd.io import (
    BytesFile,
    chunks,
    file_name,
    punch_hole,
    pwrite_all,
    read_exact,
    write_all,
)


def test_punch_hole_zeroes_and_deallocates_keeping_the_size(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"\xab" * (1 << 20))
    fd = os.open(p, os.O_RDWR)
    try:
        os.fsync(fd)
        before = os.fstat(fd).st_blocks
        punch_hole(fd, 4096, 512 << 10)
        punch_hole(fd, 0, 0)                    # nothing to do
        st = os.fstat(fd)
        assert st.st_size == 1 << 20
        assert st.st_blocks <= before - (512 << 10) // 512
        data = os.pread(fd, 1 << 20, 0)
    finally:
        os.close(fd)
    assert data == b"\xab" * 4096 + bytes(512 << 10) + b"\xab" * ((1 << 20) - 4096 - (512 << 10))


def test_punch_hole_failure_names_the_file(tmp_path):
    p = tmp_path / "ro"
    p.write_bytes(b"x" * 8192)
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            punch_hole(fd, 0, 4096)             # not open for writing
        assert e.value.errno == errno.EBADF
        assert e.value.filename == str(p)       # found through /proc/self/fd
        with pytest.raises(OSError) as e:
            punch_hole(fd, 0, 4096, "named by the caller")
        assert e.value.filename == "named by the caller"
    finally:
        os.close(fd)
    assert p.read_bytes() == b"x" * 8192


def test_read_exact_returns_bytes_or_names_file_and_field():
    f = BytesFile(b"0123456789", path="blob")
    assert read_exact(f, 4, 3, "header") == b"3456"
    assert type(read_exact(f, 0, 10)) is bytes
    with pytest.raises(FormatError) as e:
        read_exact(f, 4, 8, "trailer")
    assert (e.value.path, e.value.field) == ("blob", "trailer")
    assert "needs 4 bytes at offset 8, got 2" in str(e.value)
    with pytest.raises(FormatError) as e:
        read_exact(f, 4, 8, "trailer", "outer.tar")
    assert e.value.path == "outer.tar"


class _Trickle:
    """A stream that takes at most 3 bytes a call; ``write`` says how many."""

    def __init__(self, returns_none_at=None):
        self.got = bytearray()
        self.calls = 0
        self.none_at = returns_none_at

    def write(self, mv):
        self.calls += 1
        if self.calls == self.none_at:          # a sink that takes everything and says nothing
            self.got += mv
            return None
        self.got += mv[:3]
        return min(3, len(mv))


def test_write_all_loops_over_short_writes_to_streams_and_descriptors(tmp_path):
    s = _Trickle()
    write_all(s, b"0123456789")
    assert (bytes(s.got), s.calls) == (b"0123456789", 4)
    s = _Trickle(returns_none_at=2)
    write_all(s, b"0123456789")
    assert bytes(s.got) == b"0123456789"
    r, w = os.pipe()
    try:
        data = os.urandom(1 << 20)              # more than a pipe takes at once
        got = bytearray()

        def drain():
            while len(got) < len(data):
                got.extend(os.read(r, 1 << 16))
        t = threading.Thread(target=drain)
        t.start()
        write_all(w, data)
        t.join(30)
        assert bytes(got) == data
    finally:
        os.close(r)
        os.close(w)


def test_pwrite_all_writes_at_the_offset_and_names_the_file(tmp_path):
    p = tmp_path / "f"
    p.write_bytes(b"." * 16)
    fd = os.open(p, os.O_RDWR)
    try:
        pwrite_all(fd, memoryview(b"abcd"), 6)
    finally:
        os.close(fd)
    assert p.read_bytes() == b"......abcd......"
    fd = os.open(p, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            pwrite_all(fd, b"x", 0)
        assert (e.value.errno, e.value.filename) == (errno.EBADF, str(p))
    finally:
        os.close(fd)


class _Stream:
    def __init__(self, data):
        self.data = data

    def read(self, n):
        out, self.data = self.data[:n], self.data[n:]
        return out


class _Short(BytesFile):
    """Says it is bigger than what it gives."""

    def __init__(self, data, size):
        super().__init__(data, path="short.img")
        self.size = size


def test_chunks_of_files_and_streams_and_a_short_file():
    data = os.urandom(10_000)
    assert list(chunks(BytesFile(data), 4096)) == [data[:4096], data[4096:8192], data[8192:]]
    assert b"".join(chunks(_Stream(data), 3000)) == data
    assert list(chunks(BytesFile(b""))) == []
    with pytest.raises(FormatError) as e:
        list(chunks(_Short(data, 12_000), 4096))
    assert "short read at offset 10000" in str(e.value) and e.value.path == "short.img"
    assert file_name(BytesFile(b"", path="x.img")) == "x.img"
    assert file_name(_Stream(b"")).startswith("<")
