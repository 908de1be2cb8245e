"""Audit log (spec §10.2), upstream's line format:

``YYYY/MM/DD HH:MM:SS.uuuuuu|AUDIT|th=<16 hex>|<event>[name=value][name=value]...``

Events written by this package: ``download`` (every registry read by the cache layer),
``bk_download`` (every background-download chunk), ``eviction`` (an eviction pass starts),
``file:pread`` (a local layer read of >= 10 ms).  A loguru sink writes the file through
:class:`overlaybd.logfile.LogFile`, shared by the supervisor and its workers like the log:
rotated at 10 MiB keeping 3 files (``f``, ``f.1``, ``f.2``), created 0600 (``logConfig.fileMode``),
reopened on SIGHUP.  Off when enableAudit is false or auditPath is empty.  A forked worker keeps
the sink it inherited (the file follows the fork by itself).
"""

import datetime
import threading

from loguru import logger

from . import logfile

ROTATE_BYTES = 10 << 20
ROTATE_FILES = 3

AUDIT_LEVEL = 1        # below TRACE: ordinary log sinks (DEBUG and up) never see audit lines

_lock = threading.Lock()
_state = {"key": None, "sink": None, "writer": None}


def _ensure_level():
    try:
        logger.level("AUDIT")
    except ValueError:
        logger.level("AUDIT", no=AUDIT_LEVEL)


def configure(enable, path, mode=logfile.DEFAULT_MODE):
    """Turn the audit sink on (to ``path``, files created ``mode``) or off.  Idempotent."""
    want = (path, mode) if enable and path else None
    with _lock:
        if _state["key"] == want:
            return
        if _state["sink"] is not None:
            try:
                logger.remove(_state["sink"])
            except ValueError:
                pass
            _state["writer"].close()
        _state.update(key=None, sink=None, writer=None)
        if want:
            w = logfile.LogFile(path, ROTATE_BYTES, ROTATE_FILES, mode)
            _ensure_level()
            _state["sink"] = logger.add(w.write, format="{message}", level=AUDIT_LEVEL, enqueue=False,
                                        filter=lambda r: r["extra"].get("overlaybd_audit") is True)
            _state.update(key=want, writer=w)


def configure_from(svc):
    mode = getattr(getattr(svc, "log", None), "file_mode", logfile.DEFAULT_MODE)
    configure(bool(getattr(svc, "enable_audit", True)), getattr(svc, "audit_path", "") or "", mode)


def enabled():
    return _state["key"] is not None


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
