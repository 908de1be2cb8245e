"""Logging set-up: loguru writing upstream's Photon alog lines (spec §10.1).

``YYYY/MM/DD HH:MM:SS.uuuuuu|LEVEL|th=<16 hex>|<file>:<line>|<function>:<message>``, local
time; LEVEL is DEBUG, ``INFO ``, ``WARN ``, ERROR or FATAL.  A log file is opened append-only
(0644) and rotated when the bytes written since opening exceed ``logSizeMB``: ``f.(k)`` becomes
``f.(k+1)``, ``f`` becomes ``f.1``, the generation that would reach ``logRotateNum`` is deleted
(at most ``logRotateNum`` files in all).  An empty logPath logs to stdout.
"""

import os
import sys
import threading

from loguru import logger

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
        import traceback
        line += "".join(traceback.format_exception(exc.type, exc.value, exc.traceback))
    return line


class RotatingFile:
    """An append-only log file with upstream's size rotation and generation naming."""

    def __init__(self, path, max_bytes=10 << 20, max_files=3):
        self.path = path
        self.max_bytes = max(1 << 20, max_bytes)
        self.max_files = max(1, min(30, max_files))
        self.lock = threading.Lock()
        self.fd = -1
        self._open()

    def _open(self):
        d = os.path.dirname(self.path)
        if d:
            os.makedirs(d, exist_ok=True)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        self.written = 0

    def write(self, message):
        data = (message if isinstance(message, str) else str(message)).encode()
        with self.lock:
            os.write(self.fd, data)
            self.written += len(data)
            if self.written > self.max_bytes:
                self._rotate()

    def _rotate(self):
        os.close(self.fd)
        p, n = self.path, self.max_files
        if n == 1:
            os.unlink(p)
        else:
            if os.path.exists(f"{p}.{n - 1}"):
                os.unlink(f"{p}.{n - 1}")
            for k in range(n - 2, 0, -1):
                if os.path.exists(f"{p}.{k}"):
                    os.rename(f"{p}.{k}", f"{p}.{k + 1}")
            os.rename(p, f"{p}.1")
        self._open()

    def reopen(self):
        """Close and reopen the file (after an external rotation: SIGHUP)."""
        with self.lock:
            os.close(self.fd)
            self._open()

    def close(self):
        with self.lock:
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


class _Stream:
    def __init__(self, stream):
        self.stream = stream

    def write(self, message):
        self.stream.write(message)
        self.stream.flush()

    def reopen(self):
        pass

    def close(self):
        pass


_sink = None


def setup_logging(path="", level=1, size_mb=10, rotate_num=3):
    """Send loguru's output to ``path`` (rotated) or to stdout; returns the sink object."""
    global _sink
    logger.remove()
    if _sink is not None:
        _sink.close()
    _sink = RotatingFile(path, size_mb << 20, rotate_num) if path else _Stream(sys.stdout)
    sink = _sink
    logger.add(lambda m: sink.write(format_line(m.record)), level=LOGURU_LEVEL.get(level, "INFO"),
               format="{message}", colorize=False, catch=True)
    return sink


def setup_from_config(log_cfg):
    """``log_cfg`` is ServiceConfig.log (level, path, size_mb, rotate_num)."""
    return setup_logging(log_cfg.path, log_cfg.level, log_cfg.size_mb, log_cfg.rotate_num)


def reopen():
    """Reopen the log file (SIGHUP)."""
    if _sink is not None:
        _sink.reopen()
