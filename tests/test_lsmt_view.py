"""The one LSMT read engine (overlaybd/lsmt/view.py): ``segments`` tiles a request exactly, and
every view (sealed, merged, writable, writable over merged) reads through it."""

import random

from overlaybd.io import LocalFile
from overlaybd.lsmt import close_seal, create_rw, open_merged, stack

MiB = 1 << 20


def tiles(view, off, end):
    segs = view.segments(off, end)
    pos = off
    for a, b, src, at in segs:
        assert a == pos and a < b <= end and (src is None or at >= 0)
        pos = b
    assert pos == end
    return segs


def build(tmp_path, rng, name, vsize, writes, model):
    layer = create_rw(tmp_path / f"{name}.data", tmp_path / f"{name}.index", vsize)
    for _ in range(writes):
        off = rng.randrange(vsize // 512 - 16) * 512
        data = rng.randbytes(rng.randrange(1, 16) * 512)
        layer.pwrite(data, off)
        model[off:off + len(data)] = data
    if rng.random() < 0.3:
        off = rng.randrange(vsize // 512 - 8) * 512
        layer.discard(off, 4096)
        model[off:off + 4096] = bytes(4096)
    return layer


def test_every_view_reads_its_segments_like_the_model(tmp_path):
    rng = random.Random(7)
    vsize = MiB
    model = bytearray(vsize)
    paths = []
    for k in range(3):
        layer = build(tmp_path, rng, f"l{k}", vsize, 40, model)
        close_seal(layer)
        paths.append(tmp_path / f"l{k}.data")
    merged = open_merged([LocalFile(p) for p in paths])
    upper = build(tmp_path, rng, "up", vsize, 0, bytearray(vsize))
    img = stack(upper, merged)
    for _ in range(30):                    # writes through the stack land in the upper
        off = rng.randrange(vsize // 512 - 16) * 512
        data = rng.randbytes(rng.randrange(1, 16) * 512)
        img.pwrite(data, off)
        model[off:off + len(data)] = data
    for _ in range(300):
        off = rng.randrange(vsize // 512) * 512
        end = min(vsize, off + rng.randrange(1, 300) * 512)
        segs = tiles(img, off, end)
        lower = {id(s) for s in merged._srcs}
        assert all(s is None or id(s) in lower or s.file is upper.data for _, _, s, _ in segs)
        tiles(merged, off, end)
        assert img.pread(end - off, off) == model[off:end]
        buf = bytearray(end - off)
        assert img.preadinto(buf, off) == end - off and buf == model[off:end]
    assert merged.pread(vsize, 0) != img.pread(vsize, 0)      # the upper's writes hide lowers


def test_a_stack_larger_than_its_lowers_reads_zeros_past_them(tmp_path):
    lower = create_rw(tmp_path / "lo.data", tmp_path / "lo.index", MiB)
    lower.pwrite(b"\x11" * MiB, 0)
    close_seal(lower)
    merged = open_merged([LocalFile(tmp_path / "lo.data")])
    upper = create_rw(tmp_path / "up.data", tmp_path / "up.index", 2 * MiB)
    img = stack(upper, merged)
    img.pwrite(b"\x22" * 4096, MiB + 8192)
    want = b"\x11" * MiB + bytes(8192) + b"\x22" * 4096 + bytes(MiB - 12288)
    assert img.size == 2 * MiB and img.pread(2 * MiB, 0) == want
    assert [s for s in tiles(img, 0, 2 * MiB) if s[2] is not None][0][:2] == (0, MiB)
