"""overlaybd-tcmu [path to overlaybd.json]: the TCMU daemon serving overlaybd devices."""

import argparse
import os
import resource
import sys

from loguru import logger

from .. import SERVICE_CONFIG as DEFAULT_CONFIG
from .. import __version__
from ..errors import OverlaybdError
from ..image import ImageOpener, load_image_config, open_image, write_result_file
from ..image.settings import load_service_config, warn_unimplemented
from ..log import setup_from_config
from ..metrics import exporter
from ..prefetch.session import PrefetchService
from ..registry import CredentialProvider
from ..tcmu.daemon import Daemon
from ..workers import Engine
from .common import add_version

NOFILE = 1048576
MODULE_DIR = "/sys/module/target_core_user"


def raise_nofile():
    """Raise RLIMIT_NOFILE to 1,048,576 where the hard limit allows (as upstream does)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in ((max(hard, NOFILE), max(hard, NOFILE)), (hard, hard)):
        if soft >= want[0]:
            return
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, want)
            return
        except (ValueError, OSError):
            continue


def image_backend(svc):
    """How the daemon opens images: (validate(config) -> backend, opener(config)).
    ``validate`` opens once in the supervisor to check the image and write the resultFile;
    ``opener`` is what each engine process calls, with the block-cache budget of
    ``workerConfig.cacheSizeMB``."""
    svc_path = svc.path if svc.path and os.path.exists(svc.path) else None
    cache_bytes = svc.worker.cache_size_mb << 20

    def validate(config_path):
        return open_image(config_path, svc)

    def opener(config_path):
        return ImageOpener(config_path, svc_path, cache_bytes)

    return validate, opener


def write_failure(config_path, reason):
    """Best effort: tell the resultFile of ``config_path`` why its device was refused."""
    try:
        result_file = load_image_config(config_path).result_file
    except OverlaybdError:
        return
    write_result_file(result_file, f"failed:{reason}")


def module_missing_message():
    return ("overlaybd-tcmu: the kernel module target_core_user is not loaded "
            f"({MODULE_DIR} does not exist).\n"
            "Load it with `modprobe target_core_user` (and `modprobe tcm_loop` for local "
            "SCSI disks); if modprobe cannot find it, install your distribution's kernel "
            "modules package (e.g. linux-modules-extra-$(uname -r) on Ubuntu).")


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="overlaybd-tcmu",
        description="Serve overlaybd images as SCSI disks through the kernel's TCMU "
                    "(target_core_user) backstore.  Devices are created through configfs "
                    "with dev_config=overlaybd/<config.v1.json>[;<id>].")
    add_version(p)
    p.add_argument("config", nargs="?", default=DEFAULT_CONFIG,
                   help=f"path to overlaybd.json (default {DEFAULT_CONFIG})")
    args = p.parse_args(argv)

    try:
        svc = load_service_config(None if args.config == DEFAULT_CONFIG else args.config)
    except OverlaybdError as e:
        print(f"overlaybd-tcmu: {e}", file=sys.stderr)
        return 1
    try:
        setup_from_config(svc.log)
    except OSError as e:
        print(f"overlaybd-tcmu: cannot open the log {svc.log.path}: {e.strerror}", file=sys.stderr)
        return 1
    warn_unimplemented(svc)             # once, here: workers inherit the credential check too
    CredentialProvider.from_config(svc.credential).check_file()
    if not os.path.isdir(MODULE_DIR):
        logger.error("target_core_user is not loaded")
        print(module_missing_message(), file=sys.stderr)
        return 1
    raise_nofile()

    w = svc.worker
    engine = Engine(workers=w.workers, chunk_size=w.chunk_size_kb << 10,
                    heartbeat_sec=w.heartbeat_sec)
    validate, opener = image_backend(svc)   # the block-cache budget (cacheSizeMB) rides these
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    logger.info("overlaybd-tcmu {} starting (package {}): config {}, {} worker(s)", __version__,
                package, svc.path, w.workers)
    daemon = Daemon(engine, validate, opener, prefetch=PrefetchService(svc), refused=write_failure)
    served = None
    if svc.exporter.enable:             # before the engine forks its workers: they count too
        ex = svc.exporter
        try:
            served = exporter.start(ex, daemon, w.workers)
        except OSError as e:
            msg = f"cannot serve metrics on {ex.address}:{ex.port}: {e.strerror or e}"
            logger.error("{}", msg)
            print(f"overlaybd-tcmu: {msg}", file=sys.stderr)
            return 1
    try:
        return daemon.run()
    except OverlaybdError as e:
        logger.error("{}", e)
        print(f"overlaybd-tcmu: {e}", file=sys.stderr)
        return 1
    finally:
        if served is not None:
            served.stop()


if __name__ == "__main__":
    sys.exit(main())
