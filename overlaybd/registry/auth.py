"""Blob URL resolution (spec §6.2): challenge -> Bearer token or Basic -> probe -> actual URL.

``Resolver.resolve(url)`` returns a ``Target``: either the URL itself with the Authorization
header to send, or the redirect location (sent *without* Authorization).  Targets are cached
per URL (300 s after last use) and dropped by ``invalidate`` after a failed data request.
Tokens are cached per (registry, realm, service, scope), 30 s after last use, and only ever
sent back to the registry (scheme, host, port) that earned them: a second registry answering
with the same challenge gets its own.  Credentials are fetched from the provider each time a
token or Basic header is built, so rotated credentials are picked up; they never go from an
``https://`` registry to a plain ``http://`` token realm.
"""

import base64
import errno
import json
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import urllib3
from loguru import logger

from .creds import CredentialProvider

TARGET_TTL = 300.0
TOKEN_TTL = 30.0


class HttpFailure(Exception):
    """A request failed; ``status`` is the HTTP status or None for a transport error.
    ``retryable`` says whether trying again (within the deadline) may help; ``cause`` is a
    short text of what happened on the wire (kept in the resultFile reason); ``connect`` marks
    a connection that was never made (refused), retried only a few times when opening."""

    def __init__(self, msg, status=None, err=errno.EIO, retryable=False, cause="", connect=False):
        super().__init__(msg)
        self.status, self.errno, self.retryable = status, err, retryable
        self.cause, self.connect = cause, connect


def failure_for_status(status, what):
    """Map an unexpected HTTP status to an HttpFailure (errno as upstream, §6.1)."""
    if status in (401, 403):
        return HttpFailure(f"{what}: HTTP {status}", status, errno.EPERM)
    if status == 404:
        return HttpFailure(f"{what}: HTTP 404", status, errno.ENOENT)
    if status == 429:
        return HttpFailure(f"{what}: HTTP 429", status, errno.EBUSY, retryable=True)
    return HttpFailure(f"{what}: HTTP {status}", status, errno.EIO, retryable=status >= 500)


def _innermost(e):
    """The error under urllib3's wrappers (MaxRetryError, ProxyError), and whether it came
    from the proxy."""
    via_proxy = False
    while True:
        if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None:
            e = e.reason
        elif isinstance(e, urllib3.exceptions.ProxyError):
            e, via_proxy = e.original_error, True
        else:
            return e, via_proxy


def transport_failure(e, what, url=""):
    """An HttpFailure for a request to ``url`` that got no HTTP answer, keeping the cause:
    connection refused, no such host, TLS, timeout.  Only failures that may go away by
    themselves (refused, reset, timeout) are retryable."""
    cause, via_proxy = _innermost(e)
    u = urlsplit(url)
    where = "the proxy" if via_proxy else (u.netloc or "the server")
    text = str(cause)
    if isinstance(cause, urllib3.exceptions.SSLError) or "CERTIFICATE" in text.upper():
        inner = cause.args[0] if getattr(cause, "args", None) else cause
        if getattr(inner, "verify_message", None):
            detail = f"certificate verify failed: {inner.verify_message}"
        elif getattr(inner, "reason", None):            # e.g. the server refused our certificate
            detail = str(inner.reason).lower().replace("_", " ")
        else:
            detail = inner
        return HttpFailure(f"{what}: TLS failed ({text})", None, errno.ENOTCONN,
                           cause=f"TLS with {where} failed: {detail}")
    if isinstance(cause, urllib3.exceptions.NameResolutionError):
        host = "the proxy's host" if via_proxy else (u.hostname or "?")
        return HttpFailure(f"{what}: {text}", None, errno.ENOTCONN, cause=f"no such host: {host}")
    if isinstance(cause, urllib3.exceptions.NewConnectionError):   # (a ConnectTimeoutError!)
        os_err = cause.__cause__
        why = (os_err.strerror or "").lower() if isinstance(os_err, OSError) else ""
        if isinstance(os_err, ConnectionRefusedError):
            short = f"connection refused by {where}"
        else:
            short = f"cannot connect to {where}: {why or text}"
        return HttpFailure(f"{what}: {text}", None, errno.ENOTCONN, retryable=True,
                           cause=short, connect=True)
    if isinstance(cause, urllib3.exceptions.TimeoutError):
        m = re.search(r"timeout=([\d.]+)", text)
        within = f" within {float(m.group(1)):g} s" if m else ""
        return HttpFailure(f"{what}: timed out ({text})", None, errno.ETIMEDOUT, retryable=True,
                           cause=f"no answer from {where}{within}")
    return HttpFailure(f"{what}: {text}", None, errno.ENOTCONN, retryable=True,
                       cause=f"connection to {where} lost: {type(cause).__name__}")


def drain_small(r, keep=0, limit=65536):
    """Finish a response we do not stream: read a small body (returning its first ``keep``
    bytes) so the connection can be reused; close the connection for large, unknown-length or
    lying bodies.  Never raises."""
    body = b""
    try:
        cl = int(r.headers.get("Content-Length", "-1"))
    except ValueError:
        cl = -1
    try:
        if keep and cl < 0:
            body = r.read(keep)
            r.close()
        elif 0 <= cl <= limit and (r.status < 400 or keep):
            data = r.read(cl)
            body = data[:keep] if keep else b""
        else:
            r.close()
    except (urllib3.exceptions.HTTPError, OSError):
        r.close()
    r.release_conn()
    return body


def parse_challenge(header):
    """``WWW-Authenticate`` -> (scheme lower-case, {param: value}).  Commas inside quoted values
    are kept; quotes are removed."""
    scheme, _, rest = (header or "").strip().partition(" ")
    params = {}
    for m in re.finditer(r'([A-Za-z_][\w-]*)\s*=\s*(?:"([^"]*)"|([^,\s]*))', rest):
        params[m.group(1).lower()] = m.group(2) if m.group(2) is not None else m.group(3)
    return scheme.lower(), params


@dataclass
class Target:
    url: str                 # where data GETs go
    authorization: str = ""  # header value to send there ("" for none / redirect targets)
    redirected: bool = False
    used: float = 0.0


def _origin(url):
    """scheme://host[:port] of ``url``: the registry a token belongs to."""
    u = urlsplit(url)
    return f"{u.scheme.lower()}://{u.netloc.lower()}"


def _scope_for(url):
    parts = [p for p in urlsplit(url).path.split("/") if p]
    if "v2" in parts and len(parts) >= parts.index("v2") + 4:
        return "repository:" + "/".join(parts[parts.index("v2") + 1:-2]) + ":pull"
    return ""


class Resolver:
    """Thread-safe resolution cache over an HttpClient and a CredentialProvider."""

    def __init__(self, client, creds: CredentialProvider):
        self.client, self.creds = client, creds
        self._lock = threading.Lock()
        self._targets = {}
        self._tokens = {}            # (registry origin, realm, service, scope) -> (token, used)
        self._withheld_warned = set()

    def invalidate(self, url, drop_tokens=False):
        """Forget ``url``'s target (and, with ``drop_tokens``, its registry's tokens)."""
        origin = _origin(url)
        with self._lock:
            self._targets.pop(url, None)
            if drop_tokens:
                for k in [k for k in self._tokens if k[0] == origin]:
                    del self._tokens[k]

    def resolve(self, url, timeout=None):
        now = time.monotonic()
        with self._lock:
            t = self._targets.get(url)
            if t is not None and now - t.used < TARGET_TTL:
                t.used = now
                return t
            for k in [k for k, (_, used) in self._tokens.items() if now - used >= TOKEN_TTL]:
                del self._tokens[k]
        t = self._resolve(url, timeout)
        t.used = time.monotonic()
        with self._lock:
            self._targets[url] = t
        return t

    def _get(self, url, headers, timeout, what):
        try:
            r = self.client.request("GET", url, headers=headers, timeout=timeout)
        except urllib3.exceptions.HTTPError as e:
            raise transport_failure(e, what, url) from e
        return r, drain_small(r, 16384 if what == "token" else 0)

    def _resolve(self, url, timeout):
        r, _ = self._get(url, {"Range": "bytes=0-0"}, timeout, "challenge")
        if r.status not in (401, 403):
            return self._target_of(url, r, "", "challenge")
        scheme, params = parse_challenge(r.headers.get("WWW-Authenticate", ""))
        if scheme == "bearer":
            scope = params.get("scope") or _scope_for(url)
            if not params.get("realm") or not scope:
                raise HttpFailure("Bearer challenge without realm/scope", r.status, errno.EPERM)
            key = (_origin(url), params["realm"], params.get("service", ""), scope)
            token, withheld = self._token(url, key, timeout)
            authz = "Bearer " + token
        elif scheme == "basic":
            user, pw = self.creds.get(url)
            if not user:
                raise HttpFailure("registry wants Basic auth and no credentials match", r.status, errno.EPERM)
            authz = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
            key, withheld = None, ""
        else:
            raise failure_for_status(r.status, "challenge")
        r, _ = self._get(url, {"Range": "bytes=0-0", "Authorization": authz}, timeout, "probe")
        if r.status in (401, 403) and key:
            with self._lock:
                self._tokens.pop(key, None)
            if withheld:
                drain_small(r)
                raise HttpFailure(f"probe: HTTP {r.status}", r.status, errno.EPERM, cause=withheld)
        return self._target_of(url, r, authz, "probe")

    def _target_of(self, url, r, authz, what):
        if 300 <= r.status < 400 and r.headers.get("Location"):
            return Target(urljoin(url, r.headers["Location"]), "", redirected=True)
        if r.status in (200, 206):
            return Target(url, authz)
        raise failure_for_status(r.status, what)

    def _token(self, url, key, timeout):
        """(token, why credentials were withheld or "") for ``key`` = (origin, realm, service,
        scope), from the cache or the realm."""
        with self._lock:
            hit = self._tokens.get(key)
            if hit is not None:
                self._tokens[key] = (hit[0], time.monotonic())
                return hit[0], ""
        _, realm, service, scope = key
        user, pw = self.creds.get(url)
        withheld = ""
        if user and urlsplit(url).scheme == "https" and urlsplit(realm).scheme != "https":
            user, withheld = "", f"credentials withheld from plain-http token realm {realm}"
            with self._lock:
                first = (key[0], realm) not in self._withheld_warned
                self._withheld_warned.add((key[0], realm))
            if first:
                logger.warning("{}: the registry sends us to token realm {} over plain http; "
                               "asking for a token without credentials", key[0], realm)
        auth_url = f"{realm}{'&' if '?' in realm else '?'}service={service}&scope={scope}"
        headers = {}
        if user:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        r, body = self._get(auth_url, headers, timeout, "token")
        if r.status != 200:
            raise HttpFailure(f"token server answered {r.status}", 401, errno.EPERM,
                              retryable=r.status >= 500 or r.status == 429)
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise HttpFailure("token server reply has no token", 401, errno.EPERM)
        with self._lock:
            self._tokens[key] = (token, time.monotonic())
        return token, withheld
