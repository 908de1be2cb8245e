"""What the service manager sees (overlaybd/service.py): sd_notify datagrams on a real socket,
and the OOM score of real worker processes started by a supervisor that systemd protects."""

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from overlaybd import service
from tests.helpers.tcmu import DaemonHarness


def _listener(addr):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(addr)
    s.settimeout(5)
    return s


def test_notify_sends_one_datagram_to_the_notify_socket(tmp_path, monkeypatch):
    with _listener(str(tmp_path / "notify")) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        assert service.notify("READY=1\nSTATUS=serving 0 device(s)")
        assert service.notify("STOPPING=1")
        assert s.recv(4096) == b"READY=1\nSTATUS=serving 0 device(s)"
        assert s.recv(4096) == b"STOPPING=1"


def test_notify_to_an_abstract_socket(monkeypatch):
    name = f"overlaybd-test-notify-{os.getpid()}"
    with _listener("\0" + name) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert service.notify("READY=1")
        assert s.recv(4096) == b"READY=1"


def test_notify_without_a_service_manager_does_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert service.notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))     # a socket nobody listens on
    assert service.notify("READY=1") is False


def test_daemon_tells_ready_once_serving_and_stopping_on_sigterm(tmp_path, monkeypatch):
    """The real daemon over the fake kernel (the real kernel: tests/vm/test_service_vm.py)."""
    h = DaemonHarness(tmp_path, content=b"q" * (1 << 20))
    stop = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM))
    with _listener(str(tmp_path / "notify")) as s:
        monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
        try:
            stop.start()
            assert h.daemon.run() == 0
        finally:
            stop.cancel()
            h.fk.close()
        assert s.recv(4096) == b"READY=1\nSTATUS=serving 1 device(s)"
        assert s.recv(4096) == b"STOPPING=1"


SUPERVISOR = textwrap.dedent("""
    import sys
    from overlaybd.workers import Engine
    with open("/proc/self/oom_score_adj", "w") as f:      # what OOMScoreAdjust=-999 does
        f.write(sys.argv[1])
    engine = Engine(workers=2, heartbeat_sec=5)
    engine.start()
    print(" ".join(map(str, engine.pool.pids())), flush=True)
    sys.stdin.read()                                        # until the test closes it
    sys.exit(any(engine.stop()))
""")


def _supervise(adj):
    p = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(adj)], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        scores = {pid: service.oom_score_adj(pid) for pid in pids}
        own = service.oom_score_adj(p.pid)
    finally:
        p.stdin.close()
        try:
            rc = p.wait(60)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            raise
    assert rc == 0 and len(pids) == 2
    return own, scores


def _may_lower_oom_scores():
    """CAP_SYS_RESOURCE (bit 24) in our effective set: containers often drop it."""
    with open("/proc/self/status") as f:
        eff = next(int(line.split()[1], 16) for line in f if line.startswith("CapEff:"))
    return bool(eff >> 24 & 1)


def test_workers_of_a_protected_supervisor_get_the_normal_score():
    if not _may_lower_oom_scores():     # tests/vm/test_service_vm.py checks it in the kernel
        pytest.skip("lowering an OOM score needs CAP_SYS_RESOURCE, which this host lacks")
    own, workers = _supervise(-999)
    assert own == -999
    assert list(workers.values()) == [0, 0]


@pytest.mark.parametrize("adj", [0, 300])
def test_workers_of_an_unprotected_supervisor_keep_its_score(adj):
    own, workers = _supervise(adj)
    assert own == adj and list(workers.values()) == [adj, adj]
