"""Blob reads against a deliberately misbehaving HTTP server: never wrong bytes, errno mapping."""

import errno
import http.server
import os
import re
import threading
from typing import ClassVar

import pytest

from overlaybd.errors import RemoteError
from overlaybd.registry.blob import RegistryBlob, RegistryContext
from overlaybd.registry.client import HttpClient
from overlaybd.registry.creds import CredentialProvider

DATA = os.urandom(300_000)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    script: ClassVar[list] = []      # per-request behaviours, consumed in order; then "ok"
    log: ClassVar[list] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        mode = self.script.pop(0) if self.script else "ok"
        rng = self.headers.get("Range", "")
        self.log.append((mode, rng))
        m = re.match(r"bytes=(\d+)-(\d+)", rng)
        s, e = (int(m.group(1)), min(int(m.group(2)), len(DATA) - 1)) if m else (0, len(DATA) - 1)
        if mode.isdigit():
            body = b'{"errors":[]}'
            self.send_response(int(mode))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif mode == "full200":                  # ignores Range
            self._send(200, DATA, None)
        elif mode == "short":                    # promises more than it sends, then hangs up
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {s}-{e}/{len(DATA)}")
            self.send_header("Content-Length", str(e - s + 1))
            self.end_headers()
            self.wfile.write(DATA[s:s + (e - s + 1) // 2])
            self.close_connection = True
        elif mode == "wrongrange":               # 206 for another range
            self._send(206, DATA[s + 1:e + 2], f"bytes {s + 1}-{e + 1}/{len(DATA)}")
        elif mode == "lying416":                 # docker-registry: Content-Length = blob size
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(DATA)}")
            self.send_header("Content-Length", str(len(DATA)))
            self.end_headers()
            self.wfile.write(b"short")
            self.close_connection = True
        else:
            self._send(206, DATA[s:e + 1], f"bytes {s}-{e}/{len(DATA)}")

    def _send(self, code, body, crange):
        self.send_response(code)
        if crange:
            self.send_header("Content-Range", crange)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        pass                                     # clients hanging up on purpose


@pytest.fixture
def server():
    srv = QuietServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    Handler.script, Handler.log = [], []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v2/t/r/blobs/sha256:" + "0" * 64
    srv.shutdown()
    srv.server_close()


def ctx(timeout=5.0):
    return RegistryContext(HttpClient(timeout=timeout), CredentialProvider())


def test_misbehaviours_never_give_wrong_bytes(server):
    b = RegistryBlob(server, ctx())
    assert b.size == len(DATA)
    for mode, off, n in (("full200", 1000, 5000), ("short", 7, 100_000), ("wrongrange", 50, 10),
                         ("503", 123, 4567), ("500", 0, 1), ("429", 299_990, 100)):
        Handler.script = [mode]
        assert b.pread(n, off) == DATA[off:off + n], mode
    modes = [m for m, _ in Handler.log]
    assert modes[-1] == "ok" and "429" in modes[-3:]    # retried after the 429


def test_lying_416_does_not_hang_or_corrupt(server):
    b = RegistryBlob(server, ctx(timeout=1.0), size=len(DATA) + 10)   # size larger than truth
    Handler.script = ["lying416"] * 50
    with pytest.raises(RemoteError) as ei:
        b.pread(10, len(DATA) + 2)
    assert ei.value.errno == errno.EIO
    Handler.script = []
    assert b.pread(10, 20) == DATA[20:30]                # the pool still works


@pytest.mark.parametrize("status,err,reason", [("401", errno.EPERM, "Authentication failed"),
                                               ("403", errno.EPERM, "Authentication failed"),
                                               ("404", errno.ENOENT, "No such file or directory"),
                                               ("429", errno.EBUSY, "Too many requests"),
                                               ("500", errno.EIO, "Unexpected response")])
def test_open_errors_map_to_errno_and_reason(server, status, err, reason):
    Handler.script = [status] * 200
    with pytest.raises(RemoteError) as ei:
        RegistryBlob(server, ctx(timeout=2.0))      # the server answers in time, however loaded
    assert ei.value.errno == err
    assert ei.value.reason == f"failed to open remote file {server}: {reason}"


def test_size_from_content_length_when_range_ignored(server):
    Handler.script = ["full200"]
    assert RegistryBlob(server, ctx()).size == len(DATA)


def test_parse_challenge_keeps_commas_in_quotes():
    from overlaybd.registry.auth import parse_challenge
    scheme, p = parse_challenge('Bearer realm="https://auth.io/token",service="registry.io",'
                                'scope="repository:a/b:pull,push"')
    assert scheme == "bearer"
    assert p == {"realm": "https://auth.io/token", "service": "registry.io", "scope": "repository:a/b:pull,push"}
    assert parse_challenge('Basic realm="x"') == ("basic", {"realm": "x"})


def test_no_proxy_rules():
    from overlaybd.registry.client import HttpSettings
    s = HttpSettings(http_proxy="http://p:3128", https_proxy="http://ps:3128",
                     no_proxy="localhost, .internal.io,10.0.0.0/8,reg.io:5000")
    assert s.proxy_for("http://r.example/v2/x") == "http://p:3128"
    assert s.proxy_for("https://r.example/v2/x") == "http://ps:3128"
    for direct in ("http://localhost:5000/v2", "https://a.internal.io/v2", "http://internal.io/v2",
                   "http://10.1.2.3/v2", "http://reg.io:5000/v2"):
        assert s.proxy_for(direct) == "", direct
    assert s.proxy_for("http://reg.io:5001/v2") == "http://p:3128"
    assert HttpSettings(http_proxy="http://p:1", no_proxy="*").proxy_for("http://a/") == ""
