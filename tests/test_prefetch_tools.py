"""Tools around traces: overlaybd-info on a trace, acceleration layers made with the
project's tar writer."""

import json
import subprocess
import tarfile

import pytest

from overlaybd.errors import OverlaybdError
from overlaybd.prefetch import accel
from overlaybd.prefetch import trace as tr
from overlaybd.tools import info

RECS = [tr.Record(b"R", 0, 4096, 0), tr.Record(b"R", 1, 1 << 20, 5 << 20),
        tr.Record(b"R", 1, 512, 1 << 30)]


@pytest.fixture
def trace_file(tmp_path):
    p = tmp_path / "trace"
    p.write_bytes(tr.encode(RECS))
    return p


def test_info_prints_records_and_summary(trace_file, capsys):
    assert info.main([str(trace_file)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kinds"] == ["trace"] and out["size"] == 24 + 72
    assert out["records"] == [{"op": "R", "layer": 0, "count": 4096, "offset": 0},
                              {"op": "R", "layer": 1, "count": 1 << 20, "offset": 5 << 20},
                              {"op": "R", "layer": 1, "count": 512, "offset": 1 << 30}]
    assert out["summary"]["records"] == 3
    assert out["summary"]["layers"]["1"] == {"records": 2, "bytes": (1 << 20) + 512,
                                             "min_offset": 5 << 20, "max_end": (1 << 30) + 512}
    assert info.main(["--summary", str(trace_file)]) == 0
    assert "records" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("damage,reason", [(lambda d: d[:-1], "size mismatch"),
                                           (lambda d: d[:50] + bytes([d[50] ^ 4]) + d[51:],
                                            "checksum mismatch")])
def test_info_refuses_a_corrupt_trace_with_the_reason(trace_file, capsys, damage, reason):
    trace_file.write_bytes(damage(trace_file.read_bytes()))
    assert info.main([str(trace_file)]) == 1
    err = capsys.readouterr().err
    assert str(trace_file) in err and reason in err


def test_acceleration_layer_holds_only_the_trace(trace_file, tmp_path):
    out = tmp_path / "accel.tar"
    assert accel.make_layer(trace_file, out) == trace_file.stat().st_size
    with tarfile.open(out) as t:
        [m] = t.getmembers()
        assert m.name == "trace" and m.isfile()
        assert t.extractfile(m).read() == trace_file.read_bytes()
    d = tmp_path / "x"
    d.mkdir()
    subprocess.run(["tar", "-xf", str(out), "-C", str(d)], check=True)   # GNU tar too
    assert sorted(p.name for p in d.iterdir()) == ["trace"]
    assert (d / "trace").read_bytes() == trace_file.read_bytes()


def test_acceleration_layer_refuses_bad_or_empty_traces(trace_file, tmp_path):
    trace_file.write_bytes(trace_file.read_bytes()[:-3])
    with pytest.raises(tr.TraceError, match="size mismatch"):
        accel.make_layer(trace_file, tmp_path / "a.tar")
    trace_file.write_bytes(b"")
    with pytest.raises(OverlaybdError, match="empty trace"):
        accel.make_layer(trace_file, tmp_path / "a.tar")
