"""Credential providers (spec §6.3): file, http(s) and uds modes.

Every call re-reads its source, so a rotated password takes effect on the next authentication.
Secrets are never logged: errors and log lines name the source, never a password.
"""

import base64
import binascii
import http.client
import json
import os
import socket
import ssl
import stat
import threading
from urllib.parse import urlsplit

from loguru import logger

Credentials = tuple  # (username, password); ("", "") means anonymous


def candidate_keys(url):
    """The keys a blob URL can match: host, host/ns, host/ns/repo (path after ``v2``, minus the
    trailing ``blobs/<digest>``).  Only http:// and https:// URLs have candidates."""
    u = urlsplit(url)
    if u.scheme not in ("http", "https") or not u.netloc:
        return []
    parts = [p for p in u.path.split("/") if p]
    if "v2" in parts:
        parts = parts[parts.index("v2") + 1:]
    parts = parts[:-2] if len(parts) >= 2 else []
    keys = [u.netloc]
    for p in parts:
        keys.append(keys[-1] + "/" + p)
    return keys


def match_auths(auths, url):
    """First entry of ``auths`` (in its order) whose key equals a candidate of ``url`` wins.

    In the winning entry ``auth`` (base64 "user:pass") is preferred; an entry whose decoded
    ``auth`` has no ``:`` or that lacks both ``username`` and ``password`` is skipped.
    Returns (user, password) or ("", "") when nothing matches.
    """
    if not isinstance(auths, dict):
        return "", ""
    cands = set(candidate_keys(url))
    for key, entry in auths.items():
        if key not in cands or not isinstance(entry, dict):
            continue
        auth = entry.get("auth")
        if isinstance(auth, str) and auth:
            try:
                user, sep, pw = base64.b64decode(auth, validate=False).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                continue
            if sep:
                return user, pw
            continue
        user, pw = entry.get("username"), entry.get("password")
        if isinstance(user, str) and isinstance(pw, str) and user and pw:
            return user, pw
    return "", ""


_exposed_lock = threading.Lock()
_exposed_warned = set()


def warn_if_exposed(path, st):
    """Warn (once per path in this process) when a credential file is readable by group or
    others: it holds registry passwords."""
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o044:
        return
    with _exposed_lock:
        if path in _exposed_warned:
            return
        _exposed_warned.add(path)
    who = " and ".join(w for bit, w in ((0o040, "group"), (0o004, "others")) if mode & bit)
    logger.warning("credential file {} is readable by {} (mode {:04o}); it holds registry "
                   "passwords: chmod 600 it", path, who, mode)


def _auths_of(doc):
    return doc.get("auths") if isinstance(doc, dict) else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, sock_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.sock_path = sock_path

    def connect(self):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(self.timeout)
        s.connect(self.sock_path)
        self.sock = s


class CredentialProvider:
    """``get(url) -> (user, password)`` for the configured mode.

    ``mode``: "file" (``path`` a docker-style JSON file), "http"/"https" (``path`` a URL
    queried with ``?remote_url=<url>``), "uds" (``path`` a Unix socket), or "" for none.
    """

    def __init__(self, mode="", path="", timeout=1, client_cert_path="", client_key_path="",
                 server_ca_path=""):
        self.mode, self.path, self.timeout = mode or "", path or "", timeout or 1
        self.client_cert, self.client_key, self.server_ca = client_cert_path, client_key_path, server_ca_path

    @classmethod
    def from_config(cls, cred):
        """Build from svc.credential (attributes mode, path, timeout, ...); None -> no creds."""
        if cred is None:
            return cls()
        g = lambda k, d="": getattr(cred, k, d) or d
        return cls(g("mode"), g("path"), g("timeout", 1), g("client_cert_path"), g("client_key_path"),
                   g("server_ca_path"))

    def check_file(self):
        """At start: warn now if the credential file is readable by others."""
        if self.mode == "file" and self.path:
            try:
                warn_if_exposed(self.path, os.stat(self.path))
            except OSError:
                pass                      # not there yet: checked when it is read

    def get(self, url):
        if not self.path or self.mode not in ("file", "http", "https", "uds"):
            return "", ""
        try:
            if self.mode == "file":
                with open(self.path, "rb") as f:
                    warn_if_exposed(self.path, os.fstat(f.fileno()))
                    auths = _auths_of(json.loads(f.read()))
            else:
                auths = self._remote(url)
        except (OSError, ValueError, http.client.HTTPException) as e:
            logger.warning("credentials from {} ({}) unavailable: {}", self.path, self.mode, type(e).__name__)
            return "", ""
        return match_auths(auths, url)

    def _remote(self, url):
        if self.mode == "uds":
            st = os.stat(self.path)                      # must exist
            if not os.access(self.path, os.W_OK):
                raise PermissionError(f"socket {self.path} not writable (mode {st.st_mode:o})")
            conn = _UnixHTTPConnection(self.path, self.timeout)
            target = f"/auth?remote_url={url}"
        else:
            u = urlsplit(self.path)
            if u.scheme == "https":
                ctx = ssl.create_default_context(cafile=self.server_ca or None)
                if self.server_ca:
                    ctx.load_verify_locations(self.server_ca)
                if self.client_cert:
                    ctx.load_cert_chain(self.client_cert, self.client_key or None)
                conn = http.client.HTTPSConnection(u.hostname, u.port, timeout=self.timeout, context=ctx)
            else:
                conn = http.client.HTTPConnection(u.hostname, u.port, timeout=self.timeout)
            sep = "&" if u.query else "?"
            target = (u.path or "/") + (("?" + u.query) if u.query else "") + f"{sep}remote_url={url}"
        try:
            conn.request("GET", target)
            r = conn.getresponse()
            body = r.read(1 << 20)
        finally:
            conn.close()
        if r.status != 200:
            raise ValueError(f"credential service answered {r.status}")
        doc = json.loads(body)
        if not isinstance(doc, dict) or doc.get("success") is not True:
            raise ValueError("credential service reported no success")
        return _auths_of(doc.get("data"))
