"""Audit log (spec §10.2), upstream's line format:

``YYYY/MM/DD HH:MM:SS.uuuuuu|AUDIT|th=<16 hex>|<event>[name=value][name=value]...``

Events written by this package: ``download`` (every registry read by the cache layer),
``bk_download`` (every background-download chunk), ``eviction`` (an eviction pass starts),
``file:pread`` (a local layer read of >= 10 ms).  A loguru sink writes the file, rotated at
10 MiB keeping 3 files (``f``, ``f.1``, ``f.2``).  Off when enableAudit is false or auditPath
is empty.
"""

import datetime
import os
import threading

from loguru import logger

ROTATE_BYTES = 10 << 20
ROTATE_FILES = 3

AUDIT_LEVEL = 1        # below TRACE: ordinary log sinks (DEBUG and up) never see audit lines

_lock = threading.Lock()
_state = {"path": None, "sink": None, "writer": None, "pid": None}


class RotatingWriter:
    """Append-only file, rotated like upstream's log files (``f`` -> ``f.1`` -> ``f.2``)."""

    def __init__(self, path, limit=None, keep=None):
        self.path = path
        self.limit, self.keep = limit or ROTATE_BYTES, keep or ROTATE_FILES
        self.lock = threading.Lock()
        self._open()

    def _open(self):
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, exist_ok=True)
        self.f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open
        os.chmod(self.path, 0o644)
        self.written = 0

    def write(self, message):
        with self.lock:
            self.f.write(message)
            self.f.flush()
            self.written += len(message)
            if self.written >= self.limit:
                self._rotate()

    def _rotate(self):
        self.f.close()
        for k in range(self.keep - 1, 0, -1):
            src = self.path if k == 1 else f"{self.path}.{k - 1}"
            if os.path.exists(src):
                os.replace(src, f"{self.path}.{k}")
        self._open()

    def close(self):
        with self.lock:
            self.f.close()


def _ensure_level():
    try:
        logger.level("AUDIT")
    except ValueError:
        logger.level("AUDIT", no=AUDIT_LEVEL)


def configure(enable, path):
    """Turn the audit sink on (to ``path``) or off.  Idempotent per path and process."""
    want = path if enable and path else None
    with _lock:
        if _state["path"] == want and _state["pid"] == os.getpid():
            return
        if _state["sink"] is not None:
            try:
                logger.remove(_state["sink"])
            except ValueError:
                pass
            _state["writer"].close()
        _state.update(path=None, sink=None, writer=None, pid=os.getpid())
        if want:
            w = RotatingWriter(want)
            _ensure_level()
            _state["sink"] = logger.add(w.write, format="{message}", level=AUDIT_LEVEL, enqueue=False,
                                        filter=lambda r: r["extra"].get("overlaybd_audit") is True)
            _state.update(path=want, writer=w)


def configure_from(svc):
    configure(bool(getattr(svc, "enable_audit", True)), getattr(svc, "audit_path", "") or "")


def enabled():
    return _state["path"] is not None and _state["pid"] == os.getpid()


def format_line(event, fields, now=None, thread_id=None):
    """One audit line (with trailing newline); ``fields`` is a sequence of (name, value)."""
    now = now or datetime.datetime.now()
    th = thread_id if thread_id is not None else threading.get_ident()
    body = "".join(f"[{k}={v}]" for k, v in fields)
    return f"{now:%Y/%m/%d %H:%M:%S}.{now.microsecond:06d}|AUDIT|th={th & (2**64 - 1):016X}|{event}{body}\n"


def event(name, *fields):
    """Write one audit line if auditing is on; ``fields`` are (name, value) pairs."""
    if not enabled():
        return
    logger.bind(overlaybd_audit=True).log("AUDIT", format_line(name, fields).rstrip("\n"))


def io_event(name, pathname, offset, size, seconds):
    """The common ``pathname/offset/size/latency(us)`` event."""
    if enabled():
        event(name, ("pathname", pathname), ("offset", offset), ("size", size),
              ("latency", int(seconds * 1e6)))
