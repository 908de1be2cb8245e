"""Reading overlaybd's log and audit files -- ours and upstream's, same line formats (spec §10).

Log:   ``YYYY/MM/DD HH:MM:SS[.uuuuuu]|LEVEL|th=<hex>|<file>:<line>|<function>:<message>``
Audit: ``YYYY/MM/DD HH:MM:SS[.uuuuuu]|AUDIT|th=<hex>|<event>[name=value][name=value]...``

A line that does not start with a timestamp continues the record before it (a traceback).
A path names a rotated set: ``f.N`` ... ``f.1``, ``f`` are read oldest first (also ``.gz``
members, as logrotate may leave them).  Messages this project writes for tools carry
``key=value`` fields (:func:`overlaybd.log.kv`), parsed by :func:`fields`.
"""

from __future__ import annotations

import datetime
import gzip
import json
import os
import re
import sys
from dataclasses import dataclass, field

_LINE = re.compile(r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)(?:\.(\d{1,6}))?\|([A-Z]+) *\|th=([0-9A-Fa-f]+)\|(.*)")
_SOURCE = re.compile(r"(.*?):(\d+)\|([^|]*?):(.*)", re.S)
_AUDIT = re.compile(r"([^\[\]|]+)((?:\[[^\]]*\])*)\s*")
_AUDIT_FIELD = re.compile(r"\[([^\]=]+)=([^\]]*)\]")
_KV = re.compile(r"(\w+)=(\"(?:[^\"\\]|\\.)*\"|\S+)")
_MEMBER = re.compile(r"\.(\d+)(\.gz)?$")


@dataclass
class LogRecord:
    """One parsed line of the overlaybd log or the audit log (overlaybd-logstat)."""

    time: datetime.datetime
    level: str                  # DEBUG, INFO, WARN, ERROR, FATAL, TEMP, AUDIT
    thread: str
    source: str = ""            # file:line (log lines)
    function: str = ""
    message: str = ""           # log: the message; audit: the event name
    fields: dict = field(default_factory=dict)   # audit: name -> value
    extra: list = field(default_factory=list)    # continuation lines
    file: str = ""


def parse_time(date: str, frac: str | None) -> datetime.datetime:
    t = datetime.datetime.strptime(date, "%Y/%m/%d %H:%M:%S")
    return t.replace(microsecond=int(frac.ljust(6, "0"))) if frac else t


def parse_line(line: str, file: str = "") -> LogRecord | None:
    """One record, or None if ``line`` does not start with a timestamp and level."""
    m = _LINE.fullmatch(line.rstrip("\r\n"))
    if not m:
        return None
    date, frac, level, th, rest = m.groups()
    rec = LogRecord(parse_time(date, frac), level, th, file=file)
    if level == "AUDIT":
        a = _AUDIT.fullmatch(rest)
        if a:
            rec.message = a.group(1)
            rec.fields = dict(_AUDIT_FIELD.findall(a.group(2)))
        else:
            rec.message = rest
        return rec
    s = _SOURCE.fullmatch(rest)
    if s:
        rec.source = f"{s.group(1)}:{s.group(2)}"
        rec.function, rec.message = s.group(3), s.group(4)
    else:
        rec.message = rest
    return rec


def fields(message: str) -> dict:
    """The ``key=value`` fields of a message (JSON-quoted values unquoted)."""
    out = {}
    for k, v in _KV.findall(message):
        if v.startswith('"'):
            try:
                v = json.loads(v)
            except ValueError:
                v = v.strip('"')
        out[k] = v
    return out


def rotated_set(path: str) -> list[str]:
    """The files of the rotated set ``path`` names, oldest first (just ``path`` if it is itself
    a numbered member, or not a file of a set)."""
    if _MEMBER.search(os.path.basename(path)) and os.path.exists(path):
        return [path]
    d, base = os.path.split(os.path.abspath(path))
    members = []
    try:
        names = os.listdir(d)
    except OSError:
        names = []
    for name in names:
        if name.startswith(base + "."):
            m = _MEMBER.fullmatch(name[len(base):])
            if m:
                members.append((int(m.group(1)), os.path.join(d, name)))
    out = [p for _, p in sorted(members, reverse=True)]
    if os.path.exists(path):
        out.append(path)
    return out


def _open(path):
    if path == "-":
        return sys.stdin
    if path.endswith(".gz"):
        return gzip.open(path, "rt", errors="replace")
    return open(path, errors="replace")


def read_records(paths, counts: dict | None = None):
    """Every record of the files (each path expanded to its rotated set), in file order.
    ``counts`` (if given) gets ``lines``, ``continuation`` and ``unparsed`` totals."""
    c = counts if counts is not None else {}
    for k in ("lines", "continuation", "unparsed"):
        c.setdefault(k, 0)
    for path in paths:
        for f in ([path] if path == "-" else rotated_set(path)):
            last = None
            with _open(f) as fh:
                for line in fh:
                    c["lines"] += 1
                    rec = parse_line(line, f)
                    if rec is not None:
                        if last is not None:
                            yield last
                        last = rec
                    elif last is not None and line.strip():
                        last.extra.append(line.rstrip("\n"))
                        c["continuation"] += 1
                    elif line.strip():
                        c["unparsed"] += 1
            if last is not None:
                yield last


_NORMALIZE = (
    (re.compile(r"\b[a-zA-Z][\w+.-]*://[^\s\"',()\[\]]+"), "<url>"),
    (re.compile(r"\bsha256:[0-9a-f]{64}\b"), "<digest>"),
    (re.compile(r"(?<![\w.])/[^\s\"',;()\[\]]+"), "<path>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{12,}\b"), "<hex>"),
    (re.compile(r"(?<![\w<])[-+]?\d+(?:\.\d+)?"), "<n>"),
)


def normalize(message: str) -> str:
    """A message with what varies between occurrences (URLs, digests, paths, numbers, hex ids)
    replaced by placeholders, for grouping."""
    for rx, repl in _NORMALIZE:
        message = rx.sub(repl, message)
    return message


_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_when(text: str, now: datetime.datetime | None = None) -> datetime.datetime:
    """``--since``/``--until``: ``YYYY/MM/DD[ HH:MM[:SS]]``, ISO ``YYYY-MM-DD[THH:MM[:SS]]``,
    or a time ago: ``90s``, ``15m``, ``2h``, ``1d`` (local time, as in the logs)."""
    t = text.strip()
    m = _RELATIVE.fullmatch(t)
    if m:
        now = now or datetime.datetime.now()
        return now - datetime.timedelta(seconds=float(m.group(1)) * _UNITS[m.group(2)])
    t = t.replace("/", "-").replace("T", " ")
    for fmt in ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M", "%Y-%m-%d"):
        try:
            return datetime.datetime.strptime(t, fmt)
        except ValueError:
            pass
    raise ValueError(f"not a time: {text!r} (YYYY/MM/DD HH:MM:SS, YYYY-MM-DDTHH:MM:SS, or 15m, 2h, 1d ago)")
