"""overlaybd-merge: flatten every layer of an image into one committed layer."""

import sys

from .. import lsmt
from ..image import open_image
from .common import make_main, parser
from .layerout import LayerOutput, add_layer_options

PROG = "overlaybd-merge"


def build_parser():
    p = parser(PROG, "Merge all layers of an image (config.v1.json) into a single committed\n"
               "layer (ZFile lz4 by default).  Reads through the image service, so remote\n"
               "layers work given --service_config_path.  As upstream, an existing output\n"
               "is overwritten in place (O_TRUNC: a symlink is followed, a device stays a\n"
               "device); a failed merge leaves no partial file behind.")
    p.add_argument("--service_config_path", default=None,
                   help="overlaybd.json (default /etc/overlaybd/overlaybd.json)")
    add_layer_options(p, compress_default=True)
    p.add_argument("--upload", default=None, help="(not supported: push the output yourself)")
    p.add_argument("config")
    p.add_argument("output")
    return p


def _main(a):
    if a.upload:
        raise SystemExit(f"{PROG}: --upload is not supported")
    img = open_image(a.config, a.service_config_path, write_result=False)
    try:
        if img.upper is not None:
            raise SystemExit(f"{PROG}: the image has an upper layer; commit it first")
        a.force = True      # upstream opens the output with O_TRUNC: written in place
        with LayerOutput(a.output, a, img.view.allocated_sectors() * 512,
                         overwrite_header=False, what=PROG) as out:
            lsmt.commit(img.view, out)
    finally:
        img.close()
    print("", file=sys.stderr)
    return 0


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
