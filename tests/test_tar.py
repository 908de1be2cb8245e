"""One-file tar wrapping (spec §3): detection rules, payload offsets, the -t writer."""

import io
import stat
import tarfile

import pytest

from overlaybd import tar as T
from overlaybd import zfile
from overlaybd.abi import tar as tabi
from overlaybd.detect import describe, open_blob
from overlaybd.errors import FormatError
from overlaybd.io import BytesFile, LocalFile
from overlaybd.lsmt import open_ro
from tests.helpers.env import GOLDEN
from tests.helpers.zfile import FlakySource, golden, mixed_data


def wrapped(payload, mode=0o644):
    out = io.BytesIO()
    assert T.wrap(BytesFile(payload), out, mode=mode) == len(payload)
    return out.getvalue()


def python_tar(payload, fmt, name="overlaybd.commit", pax=None):
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tf:
        ti = tarfile.TarInfo(name)
        ti.size = len(payload)
        ti.mode = 0o444
        if pax:
            ti.pax_headers = pax
        tf.addfile(ti, io.BytesIO(payload))
    return out.getvalue()


@pytest.mark.parametrize("size", [0, 1, 511, 512, 513, 84992, 100_001])
def test_wrap_unwrap_round_trip(size):
    payload = mixed_data(size, seed=size)
    blob = wrapped(payload)
    assert len(blob) == 1536 + -(-size // 512) * 512 + 1024
    assert blob[1536 + size:] == bytes(len(blob) - 1536 - size)     # padding + 2 zero blocks
    f = BytesFile(blob, path="w.tar")
    assert T.is_tar(f)
    t = T.TarFile(f)
    assert (t.base, t.size) == (1536, size) and t.pax == {"size": str(size)}
    assert t.pread(size + 1000, 0) == payload
    assert t.pread(10, 5) == payload[5:15] and t.pread(10, size) == b""
    buf = bytearray(size)
    assert t.preadinto(buf, 0) == size and bytes(buf) == payload
    # another tar reader agrees
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        (m,) = tf.getmembers()
        assert (m.name, m.size, m.mode, m.uid, m.gid, m.mtime) == ("overlaybd.commit", size,
                                                                   0o100644, 0, 0, 0)
        assert tf.extractfile(m).read() == payload


def test_header_bytes_as_upstream_writes_them():
    blob = wrapped(b"x" * 84992)
    pax, record, hdr = blob[:512], blob[512:1024], blob[1024:1536]
    rec = b"14 size=84992\n"
    assert record == rec + bytes(512 - len(rec))
    assert tabi.field(pax, "name") == b"overlaybd.pax".ljust(100, b"\0")
    assert tabi.field(pax, "typeflag") == b"x"
    assert tabi.field(pax, "size") == b"%11o " % len(rec)
    assert tabi.field(pax, "mode") == bytes(8) and tabi.field(pax, "uname") == bytes(32)
    assert tabi.field(pax, "magic") == b"ustar\0" and tabi.field(pax, "version") == b"00"
    assert tabi.field(hdr, "name") == b"overlaybd.commit".ljust(100, b"\0")
    assert tabi.field(hdr, "typeflag") == b"0"
    assert tabi.field(hdr, "mode") == b"100644 \0"
    assert tabi.field(hdr, "uid") == b"     0 \0" == tabi.field(hdr, "gid")
    assert tabi.field(hdr, "size") == b"          0 " == tabi.field(hdr, "mtime")
    assert tabi.field(hdr, "uname") == b"root".ljust(32, b"\0") == tabi.field(hdr, "gname")
    assert tabi.field(hdr, "magic") == b"ustar\0" and tabi.field(hdr, "version") == b"00"
    for block in (pax, hdr):
        chk = tabi.field(block, "chksum")
        assert chk[6:] == b" \0"
        assert int(chk[:6], 8) == tabi.checksum_unsigned(block)
    assert tabi.field(T.final_headers(5, 0o444)[1024:], "mode") == b"100444 \0"
    assert stat.S_ISREG(tabi.parse_octal(tabi.field(hdr, "mode")))


def test_placeholder_while_writing_is_not_a_tar():
    out = io.BytesIO()
    w = T.TarWriter(out)
    w.write(b"payload")
    f = BytesFile(out.getvalue())
    assert not T.is_tar(f)
    hdr = out.getvalue()[1024:1536]
    assert tabi.field(hdr, "magic") == b"xxtar\0" and tabi.field(hdr, "version") == b"xx"
    assert tabi.field(hdr, "name").rstrip(b"\0") == b"overlaybd.new"
    assert out.getvalue()[512:521] == b"9 size=0\n"
    w.close()
    assert T.is_tar(BytesFile(out.getvalue()))


def test_plain_ustar_payload_at_512():
    payload = mixed_data(5000)
    blob = python_tar(payload, tarfile.USTAR_FORMAT)
    f = BytesFile(blob)
    assert T.is_tar(f)
    t = T.TarFile(f)
    assert (t.base, t.size, t.pax) == (512, 5000, {})
    assert t.pread(10**6, 0) == payload


def test_pax_archive_payload_at_1536():
    payload = mixed_data(3000)
    blob = python_tar(payload, tarfile.PAX_FORMAT, pax={"comment": "hello"})
    t = T.TarFile(BytesFile(blob))
    assert (t.base, t.size) == (1536, 3000) and t.pax["comment"] == "hello"
    assert t.pread(3000, 0) == payload


def test_pax_size_overrides_ustar_size():
    blob = bytearray(wrapped(b"a" * 1000))
    hdr = bytearray(blob[1024:1536])
    tabi.put(hdr, "size", tabi.int_to_oct_nonull(7, 12))
    tabi.set_checksum(hdr)
    blob[1024:1536] = hdr
    assert T.TarFile(BytesFile(bytes(blob))).size == 1000


def test_gnu_header_not_detected():
    blob = python_tar(b"z" * 100, tarfile.GNU_FORMAT)
    assert tabi.field(blob, "magic") + tabi.field(blob, "version") == b"ustar  \0"
    assert not T.is_tar(BytesFile(blob))


def test_bad_checksum_is_not_a_tar_and_fails_as_lsmt():
    lsmt = golden("layer3.lsmt")
    blob = bytearray(wrapped(lsmt))
    blob[0] ^= 1                                     # name byte: checksum no longer matches
    f = BytesFile(bytes(blob), path="bad.tar")
    assert not T.is_tar(f)
    assert open_blob(f) is f
    with pytest.raises(FormatError) as ei:
        open_ro(open_blob(f))
    assert ei.value.field == "magic" and "bad.tar" in str(ei.value)
    with pytest.raises(FormatError):
        T.TarFile(f)


def test_signed_checksum_accepted():
    blob = bytearray(python_tar(b"q" * 10, tarfile.USTAR_FORMAT, name="\u00e9t\u00e9"))
    assert any(b >= 0x80 for b in blob[:512])
    tabi.put(blob, "chksum", tabi.int_to_oct(tabi.checksum_signed(blob), 8))
    assert T.is_tar(BytesFile(bytes(blob)))


def test_truncated_and_malformed_tars():
    blob = wrapped(mixed_data(10_000))
    with pytest.raises(FormatError) as ei:
        T.TarFile(BytesFile(blob[:5000], path="t"))
    assert ei.value.field == "tar size"
    bad = bytearray(blob)
    bad[512:526] = b"99 size=10000\n"
    with pytest.raises(FormatError) as ei:
        T.TarFile(BytesFile(bytes(bad)))
    assert ei.value.field == "pax record"
    assert not T.is_tar(BytesFile(blob[:300]))


def test_commit_z_t_combination_is_zfile_in_tar():
    """overlaybd-commit -z -t: the ZFile (header overwrite) written through the tar wrapper."""
    lsmt = golden("layer2.lsmt")
    out = io.BytesIO()
    tw = T.TarWriter(out)
    zw = zfile.ZFileWriter(tw, overwrite_header=True)
    zw.write(lsmt)
    zw.close()
    tw.close()
    blob = BytesFile(out.getvalue(), path="c.tar")
    t = T.TarFile(blob)
    if zfile.LZ4_EXACT:
        assert t.pread(t.size, 0) == golden("layer2.lz4.zfile")
    z = open_blob(blob)
    assert isinstance(z, zfile.ZFile) and z.pread(z.size, 0) == lsmt
    assert describe(blob)["kinds"] == ["tar", "zfile", "lsmt"]
    assert describe(blob)["tar"]["payload_offset"] == 1536


def test_tar_of_golden_zfile_on_disk(tmp_path):
    p = tmp_path / "layer.tar"
    p.touch()
    lf = LocalFile(p, writable=True)
    T.wrap(LocalFile(GOLDEN / "layer1.zstd.zfile"), lf, mode=0o444)
    lf.close()
    f = LocalFile(p)
    z = open_blob(f)
    assert z.pread(z.size, 0) == golden("layer1.lsmt")


def test_evict_is_shifted_by_the_payload_offset():
    zf = golden("layer1.lz4.zfile")
    blob = wrapped(zf)
    src = FlakySource(blob, 1536 + 2000, 1, heal_after=1)
    z = open_blob(src)
    assert z.pread(z.size, 0) == golden("layer1.lsmt")
    assert len(src.evicts) == 1 and src.evicts[0][0] >= 1536
    assert src.evicts[0][0] <= 1536 + 2000 < sum(src.evicts[0])
    assert not hasattr(T.TarFile(BytesFile(blob)), "evict")
