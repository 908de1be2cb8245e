"""overlaybd-info: what a layer blob is, as JSON."""

import json

from .. import detect, lsmt
from ..errors import FormatError, OverlaybdError
from ..io import LocalFile
from .common import make_main, parser, say

PROG = "overlaybd-info"


def build_parser():
    p = parser(PROG, "Print what a blob is (tar / zfile / lsmt), its header and trailer fields,\n"
               "index entry count and virtual size, as JSON.  Exit status 1 when the file is\n"
               "none of these, or is a committed layer that does not open.")
    p.add_argument("file")
    return p


def _main(a):
    f = LocalFile(a.file)
    try:
        info = detect.describe(f)
        info["file"] = a.file
        if not info["kinds"]:
            raise FormatError(f"not an overlaybd blob: no tar, ZFile or LSMT header in its "
                              f"{f.size} bytes", path=a.file, field="magic")
        if "lsmt" in info:
            inner = detect.open_blob(f)
            try:
                layer = lsmt.open_ro(inner)
                info["lsmt"]["index_entries"] = len(layer.index)
                info["lsmt"]["virtual_size"] = layer.virtual_size
                info["lsmt"]["sealed"] = True
            except OverlaybdError as e:
                if info["lsmt"]["header"]["is_sealed"]:
                    raise       # a committed layer that does not open: truncated or corrupt
                info["lsmt"]["sealed"] = False      # a writable layer's data or index file
                info["lsmt"]["open_error"] = str(e)
        say(json.dumps(info, indent=2, default=str))
    finally:
        f.close()
    return 0


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
