"""Secrets stay with their registry: a token earned at one registry is never sent to another
that answers with the same challenge, credentials never go from an https:// registry to a
plain-http token realm.  A real token registry plus capture servers of our own on loopback."""

import base64
import http.server
import json
import os
import pathlib
import ssl
import subprocess
import threading
import urllib.request

import pytest
from loguru import logger

from overlaybd.errors import RemoteError
from overlaybd.registry import RegistryBlob, RegistryContext
from tests.helpers.registry import SCRIPTS, harness, service_config

pytestmark = pytest.mark.registry
DIGEST = "sha256:" + "d" * 64


class Capture:
    """An HTTP(S) server on loopback that records every request's path and headers.  Blob
    paths answer 401 with ``challenge``; ``/token`` answers a token of its own."""

    def __init__(self, challenge="", tls_dir=None):
        self.challenge, self.seen = challenge, []
        cap = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                cap.seen.append((self.path, dict(self.headers)))
                if self.path.startswith("/token"):
                    code, body, extra = 200, json.dumps({"token": "capture-token"}).encode(), {}
                else:
                    code, body, extra = 401, b"{}", {"WWW-Authenticate": cap.challenge}
                self.send_response(code)
                for k, v in extra.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        scheme = "http"
        if tls_dir:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(os.path.join(tls_dir, "server.crt"), os.path.join(tls_dir, "server.key"))
            self.srv.socket = ctx.wrap_socket(self.srv.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.srv.server_address[1]}"
        threading.Thread(target=self.srv.serve_forever, args=(0.05,), daemon=True).start()

    def blob_url(self):
        return f"{self.url}/v2/t/r/blobs/{DIGEST}"

    def header_values(self):
        return [v for _, h in self.seen for v in h.values()]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def captures():
    made = []

    def make(*a, **kw):
        made.append(Capture(*a, **kw))
        return made[-1]
    yield make
    for c in made:
        c.stop()


def _challenge_of(url):
    try:
        urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-0"}), timeout=5)
    except urllib.error.HTTPError as e:
        return e.headers["WWW-Authenticate"]
    raise AssertionError("registry did not challenge")


def _token_requests(reg):
    return pathlib.Path(reg.dir, "token.log").read_text().count("GET /token")


@pytest.mark.parametrize("own_realm", [False, True])
def test_token_is_not_sent_to_another_registry_with_the_same_challenge(registry_factory, captures,
                                                                      tmp_path, own_realm):
    reg = registry_factory("token")
    data = os.urandom(100_000)
    url = reg.push(data)
    reg.cred_file(str(tmp_path / "cred.json"))
    os.chmod(tmp_path / "cred.json", 0o600)
    ctx = RegistryContext.from_service(service_config(tmp_path))
    assert RegistryBlob(url, ctx).pread(1000, 5) == data[5:1005]
    earned = [tok for tok, _ in ctx.resolver._tokens.values()]
    assert earned
    challenge = _challenge_of(url)                # realm, service and scope of the real one
    evil = captures(challenge)
    if own_realm:                                 # same service and scope, its own realm
        evil.challenge = challenge.replace(challenge.split('"')[1], evil.url + "/token")
    with pytest.raises(RemoteError) as ei:
        RegistryBlob(evil.blob_url(), ctx)
    assert "Authentication failed" in ei.value.reason
    assert evil.seen                              # it was asked ...
    sent = " ".join(evil.header_values())
    assert not any(tok in sent for tok in earned)  # ... but never got the other registry's token
    assert base64.b64encode(f"{reg.user}:{reg.password}".encode()).decode() not in sent
    if own_realm:                                 # it got a token of its own instead
        assert "Bearer capture-token" in sent
    # the registry that earned the token still gets it back: no new token request
    before = _token_requests(reg)
    assert RegistryBlob(url, ctx).pread(10, 0) == data[:10]
    ctx.resolver.invalidate(url)                  # re-resolve, token cache kept
    assert RegistryBlob(url, ctx).pread(10, 50) == data[50:60]
    assert _token_requests(reg) == before


@pytest.fixture(scope="module")
def tls_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    subprocess.run([harness.crypto_python(), str(SCRIPTS / "gen-certs.py"), str(d)], check=True)
    return str(d)


@pytest.mark.parametrize("registry_tls", [True, False])
def test_credentials_never_go_from_https_to_a_plain_http_realm(captures, tmp_path, tls_dir,
                                                               registry_tls):
    realm = captures()
    reg = captures(f'Bearer realm="{realm.url}/token",service="s",scope="repository:t/r:pull"',
                   tls_dir=tls_dir if registry_tls else None)
    secret = base64.b64encode(b"alice:s3cret-pw").decode()
    cred = tmp_path / "cred.json"
    cred.write_text(json.dumps({"auths": {reg.url.split("://")[1]: {"auth": secret}}}))
    os.chmod(cred, 0o600)
    svc = service_config(tmp_path)
    svc.cert.ca_file = os.path.join(tls_dir, "ca.crt")
    warned = []
    hid = logger.add(lambda m: warned.append(m.record["message"]), level="WARNING")
    try:
        for _ in range(2):
            with pytest.raises(RemoteError) as ei:
                RegistryBlob(reg.blob_url(), RegistryContext.from_service(svc))
    finally:
        logger.remove(hid)
    token_asks = [h for p, h in realm.seen if p.startswith("/token")]
    assert token_asks
    if registry_tls:
        assert all("Authorization" not in h for h in token_asks)
        assert ei.value.reason.endswith("Authentication failed (credentials withheld from "
                                        f"plain-http token realm {realm.url}/token)")
        assert len([m for m in warned if "plain http" in m]) == 2   # once per context (registry)
    else:                                         # http registry, http realm: the user's choice
        assert all(h.get("Authorization") == f"Basic {secret}" for h in token_asks)
