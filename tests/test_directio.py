"""ioEngine 1: local lower layers read with O_DIRECT (their pages stay out of the page cache),
byte-exact at any offset and length; tmpfs falls back with a warning; 3 is refused."""

import errno
import os
import pathlib
import random
import shutil
import subprocess
import tempfile

import pytest
from loguru import logger

from overlaybd.directio import DirectFile, open_local
from overlaybd.errors import ConfigError
from overlaybd.image import open_image
from overlaybd.image.settings import ServiceConfig
from overlaybd.io import LocalFile
from tests.helpers.env import GOLDEN
from tests.helpers.image import sha256_of, write_config

LAYERS = [f"layer{i}.lz4.zfile" for i in (1, 2, 3)]


def disk_dir():
    """A folder on a disk file system (/var/tmp; /tmp may be a tmpfs, whose files are page
    cache whatever the reader does)."""
    return pathlib.Path(tempfile.mkdtemp(prefix="overlaybd-directio.", dir="/var/tmp"))


def cached_pages(path):
    """Pages of ``path`` in the page cache (util-linux fincore)."""
    out = subprocess.run(["fincore", "--bytes", "--noheadings", "--output", "PAGES", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return int(out.split()[0])


def drop(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


@pytest.fixture
def layers():
    d = disk_dir()
    files = []
    for name in LAYERS:
        shutil.copyfile(GOLDEN / name, d / name)
        files.append(d / name)
    yield files
    shutil.rmtree(d, ignore_errors=True)


def svc_for(tmp_path, engine):
    return ServiceConfig.from_dict({"enableAudit": False, "ioEngine": engine, "cacheConfig": {
        "cacheType": "file", "cacheDir": str(tmp_path / "cache")}})


def test_unaligned_reads_match_positional_reads(layers):
    path = layers[0]
    plain, direct = LocalFile(path), DirectFile(path)
    rng = random.Random(5)
    try:
        for _ in range(300):
            off = rng.randrange(plain.size)
            n = rng.choice([1, 511, 4096, 4097, 65536, 1 << 20, (1 << 20) + 3000])
            assert direct.pread(n, off) == plain.pread(n, off), (off, n)
        assert direct.pread(100, plain.size - 10) == plain.pread(100, plain.size - 10)
        assert direct.pread(10, plain.size + 5) == b""
    finally:
        plain.close()
        direct.close()


@pytest.mark.parametrize("engine", [0, 1])
def test_golden_image_and_what_it_leaves_in_the_page_cache(tmp_path, layers, golden_manifest,
                                                            engine):
    for p in layers:
        drop(p)
    assert sum(cached_pages(p) for p in layers) == 0
    cfg = write_config(tmp_path / "config.v1.json", layers)
    img = open_image(str(cfg), svc_for(tmp_path, engine), write_result=False)
    try:
        assert sha256_of(img) == golden_manifest["merged"]["sha256"]
    finally:
        img.close()
    left = sum(cached_pages(p) for p in layers)
    if engine == 1:
        assert left == 0
    else:
        assert left >= sum(os.path.getsize(p) for p in layers) // 4096 // 2


def test_a_file_system_refusing_o_direct_falls_back_with_one_warning(monkeypatch):
    # tmpfs takes O_DIRECT since Linux 6.6 and no other refusing file system can be mounted
    # here, so the refusal (EINVAL at open, as older tmpfs and some FUSE file systems answer)
    # is injected at the one call that sees it
    path = str(GOLDEN / LAYERS[0])
    real_open = os.open

    def refusing_open(p, flags, *a):
        if flags & os.O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument", p)
        return real_open(p, flags, *a)
    monkeypatch.setattr(os, "open", refusing_open)
    lines = []
    hid = logger.add(lambda m: lines.append(m.record["message"]), level="WARNING")
    try:
        f = open_local(path, 1)
        assert type(f) is LocalFile
        assert f.pread(4096, 0) == (GOLDEN / LAYERS[0]).read_bytes()[:4096]
        f.close()
    finally:
        logger.remove(hid)
    assert len([x for x in lines if path in x and "O_DIRECT" in x]) == 1


def test_io_engine_values(tmp_path):
    with pytest.raises(ConfigError, match="ioEngine"):
        ServiceConfig.from_dict({"ioEngine": 3})
    assert type(open_local(GOLDEN / LAYERS[0], 0)) is LocalFile
    assert type(open_local(GOLDEN / LAYERS[0], 2)) is LocalFile
