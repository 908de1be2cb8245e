"""A real docker-registry on loopback in each auth mode (scripts/registry), for the fixtures in
tests/conftest.py.

``registry_none``, ``registry_basic``, ``registry_token``, ``registry_redirect`` are started once
per session; ``registry_factory(auth, redirect=False, tls=False)`` starts a private instance (for tests that
stop, restart or re-key it) that is stopped when the test ends.  Each instance (``Instance``) has
``push(data, repo) -> blob URL`` (through the redirect front when there is one), ``stop()``,
``restart()``, ``set_password(pw)`` and ``cred_file(path, password=None)``.  Without
docker-registry the tests skip locally and fail in CI (tests.helpers.env.need).
"""

import base64
import hashlib
import importlib.util
import io
import json
import os
import shutil
import types

from overlaybd import USER_AGENT, tar
from tests.helpers.env import GOLDEN, REPO, need

SCRIPTS = REPO / "scripts" / "registry"


def _load(name, filename):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / filename)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


harness = _load("registry_harness", "harness.py")
pusher = _load("registry_push_blob", "push-blob.py")


def have_prereqs():
    return all(shutil.which(b) for b in ("docker-registry", "htpasswd", "tinyproxy"))


class Instance:
    """A running registry started in directory ``d``."""

    def __init__(self, d, env):
        self.dir, self.env = d, env
        self.url = env["url"]
        self.front = env.get("redirect_url") or env["url"]   # where clients read blobs
        self.user, self.password = env["user"], env["password"]

    def push(self, data, repo="t/r"):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = os.path.join(self.dir, digest.replace(":", "_"))
        with open(path, "wb") as f:
            f.write(data)
        auth = self.env["auth"] != "none"
        pusher.push(self.url, repo, path, self.user if auth else None, self.password if auth else None,
                    harness._tls_context(self.env))
        os.unlink(path)
        return f"{self.front}/v2/{repo}/blobs/{digest}"

    def stop_registry(self):
        harness.kill_pidfile(self.dir, "registry")

    def start_registry(self):
        harness.start_registry_process(self.env)

    def set_password(self, password):
        self.env = harness.set_password(self.dir, password)
        self.password = password

    def cred_file(self, path, password=None, key=None):
        """Write a docker-style credential file for this registry's host; returns its path."""
        host = self.front.split("://", 1)[1]
        auth = base64.b64encode(f"{self.user}:{password or self.password}".encode()).decode()
        with open(path + ".tmp", "w") as f:
            json.dump({"auths": {key or host: {"auth": auth}}}, f)
        os.replace(path + ".tmp", path)
        return str(path)

    def stop(self):
        harness.stop(self.dir)


def start_instance(d, auth, redirect=False, tls=False):
    need(have_prereqs(), "docker-registry/htpasswd/tinyproxy not installed (scripts/registry/install.sh)")
    os.makedirs(d, exist_ok=True)
    return Instance(str(d), harness.start(str(d), auth=auth, redirect=redirect, tls=tls))


def service_config(tmp_path, **over):
    """A ServiceConfig for tests: cache, audit and credentials under ``tmp_path``.

    ``over`` holds overlaybd.json keys (camelCase, nested dicts merge)."""
    doc = {"cacheConfig": {"cacheType": "file", "cacheDir": str(tmp_path / "cache"), "cacheSizeGB": 1},
           "credentialConfig": {"mode": "file", "path": str(tmp_path / "cred.json")},
           "enableAudit": True, "auditPath": str(tmp_path / "audit.log"),
           "download": {"enable": False}}
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(doc.get(k), dict):
            doc[k] = {**doc[k], **v}
        else:
            doc[k] = v
    try:
        from overlaybd.image.settings import ServiceConfig
    except ImportError:       # the image package is mid-change: a plain namespace will do
        svc = _namespace_config(doc)
    else:
        svc = ServiceConfig.from_dict(doc)
    svc.registry_timeout = over.get("registryTimeout", 15.0)
    return svc


def _namespace_config(doc):
    ns = types.SimpleNamespace
    g = lambda k: doc.get(k, {})
    c, cr, d, p2p, px = g("cacheConfig"), g("credentialConfig"), g("download"), g("p2pConfig"), g("proxyConfig")
    return ns(cache=ns(type=c.get("cacheType", "file"), dir=c.get("cacheDir"), size_gb=c.get("cacheSizeGB", 4),
                       refill_size=c.get("refillSize", 262144), block_size=65536),
              credential=ns(mode=cr.get("mode", "file"), path=cr.get("path", ""), timeout=1,
                            client_cert_path="", client_key_path="", server_ca_path=""),
              download=ns(enable=d.get("enable", False), delay=d.get("delay", 300),
                          delay_extra=d.get("delayExtra", 30) or 30, max_mbps=d.get("maxMBps", 100),
                          try_cnt=d.get("tryCnt", 5), block_size=d.get("blockSize", 262144)),
              enable_audit=doc.get("enableAudit", True), audit_path=doc.get("auditPath", ""),
              p2p=ns(enable=p2p.get("enable", False), address=p2p.get("address", "")),
              cert=ns(cert_file="", key_file=""), user_agent=USER_AGENT,
              proxy=ns(http_proxy=px.get("httpProxy", ""), https_proxy=px.get("httpsProxy", ""),
                       no_proxy=px.get("noProxy", ""), ca_file=px.get("caFile", "")))


def tar_wrapped(path):
    """The blob the image convertor pushes: a one-file tar around the layer."""
    src = open(path, "rb").read()
    out = io.BytesIO()
    tar.wrap(io.BytesIO(src), out)
    return out.getvalue()


def push_image(inst, repo, names):
    lowers, url = [], None
    for name in names:
        blob = tar_wrapped(GOLDEN / name)
        url = inst.push(blob, repo)
        lowers.append({"digest": "sha256:" + hashlib.sha256(blob).hexdigest(), "size": len(blob)})
    return url.rsplit("/", 1)[0], lowers


def write_cfg(tmp_path, base, lowers, name="config.v1.json", **extra):
    doc = {"repoBlobUrl": base, "lowers": lowers, "resultFile": str(tmp_path / "result")}
    doc.update(extra)
    p = tmp_path / name
    p.write_text(json.dumps(doc))
    return str(p)
