"""The pytest fixtures every test directory shares (helpers the tests import by name live in
tests/helpers/).  In CI (CI set in the environment) a missing prerequisite fails the test
instead of skipping it (tests.helpers.env.need): kernel and registry tests must run there."""

import json
import os
import sys
import types

import pytest
from loguru import logger

from overlaybd import audit
from tests.helpers.env import GOLDEN, need
from tests.helpers.install import build_dist, install_service
from tests.helpers.metrics import run_served
from tests.helpers.registry import harness, have_prereqs, start_instance
from tests.helpers.tcmu import DaemonHarness


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
    """The sdist and wheel of this checkout (tests/helpers/install.py)."""
    return build_dist(tmp_path_factory.mktemp("dist"))


@pytest.fixture(scope="session")
def installed(dist):
    """The service installed from ``dist.wheel`` by scripts/install-service.sh --root (cached)."""
    return install_service(dist.wheel)


@pytest.fixture
def rw(tmp_path):
    """A writable 8 MiB disk (1 MiB of random content) served by the real daemon and inline
    engine over the fake kernel (tests/helpers/tcmu.py); ``.content`` holds what it started with."""
    content = os.urandom(1 << 20)
    h = DaemonHarness(tmp_path, size=8 << 20, content=content)
    assert h.status == 0
    h.content = content
    yield h
    h.close()


@pytest.fixture
def ro(tmp_path):
    """The same, read-only, holding a repeating byte pattern."""
    content = bytes(range(256)) * 4096
    h = DaemonHarness(tmp_path, size=8 << 20, read_only=True, content=content)
    assert h.status == 0
    h.content = content
    yield h
    h.close()


# A real docker-registry on loopback (tests/helpers/registry.py): one per auth mode for the
# session, and private instances for tests that stop, restart or re-key theirs.

def _session_instance(tmp_path_factory, auth, redirect=False):
    inst = start_instance(tmp_path_factory.mktemp(f"reg-{auth}{'-redir' if redirect else ''}"), auth, redirect)
    yield inst
    inst.stop()


@pytest.fixture(scope="session")
def registry_none(tmp_path_factory):
    yield from _session_instance(tmp_path_factory, "none")


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory):
    yield from _session_instance(tmp_path_factory, "basic")


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory):
    yield from _session_instance(tmp_path_factory, "token")


@pytest.fixture(scope="session")
def registry_redirect(tmp_path_factory):
    yield from _session_instance(tmp_path_factory, "token", redirect=True)


@pytest.fixture
def registry_factory(tmp_path):
    started = []

    def make(auth="none", redirect=False, tls=False):
        inst = start_instance(tmp_path / f"reg{len(started)}", auth, redirect, tls)
        started.append(inst)
        return inst
    yield make
    for inst in started:
        inst.stop()


@pytest.fixture
def proxy(tmp_path):
    """A tinyproxy forward proxy; ``.url`` and ``.log`` (its access log path)."""
    need(have_prereqs(), "tinyproxy not installed (scripts/registry/install.sh)")
    d = tmp_path / "proxy"
    info = harness.start_proxy(str(d))
    yield types.SimpleNamespace(url=info["proxy_url"], log=info["proxy_log"])
    harness.kill_pidfile(str(d), "proxy")


@pytest.fixture(scope="module")
def served_run(tmp_path_factory, registry_none, golden_manifest):
    """One registry-backed run of the real daemon with the metrics exporter, once per test
    module (tests/helpers/metrics.py says what it does and returns)."""
    d = tmp_path_factory.mktemp("served")
    rotate = audit.ROTATE_BYTES, audit.ROTATE_FILES
    audit.ROTATE_BYTES, audit.ROTATE_FILES = 16 << 10, 1000   # a rotated set, nothing dropped
    try:
        yield run_served(d, registry_none, golden_manifest)
    finally:
        audit.ROTATE_BYTES, audit.ROTATE_FILES = rotate
        audit.configure(False, "")
        logger.remove()
        logger.add(sys.stderr)
