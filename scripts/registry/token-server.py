#!/usr/bin/env python3
"""A small token server for docker-registry's ``auth: token`` mode (loopback tests only).

  token-server.py gen-keys DIR      -> DIR/token.key (EC P-256 private key), DIR/token.crt
  token-server.py serve --port P --key K --cert C --issuer I --service S --passwd-file F [--ttl S]

``GET /token?service=S&scope=repository:NAME:pull[,push]`` with ``Authorization: Basic`` whose
user:password is a line of the passwd file (re-read on every request, so a password can be
rotated while the server runs) -> 200 ``{"token", "access_token", "expires_in", "issued_at"}``.
Wrong or missing credentials -> 401.  The token is an ES256 JWT whose ``kid`` is the libtrust
key id of the certificate's public key (what the registry looks up in ``rootcertbundle``).
Needs only the ``cryptography`` package.
"""
import argparse
import base64
import datetime
import hashlib
import json
import os
import sys
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID


def b64url(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def gen_keys(d):
    os.makedirs(d, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "overlaybd-test-token-signer")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(key, hashes.SHA256()))
    with open(os.path.join(d, "token.key"), "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    with open(os.path.join(d, "token.crt"), "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def key_id(pub):
    """libtrust key id: base32 of the first 240 bits of sha256(DER SPKI), in groups of 4."""
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    s = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i:i + 4] for i in range(0, len(s), 4))


def sign_jwt(key, kid, claims):
    head = b64url(json.dumps({"typ": "JWT", "alg": "ES256", "kid": kid}).encode())
    body = b64url(json.dumps(claims).encode())
    r, s = decode_dss_signature(key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256())))
    return f"{head}.{body}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


def check_password(passwd_file, user, password):
    try:
        with open(passwd_file) as f:
            lines = [ln.rstrip("\n") for ln in f]
    except OSError:
        return False
    return f"{user}:{password}" in lines


class Handler(BaseHTTPRequestHandler):
    cfg = None

    def log_message(self, fmt, *args):
        sys.stderr.write("token-server: " + (fmt % args) + "\n")

    def reply(self, code, body, headers=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        c = self.cfg
        u = urlparse(self.path)
        if u.path != "/token":
            return self.reply(404, {"errors": [{"code": "NOT_FOUND"}]})
        q = parse_qs(u.query)
        service = q.get("service", [c.service])[0]
        if service != c.service:
            return self.reply(400, {"errors": [{"code": "UNSUPPORTED", "message": "unknown service"}]})
        h = self.headers.get("Authorization", "")
        user = password = None
        if h.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(h[6:]).decode().partition(":")
            except ValueError:
                pass
        if user is None or not check_password(c.passwd_file, user, password):
            return self.reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]},
                              {"WWW-Authenticate": 'Basic realm="token"'})
        access = []
        for sc in " ".join(q.get("scope", [])).split():
            typ, _, rest = sc.partition(":")
            name, _, actions = rest.rpartition(":")
            if typ and name:
                access.append({"type": typ, "name": name, "actions": [a for a in actions.split(",") if a]})
        now = int(time.time())
        claims = {"iss": c.issuer, "sub": user, "aud": service, "exp": now + c.ttl, "nbf": now - 10,
                  "iat": now, "jti": uuid.uuid4().hex, "access": access}
        tok = sign_jwt(c.key, c.kid, claims)
        issued = datetime.datetime.fromtimestamp(now, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        self.reply(200, {"token": tok, "access_token": tok, "expires_in": c.ttl, "issued_at": issued})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("gen-keys").add_argument("dir")
    s = sub.add_parser("serve")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--key", required=True)
    s.add_argument("--cert", required=True)
    s.add_argument("--issuer", required=True)
    s.add_argument("--service", required=True)
    s.add_argument("--passwd-file", required=True)
    s.add_argument("--ttl", type=int, default=300)
    a = ap.parse_args()
    if a.cmd == "gen-keys":
        return gen_keys(a.dir)
    with open(a.key, "rb") as f:
        a.key = serialization.load_pem_private_key(f.read(), None)
    with open(a.cert, "rb") as f:
        a.kid = key_id(x509.load_pem_x509_certificate(f.read()).public_key())
    Handler.cfg = a
    ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
