"""The file helpers every layer shares (overlaybd/io.py): punching holes, reading exactly."""

import errno
import os

import pytest

from overlaybd.errors import FormatError
from overlaybd.io import BytesFile, punch_hole, read_exact


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
