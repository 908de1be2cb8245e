"""overlaybd-info: what a layer blob (or a prefetch trace) is, as JSON."""

import json

from .. import detect, lsmt
from ..errors import OverlaybdError
from ..io import LocalFile
from ..prefetch import trace as prefetch_trace
from .common import make_main, parser

PROG = "overlaybd-info"


def build_parser():
    p = parser(PROG, "Print what a blob is (tar / zfile / lsmt), its header and trailer fields,\n"
               "index entry count and virtual size, as JSON.  On a prefetch trace: its\n"
               "records and a summary (a corrupt trace is refused with the reason).")
    p.add_argument("file")
    p.add_argument("--summary", action="store_true",
                   help="for a trace: the summary only, without the records")
    return p


def _main(a):
    f = LocalFile(a.file)
    if prefetch_trace.is_binary(f.pread(4, 0)):
        f.close()
        print(json.dumps(prefetch_trace.describe(a.file, records=not a.summary), indent=2))
        return 0
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
