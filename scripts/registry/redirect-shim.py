#!/usr/bin/env python3
"""A read-only front for a loopback registry that redirects blob GETs to a presigned "CDN" URL,
as Docker Hub (to S3/Cloudflare) and ACR (to OSS) do.  Standard library only.

  redirect-shim.py --listen-port SP --cdn-port CP --registry http://127.0.0.1:P --storage DIR

Front (SP): ``GET /v2/<name>/blobs/<digest>`` -> HEAD at the registry with the client's
Authorization; 200 -> ``307 Location: http://127.0.0.1:CP/blobs/<digest>?expires=..&sig=..``;
otherwise the registry's own answer to the GET is relayed (401 challenge, 404).  Every other
request is relayed unchanged.
CDN (CP): single byte ranges (206 + Content-Range; 416 with Content-Length 0), 403 for a bad or
expired signature, and 400 when an Authorization header comes along (as S3 does).
"""
import argparse
import hashlib
import hmac
import http.client
import os
import re
import secrets
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

BLOB = re.compile(r"^/v2/(.+)/blobs/(sha256:[0-9a-f]{64})$")
KEY = secrets.token_bytes(32)
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"}


def signature(digest, expires):
    return hmac.new(KEY, f"{digest}|{expires}".encode(), hashlib.sha256).hexdigest()


class Front(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cfg = None

    def log_message(self, fmt, *args):
        sys.stderr.write("front: " + (fmt % args) + "\n")

    def upstream(self, method, drop=()):
        u = urlparse(self.cfg.registry)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=120)
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP and k.lower() not in drop}
        conn.request(method, self.path, headers=headers)
        return conn, conn.getresponse()

    def relay(self, method):
        conn, r = self.upstream(method)
        body = r.read() if method != "HEAD" else b""
        self.send_response(r.status, r.reason)
        for k, v in r.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", r.getheader("Content-Length", "0") if method == "HEAD"
                         else str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        conn.close()

    def do_HEAD(self):
        self.relay("HEAD")

    def do_GET(self):
        m = BLOB.match(urlparse(self.path).path)
        if not m:
            return self.relay("GET")
        conn, r = self.upstream("HEAD", drop=("range", "if-range"))
        r.read()
        conn.close()
        if r.status != 200:
            return self.relay("GET")
        expires = int(time.time()) + self.cfg.ttl
        digest = m.group(2)
        self.send_response(307, "Temporary Redirect")
        self.send_header("Location", f"http://127.0.0.1:{self.cfg.cdn_port}/blobs/{digest}"
                                     f"?expires={expires}&sig={signature(digest, expires)}")
        self.send_header("Content-Length", "0")
        self.end_headers()


class Cdn(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    cfg = None

    def log_message(self, fmt, *args):
        sys.stderr.write("cdn: " + (fmt % args) + "\n")

    def error(self, code, text):
        body = (text + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def serve(self, head):
        u = urlparse(self.path)
        q = parse_qs(u.query)
        m = re.match(r"^/blobs/sha256:([0-9a-f]{64})$", u.path)
        if not m:
            return self.error(404, "NoSuchKey")
        if self.headers.get("Authorization"):
            return self.error(400, "InvalidArgument: only one auth mechanism allowed")
        digest = "sha256:" + m.group(1)
        try:
            expires, sig = int(q["expires"][0]), q["sig"][0]
        except (KeyError, ValueError):
            return self.error(403, "AccessDenied: no signature")
        if expires < time.time() or not hmac.compare_digest(sig, signature(digest, expires)):
            return self.error(403, "AccessDenied: bad or expired signature")
        path = os.path.join(self.cfg.storage, "docker/registry/v2/blobs/sha256", m.group(1)[:2],
                            m.group(1), "data")
        if not os.path.exists(path):
            return self.error(404, "NoSuchKey")
        size = os.path.getsize(path)
        start, end, code = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            r = re.match(r"^bytes=(\d*)-(\d*)$", rng.strip())
            if not r or r.group(1) == r.group(2) == "":
                return self.error(416, "InvalidRange")
            if r.group(1) == "":
                start = max(0, size - int(r.group(2)))
            else:
                start = int(r.group(1))
                end = min(int(r.group(2)), size - 1) if r.group(2) else size - 1
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if head:
            return
        with open(path, "rb") as f:
            off, left = start, end - start + 1
            while left > 0:
                n = os.sendfile(self.wfile.fileno(), f.fileno(), off, min(left, 8 << 20))
                if n <= 0:
                    break
                off += n
                left -= n

    def do_GET(self):
        self.serve(False)

    def do_HEAD(self):
        self.serve(True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen-port", type=int, required=True)
    ap.add_argument("--cdn-port", type=int, required=True)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--storage", required=True)
    ap.add_argument("--ttl", type=int, default=600)
    a = ap.parse_args()
    Front.cfg = Cdn.cfg = a
    cdn = ThreadingHTTPServer(("127.0.0.1", a.cdn_port), Cdn)
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    ThreadingHTTPServer(("127.0.0.1", a.listen_port), Front).serve_forever()


if __name__ == "__main__":
    main()
