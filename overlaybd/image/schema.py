"""Typed access to JSON objects with errors that name the file and the field."""

import json

from ..errors import ConfigError

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               dict: "an object", list: "an array"}


def load_json(path):
    """Read a JSON object from ``path``; any failure is a ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read: {e.strerror}", path=path, errno=e.errno) from e
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"not valid JSON: {e}", path=path) from e
    if not isinstance(doc, dict):
        raise ConfigError("top level must be a JSON object", path=path)
    return doc


class Obj:
    """A JSON object being read field by field; ``prefix`` is the dotted path to it."""

    def __init__(self, data, path, prefix=""):
        self.data = data
        self.path = path
        self.prefix = prefix

    def name(self, key):
        return f"{self.prefix}{key}"

    def has(self, key):
        return key in self.data and self.data[key] is not None

    def get(self, key, typ, default, *, minimum=None, choices=None):
        """Field ``key`` of type ``typ`` (int accepts integral numbers; float accepts ints)."""
        if not self.has(key):
            return default
        v = self.data[key]
        ok = isinstance(v, typ)
        if typ is int:
            ok = isinstance(v, int) and not isinstance(v, bool)
            if not ok and isinstance(v, float) and v.is_integer():
                v, ok = int(v), True
        elif typ is float:
            ok = isinstance(v, (int, float)) and not isinstance(v, bool)
            v = float(v) if ok else v
        if not ok:
            raise ConfigError(f"must be {_TYPE_NAMES.get(typ, typ.__name__)}, got {json.dumps(v)}",
                              path=self.path, field=self.name(key))
        if minimum is not None and v < minimum:
            raise ConfigError(f"must be >= {minimum}, got {v}", path=self.path, field=self.name(key))
        if choices is not None and v not in choices:
            raise ConfigError(f"must be one of {', '.join(map(repr, choices))}, got {v!r}",
                              path=self.path, field=self.name(key))
        return v

    def obj(self, key):
        """Sub-object ``key`` (missing -> empty)."""
        v = self.get(key, dict, {})
        return Obj(v, self.path, f"{self.name(key)}.")

    def array(self, key):
        return self.get(key, list, [])
