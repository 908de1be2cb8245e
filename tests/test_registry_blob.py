"""Remote blobs against a real docker-registry on loopback, in every auth mode."""

import errno
import hashlib
import http.server
import os
import pathlib
import threading
import time
import urllib.error
import urllib.request
from typing import ClassVar

import pytest

from overlaybd.cache import open_remote_layer
from overlaybd.errors import RemoteError
from overlaybd.registry import RegistryBlob, RegistryContext, context_for

# the registry fixtures (registry_none, registry_factory, ...) are used by name
from tests.helpers.registry import service_config

pytestmark = pytest.mark.registry
MODES = ["registry_none", "registry_basic", "registry_token", "registry_redirect"]


def _lower(url, data):
    return {"digest": url.rsplit("/", 1)[1], "size": len(data)}


@pytest.mark.parametrize("mode", MODES)
def test_ranged_reads_return_the_pushed_bytes(mode, request, tmp_path):
    reg = request.getfixturevalue(mode)
    data = os.urandom(3 * 1024 * 1024 + 123)
    url = reg.push(data)
    reg.cred_file(str(tmp_path / "cred.json"))
    svc = service_config(tmp_path)
    blob = RegistryBlob(url, RegistryContext.from_service(svc))
    assert blob.size == len(data)
    for off, n in ((0, 1), (5, 4096), (1 << 20, 1 << 20), (len(data) - 10, 100), (len(data), 5)):
        assert blob.pread(n, off) == data[off:off + n]
    f = open_remote_layer(url, _lower(url, data), svc)
    try:
        assert f.size == len(data)
        assert f.pread(7000, 1_000_000) == data[1_000_000:1_007_000]
        assert f.pread(len(data), 0) == data
    finally:
        f.close()
    log = pathlib.Path(reg.dir, "registry.log").read_text()
    assert f'"{svc.user_agent}"' in log                     # userAgent is sent


@pytest.mark.parametrize("mode", ["registry_basic", "registry_token", "registry_redirect"])
def test_wrong_password_is_authentication_failed(mode, request, tmp_path):
    reg = request.getfixturevalue(mode)
    url = reg.push(os.urandom(10000))
    reg.cred_file(str(tmp_path / "cred.json"), password="wrong")
    svc = service_config(tmp_path)
    with pytest.raises(RemoteError) as ei:
        open_remote_layer(url, {}, svc)
    assert ei.value.reason == f"failed to open remote file {url}: Authentication failed"
    assert ei.value.errno == errno.EPERM
    assert not os.listdir(tmp_path / "cache")


@pytest.mark.parametrize("mode", ["registry_none", "registry_token", "registry_redirect"])
def test_missing_blob_is_no_such_file(mode, request, tmp_path):
    reg = request.getfixturevalue(mode)
    reg.cred_file(str(tmp_path / "cred.json"))
    url = f"{reg.front}/v2/t/r/blobs/sha256:{hashlib.sha256(b'never pushed').hexdigest()}"
    with pytest.raises(RemoteError) as ei:
        open_remote_layer(url, {}, service_config(tmp_path))
    assert ei.value.reason == f"failed to open remote file {url}: No such file or directory"
    assert ei.value.errno == errno.ENOENT


def test_registry_restarted_mid_read(registry_factory, tmp_path):
    reg = registry_factory("basic")
    data = os.urandom(2 * 1024 * 1024)
    url = reg.push(data)
    reg.cred_file(str(tmp_path / "cred.json"))
    svc = service_config(tmp_path)
    f = open_remote_layer(url, _lower(url, data), svc)
    assert f.pread(4096, 0) == data[:4096]
    reg.stop_registry()
    restarted = threading.Event()

    def later():
        time.sleep(1.0)
        reg.start_registry()
        restarted.set()
    t = threading.Thread(target=later)
    t.start()
    try:
        got = f.pread(len(data), 0)          # blocks in retries until the registry is back
    finally:
        t.join()
        f.close()
    assert restarted.is_set()
    assert got == data


def test_registry_down_gives_connection_failed_at_once(registry_factory, tmp_path):
    reg = registry_factory("none")
    url = reg.push(os.urandom(5000))
    reg.stop_registry()
    svc = service_config(tmp_path, registryTimeout=30.0)
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as ei:
        open_remote_layer(url, {}, svc)
    assert time.monotonic() - t0 < 10          # not the 30 s deadline: nobody listens
    host = url.split("/")[2]
    assert ei.value.reason == (f"failed to open remote file {url}: "
                               f"Connection failed (connection refused by {host})")


@pytest.mark.parametrize("auth", ["basic", "token"])
def test_credentials_rotated_while_open(auth, registry_factory, tmp_path):
    reg = registry_factory(auth)
    data = os.urandom(1024 * 1024)
    url = reg.push(data)
    cred = str(tmp_path / "cred.json")
    reg.cred_file(cred)
    svc = service_config(tmp_path, cacheConfig={"refillSize": 65536})
    blob = RegistryBlob(url, RegistryContext.from_service(svc))
    assert blob.pread(1000, 0) == data[:1000]
    reg.set_password("rotated-pw")
    reg.cred_file(cred, password="rotated-pw")
    blob.ctx.resolver.invalidate(url, drop_tokens=True)   # as if the 30 s token cache expired
    assert blob.pread(5000, 300_000) == data[300_000:305_000]
    # the old password really is dead
    reg.cred_file(cred, password="testpass")
    fresh = RegistryContext.from_service(svc)
    with pytest.raises(RemoteError) as ei:
        RegistryBlob(url, fresh)
    assert ei.value.errno == errno.EPERM


def test_basic_rotation_recovers_without_help(registry_factory, tmp_path):
    """The cached Basic header gets 401 after the registry restarts with a new password: the
    blob re-resolves, re-reads the credential file and carries on."""
    reg = registry_factory("basic")
    data = os.urandom(512 * 1024)
    url = reg.push(data)
    cred = str(tmp_path / "cred.json")
    reg.cred_file(cred)
    svc = service_config(tmp_path)
    f = open_remote_layer(url, _lower(url, data), svc)
    assert f.pread(100, 0) == data[:100]
    reg.cred_file(cred, password="new-pw")
    reg.set_password("new-pw")
    try:
        assert f.pread(len(data), 0) == data
    finally:
        f.close()


def test_forward_proxy_carries_blob_reads(registry_token, proxy, tmp_path):
    data = os.urandom(600 * 1024)
    url = registry_token.push(data, repo="p/q")
    registry_token.cred_file(str(tmp_path / "cred.json"))
    svc = service_config(tmp_path, proxyConfig={"httpProxy": proxy.url})
    f = open_remote_layer(url, _lower(url, data), svc)
    try:
        assert f.pread(len(data), 0) == data
    finally:
        f.close()
    log = pathlib.Path(proxy.log).read_text()
    assert log.count(f"GET {url} HTTP/1.1") >= 2          # size probe + data reads
    assert registry_token.env["token_url"].split("/token")[0] in log   # token fetched via proxy too


def test_no_proxy_bypasses_the_proxy(registry_none, proxy, tmp_path):
    data = os.urandom(10000)
    url = registry_none.push(data, repo="np/x")
    svc = service_config(tmp_path, proxyConfig={"httpProxy": proxy.url, "noProxy": "localhost,127.0.0.0/8"})
    blob = RegistryBlob(url, RegistryContext.from_service(svc))
    assert blob.pread(len(data), 0) == data
    assert "/v2/np/x/blobs/" not in pathlib.Path(proxy.log).read_text()


def test_context_is_shared_per_config(tmp_path):
    svc = service_config(tmp_path)
    assert context_for(svc) is context_for(service_config(tmp_path))


class _P2PHandler(http.server.BaseHTTPRequestHandler):
    """A stand-in P2P agent: GET /accelerator/<blob url> fetches <blob url> and relays it."""
    seen: ClassVar[list] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        target = self.path.split("/accelerator/", 1)[1]
        self.seen.append(target)
        hdrs = {k: v for k, v in self.headers.items() if k.lower() in ("range", "authorization")}
        try:
            with urllib.request.urlopen(urllib.request.Request(target, headers=hdrs)) as r:
                code, body, extra = r.status, r.read(), dict(r.headers)
        except urllib.error.HTTPError as e:
            code, body, extra = e.code, e.read(), dict(e.headers)
        self.send_response(code)
        for k in ("Content-Range", "WWW-Authenticate"):
            if extra.get(k):
                self.send_header(k, extra[k])
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_p2p_proxy_when_reachable_else_cache(registry_none, tmp_path):
    data = os.urandom(300_000)
    url = registry_none.push(data, repo="p2p/x")
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _P2PHandler)
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    try:
        addr = f"http://127.0.0.1:{srv.server_address[1]}/accelerator"
        svc = service_config(tmp_path, p2pConfig={"enable": True, "address": addr})
        f = open_remote_layer(url, _lower(url, data), svc)
        assert f.pread(len(data), 0) == data
        f.close()
        assert url in _P2PHandler.seen
        assert not (tmp_path / "cache").exists() or not os.listdir(tmp_path / "cache")   # no local cache
    finally:
        srv.shutdown()
        srv.server_close()
    _P2PHandler.seen.clear()
    f = open_remote_layer(url, _lower(url, data), svc)     # proxy gone: direct, through the cache
    assert f.pread(1000, 0) == data[:1000]
    f.close()
    assert _P2PHandler.seen == [] and os.listdir(tmp_path / "cache")


def test_tls_with_client_certificate_and_ca_file(registry_factory, tmp_path):
    reg = registry_factory("basic", tls=True)
    data = os.urandom(200_000)
    url = reg.push(data)
    assert url.startswith("https://127.0.0.1:")
    reg.cred_file(str(tmp_path / "cred.json"))
    env = reg.env
    svc = service_config(tmp_path, certConfig={"certFile": env["client_cert"], "keyFile": env["client_key"]})
    svc.cert.ca_file = env["ca"]                  # the test CA is not in the system bundle
    f = open_remote_layer(url, _lower(url, data), svc)
    try:
        assert f.pread(len(data), 0) == data
    finally:
        f.close()
    no_ca = service_config(tmp_path, certConfig={"certFile": env["client_cert"], "keyFile": env["client_key"]})
    t0 = time.monotonic()
    with pytest.raises(RemoteError) as ei:        # verification is on: unknown CA is refused
        RegistryBlob(url, RegistryContext.from_service(no_ca))
    assert time.monotonic() - t0 < 10             # a certificate does not fix itself: no retries
    host = url.split("/")[2]
    assert ei.value.reason == (f"failed to open remote file {url}: Connection failed (TLS with "
                               f"{host} failed: certificate verify failed: unable to get local "
                               "issuer certificate)")
    no_cert = service_config(tmp_path)
    no_cert.cert.ca_file = env["ca"]
    with pytest.raises(RemoteError) as ei:        # the registry wants a client certificate
        RegistryBlob(url, RegistryContext.from_service(no_cert))
    assert ei.value.reason.startswith(f"failed to open remote file {url}: Connection failed "
                                      f"(TLS with {host} failed: ")
    assert "alert" in ei.value.reason             # the server's alert, e.g. bad certificate


def test_registry_restarted_while_a_stream_of_reads_runs(registry_factory, tmp_path):
    reg = registry_factory("token")
    data = os.urandom(4 * 1024 * 1024)
    url = reg.push(data)
    reg.cred_file(str(tmp_path / "cred.json"))
    blob = RegistryBlob(url, RegistryContext.from_service(service_config(tmp_path)))
    got, progress, errors = bytearray(), threading.Event(), []

    def reader():
        try:
            for off in range(0, len(data), 64 * 1024):
                got.extend(blob.pread(64 * 1024, off))
                if off >= 1024 * 1024:
                    progress.set()
                time.sleep(0.005)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
            progress.set()
    t = threading.Thread(target=reader)
    t.start()
    assert progress.wait(30)
    reg.stop_registry()                    # mid-stream: the next reads hit a dead port
    time.sleep(1.0)
    reg.start_registry()
    t.join(60)
    assert errors == [] and bytes(got) == data
