"""The design documents name code that exists: every dotted name in backticks in
docs/design.md resolves (``tcmu.ring.Ring.walk`` under ``overlaybd``, or an importable module
such as ``urllib3``), as does every one in docs/engine.md that starts with a module of the
package (the others there are overlaybd.json keys), and every path in backticks exists.  A
rename that forgets the docs fails here."""

import importlib
import inspect
import pkgutil
import re

import pytest

from tests.helpers.env import REPO

DOCS = ["docs/design.md", "docs/engine.md"]
DOTTED = re.compile(r"^[A-Za-z_]\w*(\.\w+)+$")
FILE_SUFFIXES = {"json", "py", "md", "c", "sh", "service", "log", "so"}


def _backticked(doc):
    return sorted(set(re.findall(r"`([^`\n]+)`", (REPO / doc).read_text())))


def _resolve(name):
    """The object ``name`` denotes, under ``overlaybd`` first, else as an absolute name."""
    parts = name.split(".")
    for root in ("overlaybd.", ""):
        for cut in range(len(parts), 0, -1):
            try:
                obj = importlib.import_module(root + ".".join(parts[:cut]))
            except ImportError:
                continue
            try:
                for attr in parts[cut:]:
                    obj = getattr(obj, attr)
            except AttributeError:
                break
            return obj
    raise LookupError(name)


def _names(doc):
    names = [t for t in _backticked(doc)
             if DOTTED.match(t) and t.rsplit(".", 1)[1] not in FILE_SUFFIXES]
    if doc == "docs/design.md":
        return names
    modules = {m.name for m in pkgutil.iter_modules(importlib.import_module("overlaybd").__path__)}
    return [t for t in names if t.split(".")[0] in modules | {"overlaybd"}]


def _paths(doc):
    return [t for t in _backticked(doc) if "/" in t and " " not in t and not t.startswith("/")
            and "<" not in t and "|" not in t]


@pytest.mark.parametrize("doc", DOCS)
def test_named_code_exists(doc):
    names = _names(doc)
    missing = []
    for name in names:
        try:
            _resolve(name)
        except LookupError:
            missing.append(name)
    assert not missing, f"{doc} names code that does not exist: {missing}"
    assert doc != "docs/design.md" or len(names) > 80     # the READ walk names its steps


@pytest.mark.parametrize("doc", DOCS)
def test_named_paths_exist(doc):
    missing = [p for p in _paths(doc)
               if not (REPO / p.rstrip("/")).exists() and not (REPO / "overlaybd" / p.rstrip("/")).exists()]
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_abi_classes_have_written_docstrings():
    """Not the signature a dataclass makes up when the class has no docstring of its own."""
    import overlaybd.abi as abi
    for info in pkgutil.iter_modules(abi.__path__):
        mod = importlib.import_module(f"overlaybd.abi.{info.name}")
        for name, cls in inspect.getmembers(mod, inspect.isclass):
            if cls.__module__ == mod.__name__:
                doc = cls.__doc__ or ""
                assert doc and not doc.startswith(f"{name}("), f"{mod.__name__}.{name}"
