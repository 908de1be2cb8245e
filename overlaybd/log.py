"""Logging set-up: loguru writing upstream's Photon alog lines (spec §10.1).

``YYYY/MM/DD HH:MM:SS.uuuuuu|LEVEL|th=<16 hex>|<file>:<line>|<function>:<message>``, local
time; LEVEL is DEBUG, ``INFO ``, ``WARN ``, ERROR or FATAL.  A log file is a
:class:`overlaybd.logfile.LogFile` shared by the supervisor and its workers: append-only, created
0600 (``logConfig.fileMode``), rotated once the file itself exceeds ``logSizeMB`` (at least 1):
``f.(k)`` becomes ``f.(k+1)``, ``f`` becomes ``f.1``, the generation that would reach
``logRotateNum`` (1..30) is deleted.  An empty logPath logs to stdout.
"""

import json
import re
import sys
import traceback

from loguru import logger

from . import logfile

LEVEL_NAMES = {"DEBUG": "DEBUG", "INFO": "INFO ", "WARNING": "WARN ", "ERROR": "ERROR",
               "CRITICAL": "FATAL", "TRACE": "DEBUG", "SUCCESS": "INFO "}
LOGURU_LEVEL = {0: "DEBUG", 1: "INFO", 2: "WARNING", 3: "ERROR", 4: "CRITICAL"}


def format_line(record):
    """One alog line (with a trailing newline, and the traceback if any)."""
    t = record["time"]
    level = LEVEL_NAMES.get(record["level"].name, record["level"].name[:5].ljust(5))
    line = (f"{t:%Y/%m/%d %H:%M:%S}.{t.microsecond:06d}|{level}|th={record['thread'].id:016X}|"
            f"{record['file'].path}:{record['line']}|{record['function']}:{record['message']}\n")
    exc = record["exception"]
    if exc is not None and exc.type is not None:
        line += "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return line


_PLAIN = re.compile(r"[^\s\"=\\]+")


def kv(**fields):
    """``k=v k=v ...`` for a log message that tools parse (overlaybd-logstat): a value with
    blanks, quotes, ``=`` or nothing in it is written as a JSON string.  None is ``-``."""
    out = []
    for k, v in fields.items():
        v = "-" if v is None else str(v)
        out.append(f"{k}={v}" if _PLAIN.fullmatch(v) else f"{k}={json.dumps(v)}")
    return " ".join(out)


class _Stream:
    """Standard output looked up at each write: whoever replaced ``sys.stdout`` since logging
    was set up (a test's capture that has since closed) gets the line, not a closed file."""

    def __init__(self, name):
        self.name = name

    def write(self, message):
        stream = getattr(sys, self.name)
        stream.write(message)
        stream.flush()

    def close(self):
        pass


_sink = None


def setup_logging(path="", level=1, size_mb=10, rotate_num=3, file_mode=logfile.DEFAULT_MODE):
    """Send loguru's output to ``path`` (rotated) or to stdout; returns the sink object."""
    global _sink
    logger.remove()
    if _sink is not None:
        _sink.close()
        _sink = None
    _sink = (logfile.LogFile(path, max(1, size_mb) << 20, max(1, min(30, rotate_num)), file_mode)
             if path else _Stream("stdout"))
    sink = _sink
    logger.add(lambda m: sink.write(format_line(m.record)), level=LOGURU_LEVEL.get(level, "INFO"),
               format="{message}", colorize=False, catch=True)
    return sink


def setup_from_config(log_cfg):
    """``log_cfg`` is ServiceConfig.log (level, path, size_mb, rotate_num, file_mode)."""
    return setup_logging(log_cfg.path, log_cfg.level, log_cfg.size_mb, log_cfg.rotate_num,
                         log_cfg.file_mode)


def reopen(blocking=True):
    """SIGHUP: the log and the audit file open their paths again (in this process)."""
    logfile.reopen_all(blocking)
