"""The urllib3 shortcut of registry/blob.py (``body_readinto``) against the real registry: it is
taken, it returns the pushed bytes, and without it the public API returns the same.  The first
test FAILS when urllib3 changes the private attribute the shortcut reads: re-check the shortcut
then (production falls back to the public API on its own)."""

import http.client
import os
import types

import pytest
import urllib3

from overlaybd.registry import RegistryBlob, RegistryContext, blob, client
from overlaybd.registry.blob import body_readinto
from tests.helpers.registry import service_config

pytestmark = pytest.mark.registry
MiB = 1 << 20


@pytest.fixture
def pushed(registry_none, tmp_path):
    data = os.urandom(3 * MiB + 77)
    url = registry_none.push(data)
    svc = service_config(tmp_path)
    return data, RegistryBlob(url, RegistryContext.from_service(svc))


@pytest.fixture
def urllib3_reads(monkeypatch):
    """Calls of urllib3's own ``HTTPResponse.readinto`` (the copy the shortcut saves)."""
    calls = []
    orig = urllib3.response.HTTPResponse.readinto

    def counted(self, b):
        calls.append(len(b))
        return orig(self, b)
    monkeypatch.setattr(urllib3.response.HTTPResponse, "readinto", counted)
    return calls


def _connections(rb):
    """Connections the urllib3 pool of ``rb``'s registry has opened so far."""
    m = client.manager(rb.ctx.client.settings, None)
    return m.connection_from_url(rb.url).num_connections


def _read_all(readinto, n):
    buf = bytearray(n)
    mv, got = memoryview(buf), 0
    while got < n:
        k = readinto(mv[got:])
        assert k, f"short body: {got} of {n}"
        got += k
    return bytes(buf)


def test_the_shortcut_is_taken_and_reads_the_range(pushed, urllib3_reads):
    data, rb = pushed
    opened = _connections(rb)
    r = rb._request({"Range": "bytes=10-4105"})
    try:
        assert r.status == 206
        # what the shortcut relies on, in the urllib3 installed
        assert isinstance(getattr(r, "_fp", None), http.client.HTTPResponse)
        readinto, fp = body_readinto(r)
        assert fp is r._fp and readinto == fp.readinto
        assert _read_all(readinto, 4096) == data[10:4106]
        assert fp.isclosed()                # read to the end of Content-Length
    finally:
        r.release_conn()
    # through the blob: every byte right, and urllib3's copying readinto never ran
    for off, n in ((0, 1), (12345, MiB), (len(data) - 100, 100), (7, 2 * MiB + 3)):
        assert rb.pread(n, off) == data[off:off + n]
    assert urllib3_reads == []
    assert _connections(rb) == opened       # each range's connection went back to the pool


def test_without_the_shortcut_the_public_api_reads_the_same(pushed, urllib3_reads, monkeypatch):
    """The fallback (what runs if urllib3 drops ``_fp``) gives the same bytes, through
    urllib3's readinto, and the connection goes back to the pool for the next range."""
    data, rb = pushed
    opened = _connections(rb)
    monkeypatch.setattr(blob, "body_readinto", lambda r: (r.readinto, None))
    for off, n in ((0, 1), (12345, MiB), (len(data) - 100, 100), (7, 2 * MiB + 3)):
        assert rb.pread(n, off) == data[off:off + n]
    assert sum(urllib3_reads) >= 3 * MiB + 104
    assert _connections(rb) == opened       # each range's connection went back to the pool


def test_the_shortcut_stays_off_where_urllib3_would_change_the_body():
    """Only a plain 206 takes the shortcut; anything else gets the public ``readinto``."""
    fp = http.client.HTTPResponse.__new__(http.client.HTTPResponse)

    def response(status, headers, with_fp=True):
        r = types.SimpleNamespace(status=status, headers=headers, readinto=lambda b: 0)
        if with_fp:
            r._fp = fp
        return r
    for r in (response(206, {"Content-Encoding": "gzip"}), response(200, {}),
              response(206, {}, with_fp=False)):
        readinto, direct = body_readinto(r)
        assert direct is None and readinto is r.readinto
    r = response(206, {})
    assert body_readinto(r) == (fp.readinto, fp)
