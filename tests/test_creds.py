"""Credential matching (spec §6.3) and providers: file, http, uds.  No registry needed."""

import base64
import http.server
import json
import os
import socketserver
import threading
from typing import ClassVar

from overlaybd.registry.creds import CredentialProvider, candidate_keys, match_auths

URL = "https://reg.io/v2/ns/app/blobs/sha256:" + "ab" * 32


def b64(s):
    return base64.b64encode(s.encode()).decode()


def test_candidates_are_host_then_namespaces_without_blobs_and_digest():
    assert candidate_keys(URL) == ["reg.io", "reg.io/ns", "reg.io/ns/app"]
    assert candidate_keys("http://h:5000/v2/a/b/c/blobs/sha256:00") == ["h:5000", "h:5000/a", "h:5000/a/b",
                                                                          "h:5000/a/b/c"]
    assert candidate_keys("ftp://reg.io/v2/ns/app/blobs/x") == []


def test_first_match_in_file_order_not_longest_prefix():
    auths = {"reg.io/ns/app": {"auth": b64("repo:1")}, "reg.io": {"auth": b64("host:2")}}
    assert match_auths(auths, URL) == ("repo", "1")
    auths = {"reg.io": {"auth": b64("host:2")}, "reg.io/ns/app": {"auth": b64("repo:1")}}
    assert match_auths(auths, URL) == ("host", "2")
    auths = {"other.io": {"auth": b64("x:y")}, "reg.io/ns": {"username": "ns", "password": "3"}}
    assert match_auths(auths, URL) == ("ns", "3")


def test_auth_beats_username_password_and_bad_auth_is_skipped():
    auths = {"reg.io": {"auth": b64("a:b"), "username": "u", "password": "p"}}
    assert match_auths(auths, URL) == ("a", "b")
    auths = {"reg.io": {"auth": b64("nocolon")}, "reg.io/ns": {"auth": b64("ok:pw:with:colons")}}
    assert match_auths(auths, URL) == ("ok", "pw:with:colons")


def test_non_matching_keys():
    auths = {"https://reg.io": {"auth": b64("a:b")}, "reg.io/n": {"auth": b64("c:d")},
             "reg.io/ns/app/blobs": {"auth": b64("e:f")}, "reg.io/ns/": {"auth": b64("g:h")}}
    assert match_auths(auths, URL) == ("", "")
    assert match_auths({"reg.io": {"username": "only-user"}}, URL) == ("", "")
    assert match_auths(None, URL) == ("", "")


def test_file_mode_rereads_the_file_and_survives_garbage(tmp_path):
    p = tmp_path / "cred.json"
    prov = CredentialProvider("file", str(p))
    assert prov.get(URL) == ("", "")                     # missing file: anonymous
    p.write_text(json.dumps({"auths": {"reg.io": {"auth": b64("u:1")}}}))
    assert prov.get(URL) == ("u", "1")
    p.write_text(json.dumps({"auths": {"reg.io": {"auth": b64("u:2")}}}))
    assert prov.get(URL) == ("u", "2")                   # rotated: re-read
    p.write_text("{not json")
    assert prov.get(URL) == ("", "")
    assert CredentialProvider("bogus", str(p)).get(URL) == ("", "")
    assert CredentialProvider("file", "").get(URL) == ("", "")


def test_secrets_never_logged(tmp_path, capfd):
    from loguru import logger
    sink = []
    hid = logger.add(sink.append, level=0)
    try:
        p = tmp_path / "cred.json"
        p.write_text('{"auths": {"reg.io": {"auth": "' + b64("user:s3cr3t-pw") + '"}} garbage')
        CredentialProvider("file", str(p)).get(URL)
    finally:
        logger.remove(hid)
    out = "".join(map(str, sink)) + "".join(capfd.readouterr())
    assert "s3cr3t" not in out and b64("user:s3cr3t-pw") not in out
    assert str(p) in out


class _CredHandler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list] = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        self.seen.append(self.path)
        body = json.dumps({"traceId": "t", "success": "fail" not in self.path,
                           "data": {"auths": {"reg.io/ns": {"username": "svc", "password": "pw"}}}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_http_mode_passes_remote_url_unescaped():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _CredHandler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{srv.server_address[1]}/creds"
        assert CredentialProvider("http", base, timeout=2).get(URL) == ("svc", "pw")
        assert _CredHandler.seen[-1] == f"/creds?remote_url={URL}"
        assert CredentialProvider("http", base + "/fail", timeout=2).get(URL) == ("", "")
        dead = f"http://127.0.0.1:{srv.server_address[1] + 1 if srv.server_address[1] < 65535 else 1}/x"
        assert CredentialProvider("http", dead, timeout=1).get(URL) == ("", "")
    finally:
        srv.shutdown()


def test_uds_mode(tmp_path):
    sock = str(tmp_path / "cred.sock")

    class UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
        daemon_threads = True

    class H(_CredHandler):
        def address_string(self):
            return "uds"
    srv = UnixServer(sock, H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        assert CredentialProvider("uds", sock, timeout=2).get(URL) == ("svc", "pw")
        assert _CredHandler.seen[-1] == f"/auth?remote_url={URL}"
        assert CredentialProvider("uds", str(tmp_path / "missing.sock")).get(URL) == ("", "")
    finally:
        srv.shutdown()
        os.unlink(sock)
