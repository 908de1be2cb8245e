"""overlaybd-merge: flatten every layer of an image into one committed layer."""

import sys

from .. import lsmt
from ..image import open_image
from .common import make_main, parser, removed_on_error
from .layerout import LayerOutput, add_layer_options

PROG = "overlaybd-merge"


def build_parser():
    p = parser(PROG, "Merge all layers of an image (config.v1.json) into a single committed\n"
               "layer (ZFile lz4 by default).  Reads through the image service, so remote\n"
               "layers work given --service_config_path.")
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
        a.force = True              # upstream opens the output with O_TRUNC
        out = LayerOutput(a.output, a, img.view.allocated_sectors() * 512,
                          overwrite_header=False, what=PROG)
        with removed_on_error(a.output):
            try:
                lsmt.commit(img.view, out)
            finally:
                out.close()
    finally:
        img.close()
    print("", file=sys.stderr)
    return 0


main = make_main(PROG, build_parser, _main)


if __name__ == "__main__":
    raise SystemExit(main())
