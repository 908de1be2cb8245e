"""The process-wide HTTP client for registries (urllib3).

One set of connection pools per process: created lazily and dropped in a forked child
(:mod:`overlaybd.forksafe`), since every worker process needs its own sockets.  TLS verification is always
on (system CA bundle, plus an optional extra CA file); ``certConfig`` gives a client
certificate.  A standard forward proxy (``proxyConfig``) and the P2P prefix (``p2pConfig``) are
applied per request URL.
"""

import ipaddress
import os
import ssl
import threading
from dataclasses import dataclass
from urllib.parse import urlsplit

import urllib3

from .. import REGISTRY_TIMEOUT, USER_AGENT, forksafe

SYSTEM_CA_BUNDLES = ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs/ca-bundle.crt")

_lock = threading.Lock()
_managers = {}


@forksafe.at_fork_child
def _after_fork_in_child():
    global _lock
    _lock = threading.Lock()            # a thread of the parent may have held it
    _managers.clear()                   # their sockets are the parent's


def _system_ca():
    for p in SYSTEM_CA_BUNDLES:
        if os.path.exists(p):
            return p
    return None


@dataclass(frozen=True)
class HttpSettings:
    """Everything that shapes a connection pool (hashable: one manager per distinct value)."""

    cert_file: str = ""
    key_file: str = ""
    ca_file: str = ""            # extra CA trusted for registries (certConfig.caFile)
    http_proxy: str = ""
    https_proxy: str = ""
    no_proxy: str = ""
    proxy_ca_file: str = ""      # CA for an https:// proxy (proxyConfig.caFile)

    @classmethod
    def from_service(cls, svc):
        cert = getattr(svc, "cert", None)
        proxy = getattr(svc, "proxy", None)
        g = lambda o, k: (getattr(o, k, "") or "") if o is not None else ""
        return cls(g(cert, "cert_file"), g(cert, "key_file"), g(cert, "ca_file"),
                   g(proxy, "http_proxy"), g(proxy, "https_proxy"), g(proxy, "no_proxy"),
                   g(proxy, "ca_file"))

    def proxy_for(self, url):
        """The forward proxy URL for ``url`` ("" for a direct connection)."""
        u = urlsplit(url)
        proxy = self.https_proxy if u.scheme == "https" else self.http_proxy
        if not proxy or _no_proxy_match(u.hostname or "", u.port, self.no_proxy):
            return ""
        return proxy


def _no_proxy_match(host, port, no_proxy):
    """curl-style noProxy: ``*``, exact hosts, domain suffixes (``.x.org`` or ``x.org``),
    ``host:port``, IP addresses and CIDR networks; comma or space separated."""
    host = host.lower().strip("[]")
    for item in no_proxy.replace(",", " ").split():
        item = item.lower()
        if item == "*":
            return True
        if ":" in item and not item.count(":") > 1:
            item, _, p = item.partition(":")
            if p and str(port) != p:
                continue
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(item, strict=False):
                return True
            continue
        except ValueError:
            pass
        item = item.lstrip(".")
        if host == item or host.endswith("." + item):
            return True
    return False


def _ssl_context(s: HttpSettings):
    ctx = ssl.create_default_context(cafile=_system_ca())
    if s.ca_file:
        ctx.load_verify_locations(s.ca_file)
    if s.cert_file:
        ctx.load_cert_chain(s.cert_file, s.key_file or None)
    return ctx


def manager(settings: HttpSettings, proxy_url=""):
    """This process's pool manager for ``settings`` (and ``proxy_url``, if any)."""
    key = (settings, proxy_url)
    with _lock:
        m = _managers.get(key)
        if m is None:
            kw = {"num_pools": 32, "maxsize": 16, "block": False, "ssl_context": _ssl_context(settings)}
            if proxy_url:
                pctx = None
                if proxy_url.startswith("https://"):
                    pctx = ssl.create_default_context(cafile=settings.proxy_ca_file or _system_ca())
                m = urllib3.ProxyManager(proxy_url, proxy_ssl_context=pctx, **kw)
            else:
                m = urllib3.PoolManager(**kw)
            _managers[key] = m
        return m


class HttpClient:
    """Sends single requests; never retries or follows redirects unless asked to."""

    def __init__(self, settings: HttpSettings = HttpSettings(), user_agent="", timeout=None):
        self.settings = settings
        self.user_agent = user_agent or USER_AGENT
        self.timeout = float(timeout or REGISTRY_TIMEOUT)

    @classmethod
    def from_service(cls, svc):
        return cls(HttpSettings.from_service(svc), getattr(svc, "user_agent", "") or "",
                   getattr(svc, "registry_timeout", None))

    def request(self, method, url, headers=None, redirects=0, timeout=None, preload=False):
        """One request; ``redirects`` > 0 follows that many 3xx.  Returns a urllib3 response
        whose body is not read yet unless ``preload``; urllib3 exceptions propagate."""
        h = {"User-Agent": self.user_agent}
        h.update(headers or {})
        t = min(self.timeout, timeout) if timeout else self.timeout
        retries = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=redirects,
                                raise_on_redirect=False) if redirects else False
        m = manager(self.settings, self.settings.proxy_for(url))
        return m.request(method, url, headers=h, redirect=bool(redirects), retries=retries,
                         preload_content=preload, decode_content=False,
                         timeout=urllib3.Timeout(connect=min(t, 10.0), read=t))
