"""Typed access to JSON objects with errors that name the file and the field, and settings
tables: dataclasses whose fields declare their JSON key, legacy key, bounds and shipped value
once (:func:`setting`, :func:`section`), read by :func:`read` and written out by :func:`shipped`."""

import dataclasses
import json
from dataclasses import MISSING

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


# -- settings tables -----------------------------------------------------------------------------
_META = "overlaybd.json"
_UNSET = object()


@dataclasses.dataclass(frozen=True)
class Setting:
    """How one dataclass field is read from JSON (see :func:`setting`)."""

    key: str
    legacy: str | None = None
    minimum: object = None
    choices: tuple | None = None
    convert: object = None          # value -> value; a ValueError is the field's error
    encode: object = None           # the field's value as JSON (when it is not the same)
    json_type: type | None = None   # when the JSON type is not the field's
    always: bool = False            # read from the section whether or not it is selected
    selected_default: object = _UNSET     # the default when the section is selected
    shipped: bool = False           # in conf/overlaybd.json ...
    shipped_value: object = _UNSET     # ... with this value instead of the default


@dataclasses.dataclass(frozen=True)
class Section:
    """A field holding a sub-object (see :func:`section`)."""

    key: str
    selector: str | None = None


def setting(key, default=MISSING, *, factory=None, **how):
    """A dataclass field read from JSON key ``key`` (its default stated here, once).

    ``legacy``: the top-level key read instead when the section's selector is empty;
    ``minimum``/``choices``: bounds; ``convert``: value -> value (clamps, checks raising
    ValueError); ``json_type``/``encode``: when the JSON form differs from the field's;
    ``always``: read from the section even when it is not selected; ``selected_default``: the
    default inside a selected section when it differs; ``shipped``: in conf/overlaybd.json (with
    ``shipped_value`` when upstream's file ships another value than the default)."""
    meta = {_META: Setting(key, **how)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(key, cls, selector=None):
    """A field holding dataclass ``cls`` read from sub-object ``key``.  With ``selector``, the
    sub-object is used when its ``selector`` string is non-empty; otherwise its fields come
    from their ``legacy`` top-level keys (or their defaults)."""
    return dataclasses.field(default_factory=cls, metadata={_META: Section(key, selector)})


def _rows(cls):
    for f in dataclasses.fields(cls):
        m = f.metadata.get(_META)
        if m is not None:
            yield f, m


def _default(f):
    return f.default_factory() if f.default is MISSING else f.default


def read(cls, o, base=None, legacy_from=None, selector=None):
    """An instance of ``cls`` from Obj ``o``; missing fields take ``base``'s values (default:
    the declared defaults)."""
    selected = selector is None or bool(o.get(selector, str, ""))
    kw = {}
    for f, m in _rows(cls):
        if isinstance(m, Section):
            kw[f.name] = read(f.type, o.obj(m.key), legacy_from=o, selector=m.selector)
            continue
        default = getattr(base, f.name) if base is not None else _default(f)
        if selected or m.always:
            src, key = o, m.key
            if selected and m.selected_default is not _UNSET:
                default = m.selected_default
        elif m.legacy:
            src, key = legacy_from, m.legacy
        else:
            kw[f.name] = default
            continue
        typ = m.json_type or f.type
        v = src.get(key, typ, m.encode(default) if m.encode else default, minimum=m.minimum,
                    choices=m.choices)
        if m.convert is not None:
            try:
                v = m.convert(v)
            except ValueError as e:
                raise ConfigError(str(e), path=src.path, field=src.name(key)) from None
        kw[f.name] = v
    return cls(**kw)


def json_name(cls, attr):
    """The JSON key (dotted) of attribute path ``attr`` (``"cache.type"`` ->
    ``"cacheConfig.cacheType"``)."""
    head, _, rest = attr.partition(".")
    f = next(f for f, _ in _rows(cls) if f.name == head)
    m = f.metadata[_META]
    return f"{m.key}.{json_name(f.type, rest)}" if rest else m.key


def _as_json(m, v):
    if m.encode:
        return m.encode(v)
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v


def shipped(cls):
    """The settings of ``cls`` marked ``shipped``, as the JSON object conf/overlaybd.json
    holds."""
    out = {}
    for f, m in _rows(cls):
        if isinstance(m, Section):
            sub = shipped(f.type)
            if sub:
                out[m.key] = sub
        elif m.shipped:
            out[m.key] = _as_json(m, _default(f) if m.shipped_value is _UNSET else m.shipped_value)
    return out
