"""A remote layer that cannot be reached says why -- refused, no such host, timeout (TLS: see
test_registry_blob) -- in the resultFile, the log and a tool's stderr, and a host nobody
answers for fails at once instead of after the 30 s deadline.  Real sockets on loopback."""

import json
import socket
import time

import pytest
from loguru import logger

from overlaybd.errors import RemoteError
from overlaybd.image import ImageOpenError, open_image
from overlaybd.image.settings import ServiceConfig
from overlaybd.registry import RegistryBlob, RegistryContext
from tests.helpers.image import write_config

DIGEST = "sha256:" + "c" * 64


def _svc(tmp_path, timeout=30.0):
    svc = ServiceConfig.from_dict({"enableAudit": False, "cacheConfig": {
        "cacheType": "file", "cacheDir": str(tmp_path / "cache")}})
    svc.registry_timeout = timeout
    return svc


@pytest.fixture
def closed_port():
    """A loopback port nobody listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_port():
    """A loopback port that accepts connections (the kernel's backlog) and never answers."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(16)
    yield s.getsockname()[1]
    s.close()


def _open_fails(url, svc):
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as ei:
        RegistryBlob(url, RegistryContext.from_service(svc))
    return ei.value, time.monotonic() - t0


def test_refused_connection_fails_at_once_and_says_so(tmp_path, closed_port):
    url = f"http://127.0.0.1:{closed_port}/v2/t/r/blobs/{DIGEST}"
    err, took = _open_fails(url, _svc(tmp_path))
    assert err.reason == (f"failed to open remote file {url}: "
                          f"Connection failed (connection refused by 127.0.0.1:{closed_port})")
    assert took < 10                     # a few quick tries, not the 30 s deadline


def test_unknown_host_fails_at_once_and_says_so(tmp_path):
    url = f"http://no-such-registry.invalid/v2/t/r/blobs/{DIGEST}"
    err, took = _open_fails(url, _svc(tmp_path))
    assert err.reason == (f"failed to open remote file {url}: "
                          "Connection failed (no such host: no-such-registry.invalid)")
    assert took < 10


def test_silent_server_times_out_and_says_so(tmp_path, silent_port):
    url = f"http://127.0.0.1:{silent_port}/v2/t/r/blobs/{DIGEST}"
    err, took = _open_fails(url, _svc(tmp_path, timeout=1.0))
    assert err.reason == (f"failed to open remote file {url}: "
                          f"Get meta timedout (no answer from 127.0.0.1:{silent_port} within 1 s)")
    assert took >= 1.0


def test_token_realm_refusing_names_the_realm(tmp_path, closed_port):
    """The registry answers, its token server does not: the cause names the realm's host."""
    import http.server
    import threading

    class Challenge(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://127.0.0.1:{closed_port}/token",'
                                                 'service="s",scope="repository:t/r:pull"')
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Challenge)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v2/t/r/blobs/{DIGEST}"
        err, took = _open_fails(url, _svc(tmp_path))
    finally:
        srv.shutdown()
        srv.server_close()
    assert err.reason.endswith(f"Connection failed (connection refused by 127.0.0.1:{closed_port})")
    assert took < 10


def test_result_file_and_log_keep_the_cause(tmp_path, closed_port):
    rf = tmp_path / "init-debug.log"
    cfg = write_config(tmp_path / "config.v1.json", [{"digest": DIGEST, "size": 4096}],
                       repoBlobUrl=f"http://127.0.0.1:{closed_port}/v2/t/r/blobs",
                       resultFile=str(rf))
    lines = []
    hid = logger.add(lambda m: lines.append(m.record["message"]), level="DEBUG")
    try:
        with pytest.raises(ImageOpenError):
            open_image(str(cfg), _svc(tmp_path))
    finally:
        logger.remove(hid)
    url = f"http://127.0.0.1:{closed_port}/v2/t/r/blobs/{DIGEST}"
    reason = (f"failed to open remote file {url}: "
              f"Connection failed (connection refused by 127.0.0.1:{closed_port})")
    assert rf.read_text() == f"failed:{reason}"
    # logged once with its cause; the caller (daemon or tool) reports it to the user once more
    assert len([x for x in lines if reason in x]) == 1


def test_tool_prints_the_cause(tmp_path, closed_port, capsys):
    from overlaybd.tools import export
    svc = tmp_path / "overlaybd.json"
    svc.write_text(json.dumps({"enableAudit": False, "cacheConfig": {
        "cacheType": "file", "cacheDir": str(tmp_path / "cache")}}))
    cfg = write_config(tmp_path / "config.v1.json", [{"digest": DIGEST}],
                       repoBlobUrl="http://no-such-registry.invalid/v2/t/r/blobs")
    try:
        assert export.main(["--service_config_path", str(svc), str(cfg), str(tmp_path / "out")]) == 1
    finally:
        logger.remove()
        logger.add(__import__("sys").stderr)
    assert "Connection failed (no such host: no-such-registry.invalid)" in capsys.readouterr().err
