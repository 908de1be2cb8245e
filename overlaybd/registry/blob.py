"""A registry blob as a read-only file object (spec §6.1).

``RegistryBlob(url, ctx)`` learns the size with ``Range: bytes=0-0`` and serves ``pread`` with
ranged GETs.  A request that may succeed later is retried with backoff until the context's
deadline (30 s by default); 401/403 and 404 fail at once (after one re-resolution, so rotated
credentials or expired redirect URLs recover); so do an unknown host and a TLS failure, and
opening gives up on a host that refuses connections after a few quick tries.  The reason
keeps the cause (``Connection failed (connection refused by host:port)``).  The bytes returned are never wrong: a 206 must carry the
Content-Range asked for, a 200 to a ranged GET is skipped forward to the offset, a short body
is retried, and a 416 is never trusted for its Content-Length.
"""

import errno
import http.client
import os
import re
import threading
import time

import urllib3
from loguru import logger

from .. import REGISTRY_TIMEOUT, forksafe, log, metrics
from ..errors import RemoteError
from ..io import pread_by_preadinto
from .auth import (
    HttpFailure,
    Resolver,
    drain_small,
    failure_for_status,
    transport_failure,
)
from .client import HttpClient, HttpSettings
from .creds import CredentialProvider

REASONS = {errno.EPERM: "Authentication failed", errno.EACCES: "Authentication failed",
           errno.ENOTCONN: "Connection failed", errno.ETIMEDOUT: "Get meta timedout",
           errno.ENOENT: "No such file or directory", errno.EBUSY: "Too many requests",
           errno.EIO: "Unexpected response"}
OPEN_CONNECT_TRIES = 4      # refused connections at open: upstream's 3 retries, ~0.15 s in all
_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def reason_for(err):
    return REASONS.get(err) or os.strerror(err)


def error_kind(failure):
    """The kind of a failed request, for metrics and logs (overlaybd.metrics.ERROR_KINDS)."""
    status = failure.status
    if status in (401, 403):
        return "auth"
    if status == 404:
        return "not_found"
    if status == 429:
        return "throttled"
    if status is not None and status >= 500:
        return "server"
    if status is not None and status >= 400:
        return "client"
    if status is not None:
        return "bad_response"       # a 200/206 with the wrong range or a short body
    if failure.errno == errno.ETIMEDOUT:
        return "timeout"
    if "TLS" in str(failure):
        return "tls"
    if failure.errno == errno.ENOTCONN:
        return "connection"
    return "other"


class RegistryContext:
    """The HTTP client, credentials and resolution caches shared by the blobs of one config."""

    def __init__(self, client: HttpClient, creds: CredentialProvider, p2p_prefix=""):
        self.client, self.creds = client, creds
        self.resolver = Resolver(client, creds)
        self.timeout = client.timeout
        self.p2p_prefix = p2p_prefix.rstrip("/") if p2p_prefix else ""

    @classmethod
    def from_service(cls, svc, p2p_prefix=""):
        return cls(HttpClient.from_service(svc),
                   CredentialProvider.from_config(getattr(svc, "credential", None)), p2p_prefix)

    def with_p2p(self, prefix):
        """A context sharing this one's caches whose data GETs go through a P2P proxy prefix."""
        other = RegistryContext.__new__(RegistryContext)
        other.__dict__.update(self.__dict__)
        other.p2p_prefix = prefix.rstrip("/")
        return other


_lock = threading.Lock()
_contexts = {}


@forksafe.at_fork_child
def _after_fork_in_child():
    global _lock
    _lock = threading.Lock()
    _contexts.clear()                   # their token caches and locks are the parent's


def context_for(svc):
    """One RegistryContext per distinct registry-related configuration in this process."""
    cred = getattr(svc, "credential", None)
    key = (HttpSettings.from_service(svc), getattr(svc, "user_agent", "") or "",
           getattr(svc, "registry_timeout", None) or REGISTRY_TIMEOUT,
           tuple(getattr(cred, k, "") or "" for k in ("mode", "path", "timeout", "client_cert_path",
                                                       "client_key_path", "server_ca_path")))
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _contexts[key] = RegistryContext.from_service(svc)
        return ctx


def body_readinto(r):
    """``(readinto, fp)``: how to read the body of the urllib3 response ``r`` into a buffer.

    The shortcut: urllib3's ``HTTPResponse.readinto`` reads into a bytes object of its own and
    copies that into the buffer; the ``http.client.HTTPResponse`` under it -- urllib3's private
    attribute ``r._fp`` -- reads straight into the buffer, one copy of every byte fewer.  It is
    taken for a 206 body urllib3 would pass on unchanged (no Content-Encoding; requests are
    sent with ``decode_content=False``) while ``_fp`` is what it is in urllib3 2.x; then
    ``fp`` is that response, and the caller finds out from ``fp.isclosed()`` whether the body
    was read to its end (urllib3's own count is bypassed).  Otherwise -- another urllib3, an
    encoded body, a 200 -- it is the public ``r.readinto`` and ``fp`` is None.
    tests/test_registry_blob.py fails when urllib3 changes under the shortcut."""
    fp = getattr(r, "_fp", None)
    if (r.status == 206 and isinstance(fp, http.client.HTTPResponse)
            and not r.headers.get("Content-Encoding")):
        return fp.readinto, fp
    return r.readinto, None


class RegistryBlob:
    """File object over ``url``.  ``size`` may be given (else asked with ``bytes=0-0``)."""

    def __init__(self, url, ctx: RegistryContext, size=None, on_read=None):
        self.url = self.path = url
        self.ctx = ctx
        self.on_read = on_read            # callback(offset, nbytes, seconds) per data request
        self.size = size if size is not None else self._open_size()

    # -- public file protocol -------------------------------------------------------------
    def pread(self, n, off):
        return pread_by_preadinto(self, n, off)

    def preadinto(self, buf, off):
        n = min(len(buf), max(0, self.size - off))
        if n > 0:
            self.fetch_into(memoryview(buf)[:n], off)
        return n

    def close(self):
        pass

    # -- internals ----------------------------------------------------------------------
    def fetch_into(self, mv, off):
        """Fill ``mv`` with exactly ``len(mv)`` blob bytes from ``off`` (retried until deadline)."""
        t0 = time.monotonic()
        self._retry(lambda: self._get_range(mv, off), "read", off)
        if self.on_read:
            self.on_read(off, len(mv), time.monotonic() - t0)

    def _open_size(self):
        return self._retry(self._size_once, "open", 0)

    def _retry(self, op, what, off):
        deadline = time.monotonic() + self.ctx.timeout
        delay, auth_retried, last, connects, attempt = 0.02, False, None, 0, 0
        while True:
            attempt += 1
            try:
                return op()
            except HttpFailure as e:
                last = e
                self._failed(e, what, off, attempt)
                if e.errno in (errno.EPERM, errno.ENOENT) and not auth_retried:
                    auth_retried = True          # drop cached target/token, re-read creds, once
                    self.ctx.resolver.invalidate(self.url, drop_tokens=e.errno == errno.EPERM)
                    continue
                if not e.retryable:
                    break
                connects += e.connect
                if what == "open" and connects >= OPEN_CONNECT_TRIES:
                    break                        # nobody listens: say so now, not in 30 s
                self.ctx.resolver.invalidate(self.url)
            if time.monotonic() + delay >= deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
        err = last.errno if last is not None else errno.ETIMEDOUT
        metrics.registry_gave_up()
        why = reason_for(err) + (f" ({last.cause})" if getattr(last, "cause", "") else "")
        if what == "open":
            reason = f"failed to open remote file {self.url}: {why}"
        else:
            reason = f"failed to read remote file {self.url} at offset {off}: {why}"
        raise RemoteError(f"{last}", path=self.url, reason=reason, errno=err,
                          status=getattr(last, "status", None)) from last

    def _failed(self, e, what, off, attempt):
        kind = error_kind(e)
        metrics.registry_error(kind)
        logger.warning("registry request failed: {}", log.kv(
            kind=kind, status=e.status, op=what, blob=self.url, offset=off, attempt=attempt,
            error=str(e)))

    def _request(self, headers):
        target = self.ctx.resolver.resolve(self.url, self.ctx.timeout)
        h = dict(headers)
        if target.authorization:
            h["Authorization"] = target.authorization
        url = f"{self.ctx.p2p_prefix}/{target.url}" if self.ctx.p2p_prefix else target.url
        try:
            return self.ctx.client.request("GET", url, headers=h, redirects=8)
        except urllib3.exceptions.HTTPError as e:
            raise transport_failure(e, "GET", url) from e

    def _size_once(self):
        r = self._request({"Range": "bytes=0-0"})
        status, cr, cl = r.status, r.headers.get("Content-Range", ""), r.headers.get("Content-Length")
        drain_small(r)
        if status == 206:
            m = _CONTENT_RANGE.match(cr)
            if m and m.group(3) != "*":
                return int(m.group(3))
            raise HttpFailure(f"206 without a usable Content-Range ({cr!r})", status, errno.EIO, True)
        if status == 200 and cl is not None and cl.isdigit():
            return int(cl)
        raise failure_for_status(status, "size")

    def _get_range(self, mv, off):
        n = len(mv)
        r = self._request({"Range": f"bytes={off}-{off + n - 1}"})
        try:
            if r.status == 206:
                m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
                if not m or int(m.group(1)) != off or int(m.group(2)) != off + n - 1:
                    raise HttpFailure(f"206 for the wrong range ({r.headers.get('Content-Range')!r})",
                                      206, errno.EIO, retryable=True)
            elif r.status == 200:
                skip = off                  # server ignored Range: skip to the offset
                while skip:
                    chunk = r.read(min(skip, 1 << 20))
                    if not chunk:
                        raise HttpFailure("200 body ended before the offset", 200, errno.EIO, True)
                    skip -= len(chunk)
            else:
                raise failure_for_status(r.status, "GET")
            readinto, fp = body_readinto(r)
            got = 0
            while got < n:
                k = readinto(mv[got:])
                if not k:
                    raise HttpFailure(f"short body: {got} of {n} bytes", r.status, errno.EIO, True)
                got += k
        except HttpFailure:
            r.close()
            r.release_conn()
            raise
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as e:
            r.close()
            r.release_conn()
            raise transport_failure(e, "GET body", self.url) from e
        if fp is not None and fp.isclosed():
            pass                            # http.client consumed exactly Content-Length
        elif r.status == 206 and fp is None and r.headers.get("Content-Length") == str(n):
            r.read()                        # at EOF: the connection goes back to the pool
        else:
            r.close()                       # a full 200 body, or a length we cannot trust
        r.release_conn()
