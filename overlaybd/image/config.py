"""The image config, ``config.v1.json`` (spec §4).

Unknown keys are ignored, missing keys take defaults, a wrong type is a ConfigError naming the
file and the field (upstream asserts; we refuse).  Relative paths are taken relative to the
config file's directory, so an image folder can be moved as a whole.
"""

import os
from dataclasses import dataclass, field

from ..abi.lsmt import MAX_LAYERS
from ..errors import ConfigError
from .schema import Obj, load_json
from .settings import DownloadConfig, parse_download

# Image fields whose feature is not implemented.  Refused ones could give wrong bytes if the
# image were served without them: the open fails with the field named.  The others only cost
# speed: the image is served and a warning says what is missing.  Rows: (JSON field, attribute,
# refused, what is missing).  A change that implements a feature deletes its rows (and
# README's Limitations line).
NOT_IMPLEMENTED = (
    ("lowers[].targetFile", "target_file", True, "TurboOCI layers are not implemented"),
    ("lowers[].targetDigest", "target_digest", True, "TurboOCI layers are not implemented"),
    ("lowers[].gzipIndex", "gzip_index", True, "TurboOCI layers are not implemented"),
    ("upper.target", "target", True, "TurboOCI writable layers are not implemented"),
    ("upper.gzipIndex", "gzip_index", True, "TurboOCI writable layers are not implemented"),
)


@dataclass
class Lower:
    file: str = ""
    dir: str = ""
    digest: str = ""
    size: int = 0
    target_file: str = ""
    target_digest: str = ""
    gzip_index: str = ""
    raw: dict = field(default_factory=dict, repr=False)

    def local_candidates(self):
        """Local paths tried in order (spec §4 layer resolution)."""
        out = []
        if self.file:
            out.append(self.file)
        if self.dir:
            out += [os.path.join(self.dir, n)
                    for n in ("overlaybd.commit", ".commit", "overlaybd.sealed")]
        return out


@dataclass
class Upper:
    index: str = ""
    data: str = ""
    target: str = ""
    gzip_index: str = ""


@dataclass
class ImageConfig:
    path: str
    repo_blob_url: str = ""
    lowers: list = field(default_factory=list)
    upper: Upper | None = None
    result_file: str = ""
    download: DownloadConfig | None = None
    acceleration_layer: bool = False
    acceleration_dir: str = ""      # the dropped last lower's dir: it holds the trace
    record_trace_path: str = ""

    def blob_url(self, lower):
        base = self.repo_blob_url
        return base + ("" if base.endswith("/") else "/") + lower.digest


def unimplemented_fields(cfg):
    """[(field, refused, what is missing)] for the fields of ``cfg`` that are set but not
    implemented (NOT_IMPLEMENTED), lowers named by index."""
    out = []
    for name, attr, refused, missing in NOT_IMPLEMENTED:
        head, _, key = name.partition(".")
        if head == "lowers[]":
            objs = [(f"lowers[{i}].{key}", lo) for i, lo in enumerate(cfg.lowers)]
        elif head == "upper" and key:
            objs = [(name, cfg.upper)] if cfg.upper is not None else []
        else:
            objs = [(name, cfg)]
        out += [(f, refused, missing) for f, o in objs if getattr(o, attr)]
    return out


def _abspath(base_dir, p):
    return p if not p or os.path.isabs(p) else os.path.normpath(os.path.join(base_dir, p))


def load_image_config(path, download_defaults=None):
    """Parse ``config.v1.json`` at ``path``.  ``download_defaults`` is the global download
    section, used where the image has none."""
    o = Obj(load_json(path), path)
    return parse_image_config(o, download_defaults)


def parse_image_config(o, download_defaults=None):
    base_dir = os.path.dirname(os.path.abspath(o.path))
    cfg = ImageConfig(path=o.path)
    cfg.repo_blob_url = o.get("repoBlobUrl", str, "")
    cfg.result_file = _abspath(base_dir, o.get("resultFile", str, ""))
    cfg.acceleration_layer = o.get("accelerationLayer", bool, False)
    cfg.record_trace_path = _abspath(base_dir, o.get("recordTracePath", str, ""))
    if cfg.acceleration_layer and cfg.record_trace_path:
        raise ConfigError("accelerationLayer and recordTracePath cannot be used together",
                          path=o.path, field="accelerationLayer")
    lowers = o.array("lowers")
    for i, item in enumerate(lowers):
        name = f"lowers[{i}]"
        if not isinstance(item, dict):
            raise ConfigError("must be an object", path=o.path, field=name)
        lo = Obj(item, o.path, f"{name}.")
        low = Lower(file=_abspath(base_dir, lo.get("file", str, "")),
                    dir=_abspath(base_dir, lo.get("dir", str, "")),
                    digest=lo.get("digest", str, ""),
                    size=lo.get("size", int, 0, minimum=0),
                    target_file=_abspath(base_dir, lo.get("targetFile", str, "")),
                    target_digest=lo.get("targetDigest", str, ""),
                    gzip_index=_abspath(base_dir, lo.get("gzipIndex", str, "")),
                    raw=item)
        if low.digest and not _valid_digest(low.digest):
            raise ConfigError(f"must look like sha256:<64 hex digits>, got {low.digest!r}",
                              path=o.path, field=f"{name}.digest")
        if not (low.file or low.dir or low.digest):
            raise ConfigError("needs at least one of file, dir, digest", path=o.path, field=name)
        cfg.lowers.append(low)
    if cfg.acceleration_layer and cfg.lowers:
        cfg.acceleration_dir = cfg.lowers.pop().dir     # it only carries the prefetch trace
    if len(cfg.lowers) > MAX_LAYERS:
        raise ConfigError(f"at most {MAX_LAYERS} layers, got {len(cfg.lowers)}",
                          path=o.path, field="lowers")
    up = o.obj("upper")
    index, data = up.get("index", str, ""), up.get("data", str, "")
    if index and data:
        cfg.upper = Upper(index=_abspath(base_dir, index), data=_abspath(base_dir, data),
                          target=_abspath(base_dir, up.get("target", str, "")),
                          gzip_index=_abspath(base_dir, up.get("gzipIndex", str, "")))
    elif index or data:
        raise ConfigError("upper needs both index and data", path=o.path,
                          field="upper.data" if index else "upper.index")
    if o.has("download"):
        cfg.download = parse_download(o.obj("download"), download_defaults)
    else:
        cfg.download = download_defaults
    if not cfg.lowers and cfg.upper is None:
        raise ConfigError("no lowers and no upper: nothing to open", path=o.path, field="lowers")
    return cfg


def _valid_digest(d):
    algo, _, hexpart = d.partition(":")
    if algo != "sha256" or len(hexpart) != 64:
        return False
    try:
        int(hexpart, 16)
    except ValueError:
        return False
    return True


def parse_cfgstring(cfg):
    """``overlaybd/<config path>[;<dev_id>]`` (or without the subtype) -> (path, dev_id)."""
    if cfg.startswith("overlaybd/"):
        cfg = cfg[len("overlaybd/"):]
    path, _, dev_id = cfg.partition(";")
    return path, dev_id
