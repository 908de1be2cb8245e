"""Acceleration layers (spec §11): an ordinary tar layer holding only the file ``trace``.

The snapshotter unpacks it like any layer into the last lower's ``dir``; with
``accelerationLayer: true`` the daemon drops that lower from the device and replays
``<dir>/trace``.  ``make_layer`` writes such a layer with the project's tar writer (the
one-file tar ``overlaybd-commit -t`` makes, member named ``trace``).
"""

from __future__ import annotations

from ..errors import OverlaybdError
from ..tar import TarWriter
from . import trace as tracefmt

TRACE_NAME = "trace"


def make_layer(trace_path, out_path) -> int:
    """Write the acceleration layer for the (valid, binary) trace at ``trace_path`` into
    ``out_path``; returns the trace's size.  A trace that fails validation is refused."""
    with open(trace_path, "rb") as f:
        data = f.read()
    if tracefmt.is_binary(data):
        tracefmt.decode(data, str(trace_path))
    elif not data:
        raise OverlaybdError("empty trace: record one first", path=str(trace_path))
    with open(out_path, "wb") as out:
        with TarWriter(out, 0o644, TRACE_NAME) as w:
            w.write(data)
    return len(data)
