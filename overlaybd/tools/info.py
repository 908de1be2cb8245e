"""overlaybd-info: what a layer blob (or a prefetch trace) is, as JSON."""

import json

from .. import detect, lsmt
from ..errors import FormatError, OverlaybdError
from ..io import LocalFile
from ..prefetch import trace as prefetch_trace
from .common import make_main, parser, say

PROG = "overlaybd-info"


def build_parser():
    p = parser(PROG, "Print what a blob is (tar / zfile / lsmt), its header and trailer fields,\n"
               "index entry count and virtual size, as JSON.  On a prefetch trace: its\n"
               "records and a summary (a corrupt trace is refused with the reason).  Exit\n"
               "status 1 when the file is none of these, or is a committed layer that does\n"
               "not open.")
    p.add_argument("file")
    p.add_argument("--summary", action="store_true",
                   help="for a trace: the summary only, without the records")
    return p


def _main(a):
    f = LocalFile(a.file)
    if prefetch_trace.is_binary(f.pread(4, 0)):
        f.close()
        say(json.dumps(prefetch_trace.describe(a.file, records=not a.summary), indent=2))
        return 0
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
