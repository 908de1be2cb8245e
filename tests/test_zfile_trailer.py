"""A ZFile's sizes must agree: original_file_size with the jump table, a rewritten header with
the trailer.  Vectors are made by the project's writer, then fields are patched and the digest
recomputed (patch_header), so only the disagreement is wrong.  The reader refuses them at open,
and so do ``overlaybd-zfile --verify`` and ``-x`` (run as the installed console scripts)."""

import io

import pytest

from overlaybd import zfile
from overlaybd.abi import zfile as zabi
from overlaybd.errors import FormatError
from overlaybd.io import BytesFile
from tests.helpers.tools import err_lines, run_tool
from tests.helpers.zfile import mixed_data, patch_header

BS = 4096
DATA = mixed_data(10 * BS + 1000, seed=7)     # 11 blocks, the last one 1000 bytes


def build(overwrite_header=False, data=DATA, block_size=BS):
    out = io.BytesIO()
    zfile.compress(io.BytesIO(data), out, block_size=block_size,
                   overwrite_header=overwrite_header)
    return out.getvalue()


def trailer(blob):
    return zabi.HeaderTrailer.unpack(blob[-512:])


def refused(blob, field, path="v.zfile"):
    with pytest.raises(FormatError) as ei:
        zfile.ZFile(BytesFile(blob, path=path))
    assert ei.value.field == field and ei.value.path == path, str(ei.value)
    return str(ei.value)


def test_vectors_are_sound():
    for ow in (False, True):
        z = zfile.ZFile(BytesFile(build(ow)))
        assert z.nblocks == 11 and z.size == len(DATA)
        assert z.pread(len(DATA), 0) == DATA
    empty = zfile.ZFile(BytesFile(build(data=b"")))
    assert empty.nblocks == 0 and empty.size == 0 and empty.pread(10, 0) == b""


@pytest.mark.parametrize("size", [0, 1, 9 * BS, 10 * BS, 11 * BS + 1, 12 * BS, 2**40])
def test_original_size_must_fit_the_jump_table(size):
    """11 blocks of 4 KiB hold 10*4096+1 .. 11*4096 bytes; anything else is refused."""
    blob = build()
    msg = refused(patch_header(blob, len(blob) - 512, original_file_size=size),
                  "original_file_size")
    assert f"original_file_size {size}" in msg and "index_size 11" in msg


@pytest.mark.parametrize("size", [10 * BS + 1, 11 * BS])
def test_sizes_inside_the_last_block_open(size):
    """Within the last block the table cannot tell: the open succeeds, and reading the last
    block refuses the bytes it decompresses to, naming the block."""
    blob = build()
    z = zfile.ZFile(BytesFile(patch_header(blob, len(blob) - 512, original_file_size=size)))
    assert z.pread(BS, 0) == DATA[:BS]
    with pytest.raises(FormatError) as ei:
        z.pread(BS, 10 * BS)
    assert ei.value.field == "block" and "decompressed to 1000 bytes" in str(ei.value)


def test_blocks_without_size_refused():
    """An index with blocks while original_file_size says 0: the -x of the issue (0 bytes)."""
    blob = build()
    refused(patch_header(blob, len(blob) - 512, original_file_size=0), "original_file_size")
    empty = build(data=b"")
    refused(patch_header(empty, len(empty) - 512, original_file_size=5), "original_file_size")


@pytest.mark.parametrize("field,value", [("original_file_size", len(DATA) - 1),
                                         ("verify", 0), ("index_crc", 0x1234)])
def test_rewritten_header_must_agree_with_trailer(field, value):
    """commit -z rewrites the header with the final index info and upstream reads only it;
    a trailer that says otherwise means one of them describes other data."""
    blob = build(overwrite_header=True)
    assert zabi.HeaderTrailer.unpack(blob).is_header_overwritten
    bad = patch_header(blob, len(blob) - 512, **{field: value})
    msg = refused(bad, f"trailer {field}")
    assert f"says {field}" in msg


def test_rewritten_header_without_trailer_at_end_still_reads():
    """Bytes appended after a header-overwritten ZFile: upstream never looks at the end block,
    the table still fits, every byte still reads right; so it opens here too."""
    blob = build(overwrite_header=True) + bytes(512)
    z = zfile.ZFile(BytesFile(blob))
    assert z.pread(len(DATA), 0) == DATA


def test_table_must_end_before_the_trailer():
    blob = build()
    t = trailer(blob)
    refused(patch_header(blob, len(blob) - 512, index_offset=t.index_offset + 1), "index_size")


@pytest.fixture
def bad_vectors(tmp_path):
    """(path, field) of files --verify and -x must refuse."""
    blob = build()
    out = []
    for name, data, field in (
            ("zero-size", patch_header(blob, len(blob) - 512, original_file_size=0),
             "original_file_size"),
            ("short-size", patch_header(blob, len(blob) - 512, original_file_size=9 * BS),
             "original_file_size"),
            ("last-block", patch_header(blob, len(blob) - 512, original_file_size=11 * BS),
             "original_file_size"),
            ("header-vs-trailer", patch_header(build(overwrite_header=True), 0,
                                               original_file_size=len(DATA) - 1),
             "trailer original_file_size")):
        p = tmp_path / name
        p.write_bytes(data)
        out.append((p, field))
    return out


def test_tools_refuse_disagreeing_sizes(tmp_path, bad_vectors):
    for path, field in bad_vectors:
        v = run_tool("zfile", "--verify", path)
        assert v.returncode == 1 and v.stdout == b""
        assert len(err_lines(v)) == 1, v.stderr
        assert str(path) in v.stderr.decode() and f"'{field}'" in v.stderr.decode()
        out = tmp_path / (path.name + ".out")
        x = run_tool("zfile", "-x", path, out)
        assert x.returncode == 1 and str(path) in x.stderr.decode()
        assert not out.exists()                     # nothing half-written is left
    good = tmp_path / "good"
    good.write_bytes(build())
    assert run_tool("zfile", "--verify", good).returncode == 0
    assert run_tool("zfile", "-x", good, tmp_path / "good.out").returncode == 0
    assert (tmp_path / "good.out").read_bytes() == DATA
