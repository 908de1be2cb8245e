"""overlaybd-info: what a layer blob is, as JSON."""

import json

from .. import detect, lsmt
from ..errors import OverlaybdError
from ..io import LocalFile
from .common import make_main, parser

PROG = "overlaybd-info"


def build_parser():
    p = parser(PROG, "Print what a blob is (tar / zfile / lsmt), its header and trailer fields,\n"
               "index entry count and virtual size, as JSON.")
    p.add_argument("file")
    return p


def _main(a):
    f = LocalFile(a.file)
    try:
        info = detect.describe(f)
        info["file"] = a.file
        if "lsmt" in info:
            inner = detect.open_blob(f)
            try:
                layer = lsmt.open_ro(inner)
                info["lsmt"]["index_entries"] = len(layer.index)
                info["lsmt"]["virtual_size"] = layer.virtual_size
                info["lsmt"]["sealed"] = True
            except OverlaybdError as e:
                info["lsmt"]["sealed"] = False
                info["lsmt"]["open_error"] = str(e)
        print(json.dumps(info, indent=2, default=str))
    finally:
        f.close()
    return 0


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
