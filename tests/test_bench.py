"""`make bench` (python -m bench) runs every benchmark to the end: each one is listed, takes an
argument list, and a crash in one does not stop the others.  The benchmarks themselves are not
run here (they time things; `make bench` does)."""

import importlib
import inspect
import pathlib
import sys
import types

import pytest

RUNNER = importlib.import_module("bench.__main__")
BENCH = pathlib.Path(RUNNER.__file__).parent


def test_every_benchmark_is_in_the_run_order():
    assert sorted(RUNNER.ORDER) == sorted(p.stem for p in BENCH.glob("*_bench.py"))


@pytest.mark.parametrize("name", RUNNER.ORDER)
def test_benchmark_main_takes_an_argument_list(name, capsys):
    mod = importlib.import_module(f"bench.{name}")
    inspect.signature(mod.main).bind([])
    with pytest.raises(SystemExit) as e:
        mod.main(["--help"])            # parsed from the list given, not from sys.argv
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: ")


def test_a_crashing_benchmark_does_not_stop_the_others(monkeypatch, capsys):
    ran = []

    def crash(argv):
        raise RuntimeError("boom")

    for name, fn in (("x_crash", crash), ("x_after", lambda argv: ran.append(argv))):
        monkeypatch.setitem(sys.modules, f"bench.{name}", types.SimpleNamespace(main=fn))
    assert RUNNER.main(["x_crash", "x_after"]) == 1
    assert ran == [[]]
    out, err = capsys.readouterr()
    assert "RuntimeError: boom" in err and "crashed: x_crash" in out
