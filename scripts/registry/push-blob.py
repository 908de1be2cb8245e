#!/usr/bin/env python3
"""Upload files as blobs to a registry through its HTTP API (standard library only).

  push-blob.py --registry http://127.0.0.1:P --repo t/r [--user U --password PW] FILE [FILE...]

For each FILE: HEAD the blob (skip if present), ``POST /v2/<repo>/blobs/uploads/`` -> 202
Location, then one ``PUT <location>?digest=sha256:<hex>`` with the whole body.  Basic and
Bearer challenges are answered (token scope ``repository:<repo>:pull,push``).  Prints one JSON
line per file: {"file", "digest", "size", "url"}.  ``push(...)`` is the library entry point.
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import sys
from urllib.parse import urlencode, urljoin, urlparse


class Session:
    def __init__(self, registry, repo, user=None, password=None, context=None):
        self.base, self.repo, self.context = registry.rstrip("/"), repo, context
        self.user, self.password = user, password
        self.auth = None

    def _basic(self):
        return "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()

    def _once(self, method, url, body, headers):
        u = urlparse(urljoin(self.base + "/", url))
        if u.scheme == "https":
            conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=300, context=self.context)
        else:
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
        h = dict(headers)
        if self.auth:
            h["Authorization"] = self.auth
        if hasattr(body, "seek"):
            body.seek(0)
        conn.request(method, u.path + ("?" + u.query if u.query else ""), body=body, headers=h)
        r = conn.getresponse()
        data = r.read()
        conn.close()
        return r, data

    def _authenticate(self, challenge):
        scheme, _, rest = (challenge or "").partition(" ")
        params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        if scheme.lower() == "basic":
            self.auth = self._basic()
            return
        if scheme.lower() != "bearer":
            raise SystemExit(f"unsupported challenge {challenge!r}")
        q = urlencode({"service": params.get("service", ""), "scope": f"repository:{self.repo}:pull,push"})
        t = urlparse(params["realm"])
        conn = http.client.HTTPConnection(t.hostname, t.port, timeout=60)
        conn.request("GET", f"{t.path}?{q}", headers={"Authorization": self._basic()} if self.user else {})
        r = conn.getresponse()
        data = r.read()
        conn.close()
        if r.status != 200:
            raise SystemExit(f"token server {params['realm']} answered {r.status}")
        j = json.loads(data)
        self.auth = "Bearer " + (j.get("token") or j["access_token"])

    def request(self, method, url, body=b"", headers=None, ok=(200, 201, 202)):
        headers = headers or {}
        r, data = self._once(method, url, body, headers)
        if r.status == 401:
            self._authenticate(r.getheader("WWW-Authenticate"))
            r, data = self._once(method, url, body, headers)
        if ok and r.status not in ok:
            raise SystemExit(f"{method} {url} -> {r.status}: {data[:300]!r}")
        return r


def file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return "sha256:" + h.hexdigest()


def push(registry, repo, path, user=None, password=None, context=None):
    """Upload the file at ``path`` as a blob of ``repo``; returns {"digest", "size", "url"}.
    ``context`` is an ssl.SSLContext for https registries."""
    s = Session(registry, repo, user, password, context)
    digest, size = file_digest(path), os.path.getsize(path)
    blob = f"/v2/{repo}/blobs/{digest}"
    if s.request("HEAD", blob, ok=None).status != 200:
        loc = s.request("POST", f"/v2/{repo}/blobs/uploads/", headers={"Content-Length": "0"},
                        ok=(202,)).getheader("Location")
        sep = "&" if "?" in loc else "?"
        with open(path, "rb") as f:
            s.request("PUT", f"{loc}{sep}{urlencode({'digest': digest})}", body=f, ok=(201,),
                      headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
    return {"file": path, "digest": digest, "size": size, "url": registry.rstrip("/") + blob}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--cacert", help="CA file for an https registry")
    ap.add_argument("--cert", help="client certificate (PEM)")
    ap.add_argument("--key", help="client key (PEM)")
    ap.add_argument("files", nargs="+")
    a = ap.parse_args()
    ctx = None
    if a.registry.startswith("https://"):
        import ssl
        ctx = ssl.create_default_context(cafile=a.cacert)
        if a.cert:
            ctx.load_cert_chain(a.cert, a.key)
    for p in a.files:
        print(json.dumps(push(a.registry, a.repo, p, a.user, a.password, ctx)))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
