"""LSMT index algorithms: the upstream golden vectors (spec §1.6) plus model checks."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from overlaybd.lsmt import SegmentIndex, combo_lookup, compress_rows, merge_indexes

IDX0 = [(5, 5, 0), (10, 10, 50), (100, 10, 20)]
IDX1 = [(0, 1, 7), (2, 4, 5), (15, 10, 22), (30, 15, 89), (87, 50, 32), (150, 10, 84)]
IDX2 = [(1, 3, 134), (8, 4, 873), (18, 72, 320), (100, 100, 4893), (1000, 1000, 39823)]
IDX3 = [(23, 10, 0), (65, 10, 50), (89, 10, 20), (230, 43, 432), (1999, 31, 2393)]


def rows4(rows):
    """(offset, length, moffset, tag) of full rows (all these vectors have zeroed = 0)."""
    assert all(r[3] == 0 for r in rows)
    return [(r[0], r[1], r[2], r[4]) for r in rows]


def writable(rows):
    idx = SegmentIndex()
    for r in rows:
        idx.insert(r[0], r[1], r[2])
    return idx


def stacked_lookup(lowers):
    lower = merge_indexes([SegmentIndex.from_rows(x) for x in lowers])
    upper = writable(IDX0)
    return rows4(combo_lookup(upper, len(lowers), lower, 0, 10000))


TWO = [(0, 1, 7, 0), (2, 3, 5, 0), (5, 5, 0, 1), (10, 10, 50, 1), (20, 5, 27, 0),
       (30, 15, 89, 0), (87, 13, 32, 0), (100, 10, 20, 1), (110, 27, 55, 0), (150, 10, 84, 0)]
THREE = [(0, 1, 7, 0), (1, 1, 134, 1), (2, 3, 5, 0), (5, 5, 0, 2), (10, 10, 50, 2),
         (20, 5, 27, 0), (25, 5, 327, 1), (30, 15, 89, 0), (45, 42, 347, 1), (87, 13, 32, 0),
         (100, 10, 20, 2), (110, 27, 55, 0), (137, 13, 4930, 1), (150, 10, 84, 0),
         (160, 40, 4953, 1), (1000, 1000, 39823, 1)]


def test_merge_two_layers_with_writable_top():
    assert stacked_lookup([IDX1]) == TWO


def test_merge_three_layers_with_writable_top():
    assert stacked_lookup([IDX1, IDX2]) == THREE


def test_merge_four_layers_with_writable_top():
    expect = [(o, l, m, 3 if t == 2 else t) for o, l, m, t in THREE]
    expect += [(230, 43, 432, 2), (2000, 30, 2394, 2)]
    expect.sort()
    assert stacked_lookup([IDX1, IDX2, IDX3]) == expect


def test_index0_insert_vector():
    idx = writable([(0, 20, 0), (10, 15, 50), (30, 100, 20), (5, 10, 3), (40, 10, 123),
                    (200, 10, 2133), (150, 100, 21)])
    assert [r[:3] for r in idx.rows()] == [(0, 5, 0), (5, 10, 3), (15, 10, 55), (30, 10, 20),
                                           (40, 10, 123), (50, 80, 40), (150, 100, 21)]
    assert idx.block_count() == 5 + 10 + 10 + 10 + 10 + 80 + 100


def test_lookup_vector():
    idx = SegmentIndex.from_rows([(0, 10, 0), (10, 10, 50), (100, 10, 20)])

    def look(o, n):
        return [r[:3] for r in idx.lookup(o, n)]

    assert look(5, 10) == [(5, 5, 5), (10, 5, 50)]
    assert look(16, 10) == [(16, 4, 56)]
    assert look(26, 10) == []
    assert look(6, 100) == [(6, 4, 6), (10, 10, 50), (100, 6, 20)]


def test_lookup_trims_zeroed_without_moving_moffset():
    idx = SegmentIndex.from_rows([(10, 10, 50, 1, 0)])
    assert idx.lookup(12, 4) == [(12, 4, 50, 1, 0)]


def test_compress_vectors():
    def c(rows):
        full = [(r[0], r[1], r[2], 0, r[3] if len(r) > 3 else 0) for r in rows]
        return [(o, l, m) if t == 0 else (o, l, m, t) for o, l, m, _, t in compress_rows(full)]

    assert c([(5, 5, 0), (10, 10, 5), (100, 10, 20)]) == [(5, 15, 0), (100, 10, 20)]
    assert c([(5, 5, 0), (10, 10, 5), (20, 10, 15), (100, 10, 20)]) == [(5, 25, 0),
                                                                        (100, 10, 20)]
    assert c([(5, 5, 0), (10, 10, 5), (20, 10, 15, 1), (100, 10, 20)]) == \
        [(5, 15, 0), (20, 10, 15, 1), (100, 10, 20)]
    assert c([(5, 5, 0), (10, 10, 5, 3), (20, 10, 15, 3), (30, 10, 20)]) == \
        [(5, 5, 0), (10, 20, 5, 3), (30, 10, 20)]


def test_compress_length_limit_is_strict():
    rows = [(k * 64, 64, 8 + k * 64, 0, 0) for k in range(256)]
    rows[-1] = (255 * 64, 63, 8 + 255 * 64, 0, 0)     # 16320 + 63 == 16383: not merged
    out = compress_rows(rows)
    assert [(o, l) for o, l, *_ in out] == [(0, 16320), (16320, 63)]
    zeroed = [(0, 10, 8, 1, 0), (10, 10, 8, 1, 0), (20, 5, 9, 1, 0)]
    assert compress_rows(zeroed) == [(0, 20, 8, 1, 0), (20, 5, 9, 1, 0)]


def _apply_model(model, rows):
    for o, l, m, z in rows:
        for k in range(l):
            model[o + k] = None if z else m + k


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 200), st.integers(1, 40), st.integers(8, 10 ** 6),
                          st.integers(0, 1)), max_size=40))
def test_insert_matches_sector_model(ops):
    idx = SegmentIndex()
    model = {}
    for o, l, m, z in ops:
        idx.insert(o, l, m, z)
        _apply_model(model, [(o, l, m, z)])
    got = {}
    rows = idx.rows()
    for a, b in zip(rows, rows[1:]):
        assert a[0] + a[1] <= b[0]
    _apply_model(got, [r[:4] for r in rows])
    assert got == model
    assert idx.block_count() == sum(1 for v in model.values() if v is not None)


def _layer(rng):
    rows, pos = [], rng.randrange(0, 20)
    while pos < 400:
        ln = rng.randrange(1, 30)
        rows.append((pos, ln, rng.randrange(8, 10 ** 5), rng.random() < 0.2, 0))
        pos += ln + rng.choice([0, 0, rng.randrange(1, 40)])
    return rows


def test_merge_matches_sector_model():
    rng = random.Random(7)
    for _ in range(60):
        layers = [_layer(rng) for _ in range(rng.randrange(1, 6))]   # top first
        merged = merge_indexes([SegmentIndex.from_rows(x) for x in layers])
        want = {}
        for slot in reversed(range(len(layers))):
            for o, l, m, z, _ in layers[slot]:
                for k in range(l):
                    want[o + k] = (slot, None if z else m + k)
        got = {}
        rows = merged.rows()
        for a, b in zip(rows, rows[1:]):
            assert a[0] + a[1] <= b[0]
        for o, l, m, z, t in rows:
            for k in range(l):
                got[o + k] = (t, None if z else m + k)
        assert got == want
        for _ in range(20):
            s, n = rng.randrange(0, 450), rng.randrange(1, 80)
            look = merged.lookup(s, n)
            assert all(s <= r[0] and r[0] + r[1] <= s + n for r in look)
            assert {o + k for o, l, *_ in look for k in range(l)} == \
                {x for x in want if s <= x < s + n}


def test_merge_size_limit():
    layers = [SegmentIndex.from_rows([(0, 1, 8), (10, 1, 8)]),
              SegmentIndex.from_rows([(5, 1, 8)])]
    assert len(merge_indexes(layers, max_size=3)) == 3
    try:
        merge_indexes(layers, max_size=2)
    except ValueError as e:
        assert "limit 2" in str(e)
    else:
        raise AssertionError("merge over the size limit was accepted")
