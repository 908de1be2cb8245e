"""Shared test settings.  In CI (CI set in the environment) a missing fixture fails the
test instead of skipping it: kernel and registry tests must run there."""

import json
import os
import pathlib

import pytest

DATA = pathlib.Path(__file__).parent / "data"
GOLDEN = DATA / "golden"
IN_CI = bool(os.environ.get("CI"))


def need(condition, why):
    """Skip (locally) or fail (in CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def say(request):
    """``say(line)``: write a line on the terminal past pytest's capture (shown with -q too),
    for results CI's output must hold (a kernel test's byte-exact read, a package's life)."""
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capman = request.config.pluginmanager.get_plugin("capturemanager")

    def say(line):
        if tr is None or capman is None:
            print(line, flush=True)
            return
        with capman.global_and_fixture_disabled():
            tr.ensure_newline()
            tr.write_line(line)
    return say


@pytest.fixture(scope="session")
def golden_manifest():
    with open(GOLDEN / "manifest.json") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def dist(tmp_path_factory):
    """The sdist and wheel of this checkout (tests/install_fixtures.py)."""
    from install_fixtures import build_dist
    return build_dist(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def installed(dist):
    """The service installed from ``dist.wheel`` by scripts/install-service.sh --root (cached)."""
    from install_fixtures import install_service
    return install_service(dist.wheel)


@pytest.fixture
def rw(tmp_path):
    """A writable 8 MiB disk (1 MiB of random content) served by the real daemon and inline
    engine over the fake kernel (tests/tcmu_fixtures.py); ``.content`` holds what it started with."""
    from tcmu_fixtures import Harness
    content = os.urandom(1 << 20)
    h = Harness(tmp_path, size=8 << 20, content=content)
    assert h.status == 0
    h.content = content
    yield h
    h.close()


@pytest.fixture
def ro(tmp_path):
    """The same, read-only, holding a repeating byte pattern."""
    from tcmu_fixtures import Harness
    content = bytes(range(256)) * 4096
    h = Harness(tmp_path, size=8 << 20, read_only=True, content=content)
    assert h.status == 0
    h.content = content
    yield h
    h.close()
