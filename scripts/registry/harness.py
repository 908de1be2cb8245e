#!/usr/bin/env python3
"""Loopback OCI registry harness: docker-registry (CNCF distribution 2.8) in one directory.

Everything listens on 127.0.0.1.  Each instance keeps all its files in one directory and
records the pids of the processes it started there; ``stop`` kills only those pids.

  harness.py start --dir D [--auth none|basic|token] [--port P] [--token-port TP]
                   [--redirect-port RP --cdn-port CP] [--user U --password PW] [--log-level L]
                   [--tls]   (HTTPS; D/ca.crt, D/client.crt, D/client.key; client cert required)
  harness.py proxy --dir D [--port P]         tinyproxy forward proxy, access log in D/proxy.log
  harness.py stop  --dir D
  harness.py passwd --dir D --password PW     rotate the password (htpasswd + token server)

``start`` prints a JSON object (also written to D/env.json) with the URLs and pids.
Used as a library by tests/helpers/registry.py.
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SERVICE, ISSUER = "overlaybd-test-registry", "overlaybd-test-issuer"


def free_port():
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def crypto_python():
    """A Python interpreter that can import ``cryptography`` (needed by the token server)."""
    for py in (sys.executable, "/usr/bin/python3"):
        if py and subprocess.run([py, "-c", "import cryptography"], capture_output=True, check=False).returncode == 0:
            return py
    raise RuntimeError("no python with the 'cryptography' module; run scripts/registry/install.sh")


def _spawn(d, name, argv):
    with open(os.path.join(d, f"{name}.log"), "ab") as log:
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             start_new_session=True, cwd=d)
    with open(os.path.join(d, f"{name}.pid"), "w") as f:
        f.write(str(p.pid))
    return p


def _tls_context(env):
    if not env.get("tls"):
        return None
    import ssl
    ctx = ssl.create_default_context(cafile=env["ca"])
    ctx.load_cert_chain(env["client_cert"], env["client_key"])
    return ctx


def _status(url, headers=None, context=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2,
                                    context=context) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def _wait(check, procs, what, timeout=15.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for name, p in procs:
            if p.poll() is not None:
                raise RuntimeError(f"{name} exited with {p.returncode} while starting {what}")
        if check():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout}s")


def _write_htpasswd(d, user, password):
    subprocess.run(["htpasswd", "-Bbc", os.path.join(d, "htpasswd"), user, password],
                   check=True, capture_output=True)


def _registry_config(env):
    d = env["dir"]
    auth = ""
    if env["auth"] == "basic":
        auth = f"auth:\n  htpasswd:\n    realm: overlaybd-basic\n    path: {d}/htpasswd\n"
    elif env["auth"] == "token":
        auth = (f"auth:\n  token:\n    realm: {env['token_url']}\n    service: {SERVICE}\n"
                f"    issuer: {ISSUER}\n    rootcertbundle: {d}/token.crt\n")
    quiet = env["log_level"] not in ("debug", "info")
    tls = (f"  tls:\n    certificate: {d}/server.crt\n    key: {d}/server.key\n"
           f"    clientcas:\n      - {d}/ca.crt\n") if env.get("tls") else ""
    with open(os.path.join(d, "config.yml"), "w") as f:
        f.write(f"""version: 0.1
log:
  level: {env['log_level']}
  accesslog:
    disabled: {'true' if quiet else 'false'}
storage:
  filesystem:
    rootdirectory: {d}/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{env['port']}
  secret: overlaybd-test-not-secret
{tls}health:
  storagedriver:
    enabled: false
{auth}""")


def start_registry_process(env):
    """(Re)start only the docker-registry process of an instance described by ``env``."""
    p = _spawn(env["dir"], "registry", ["docker-registry", "serve", os.path.join(env["dir"], "config.yml")])
    env["registry_pid"] = p.pid
    ctx = _tls_context(env)
    _wait(lambda: _status(env["url"] + "/v2/", context=ctx) in (200, 401), [("docker-registry", p)], "registry")
    _save(env)
    return env


def start(d, auth="none", port=None, token_port=None, redirect_port=None, cdn_port=None,
          user="testuser", password="testpass", log_level="info", redirect=False, tls=False):
    """Start a registry (and its token server / redirect shim) in directory ``d``.  With
    ``tls`` it serves HTTPS with d/server.crt (from d/ca.crt) and requires a client
    certificate signed by the same CA (d/client.crt, d/client.key)."""
    d = os.path.abspath(d)
    os.makedirs(os.path.join(d, "storage"), exist_ok=True)
    port = port or free_port()
    env = {"dir": d, "auth": auth, "port": port, "url": f"http{'s' if tls else ''}://127.0.0.1:{port}",
           "user": user, "password": password, "log_level": log_level, "tls": bool(tls)}
    if tls:
        subprocess.run([crypto_python(), os.path.join(HERE, "gen-certs.py"), d], check=True)
        env.update(ca=f"{d}/ca.crt", client_cert=f"{d}/client.crt", client_key=f"{d}/client.key")
    if auth == "basic":
        _write_htpasswd(d, user, password)
    procs = []
    if auth == "token":
        py = crypto_python()
        token_port = token_port or free_port()
        env["token_url"] = f"http://127.0.0.1:{token_port}/token"
        ts = os.path.join(HERE, "token-server.py")
        if not os.path.exists(os.path.join(d, "token.crt")):
            subprocess.run([py, ts, "gen-keys", d], check=True)
        with open(os.path.join(d, "passwd"), "w") as f:
            f.write(f"{user}:{password}\n")
        p = _spawn(d, "token", [py, ts, "serve", "--port", str(token_port), "--key", f"{d}/token.key",
                                "--cert", f"{d}/token.crt", "--issuer", ISSUER, "--service", SERVICE,
                                "--passwd-file", f"{d}/passwd"])
        procs.append(("token-server", p))
        env["token_pid"] = p.pid
    _registry_config(env)
    _save(env)
    start_registry_process(env)
    if redirect or redirect_port:
        redirect_port = redirect_port or free_port()
        cdn_port = cdn_port or free_port()
        p = _spawn(d, "shim", [sys.executable, os.path.join(HERE, "redirect-shim.py"),
                               "--listen-port", str(redirect_port), "--cdn-port", str(cdn_port),
                               "--registry", env["url"], "--storage", f"{d}/storage"])
        procs.append(("redirect-shim", p))
        env.update(shim_pid=p.pid, redirect_url=f"http://127.0.0.1:{redirect_port}", cdn_port=cdn_port)
    for name, p in procs:
        if name == "token-server":
            _wait(lambda: _status(env["token_url"]) in (200, 401), procs, "token server")
        else:
            _wait(lambda: _status(env["redirect_url"] + "/v2/") in (200, 401), procs, "redirect shim")
    _save(env)
    return env


def start_proxy(d, port=None):
    """Start tinyproxy as a forward proxy on 127.0.0.1; its access log is ``d/proxy.log``."""
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    port = port or free_port()
    conf = os.path.join(d, "tinyproxy.conf")
    with open(conf, "w") as f:
        f.write(f"Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 64\nAllow 127.0.0.1\n"
                f"LogFile \"{d}/proxy.log\"\nLogLevel Info\nDisableViaHeader Yes\nConnectPort 443\n"
                f"ConnectPort 563\n")
    p = _spawn(d, "proxy", ["tinyproxy", "-d", "-c", conf])
    with socket.socket() as s:
        _wait(lambda: s.connect_ex(("127.0.0.1", port)) == 0, [("tinyproxy", p)], "tinyproxy")
    info = {"proxy_url": f"http://127.0.0.1:{port}", "proxy_pid": p.pid, "proxy_log": f"{d}/proxy.log"}
    with open(os.path.join(d, "proxy.json"), "w") as f:
        json.dump(info, f)
    return info


def _save(env):
    with open(os.path.join(env["dir"], "env.json"), "w") as f:
        json.dump(env, f, indent=1)


def kill_pidfile(d, name):
    """Kill the process recorded in ``d/<name>.pid`` (TERM, then KILL after 5 s)."""
    pf = os.path.join(d, f"{name}.pid")
    try:
        with open(pf) as f:
            pid = int(f.read().strip())
    except (OSError, ValueError):
        return False
    try:
        os.kill(pid, signal.SIGTERM)
        for _ in range(100):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    break
            except ChildProcessError:
                os.kill(pid, 0)          # not our child: still alive?
            time.sleep(0.05)
        else:
            os.kill(pid, signal.SIGKILL)
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    except ProcessLookupError:
        pass
    os.unlink(pf)
    return True


def stop(d):
    for name in ("shim", "registry", "token", "proxy"):
        kill_pidfile(d, name)


def set_password(d, password):
    """Rotate the password: htpasswd (registry restarted: 2.8 reads it once) and token passwd file."""
    with open(os.path.join(d, "env.json")) as f:
        env = json.load(f)
    env["password"] = password
    if env["auth"] == "basic":
        _write_htpasswd(d, env["user"], password)
        kill_pidfile(d, "registry")
        start_registry_process(env)
    elif env["auth"] == "token":
        with open(os.path.join(d, "passwd.tmp"), "w") as f:
            f.write(f"{env['user']}:{password}\n")
        os.replace(os.path.join(d, "passwd.tmp"), os.path.join(d, "passwd"))
    _save(env)
    return env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cmd", choices=["start", "stop", "proxy", "passwd"])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--auth", default="none", choices=["none", "basic", "token"])
    ap.add_argument("--port", type=int)
    ap.add_argument("--token-port", type=int)
    ap.add_argument("--redirect-port", type=int)
    ap.add_argument("--cdn-port", type=int)
    ap.add_argument("--user", default="testuser")
    ap.add_argument("--password", default="testpass")
    ap.add_argument("--log-level", default="info")
    ap.add_argument("--tls", action="store_true", help="HTTPS with a test CA, client certificate required")
    a = ap.parse_args()
    if a.cmd == "start":
        print(json.dumps(start(a.dir, a.auth, a.port, a.token_port, a.redirect_port, a.cdn_port,
                               a.user, a.password, a.log_level, tls=a.tls), indent=1))
    elif a.cmd == "proxy":
        print(json.dumps(start_proxy(a.dir, a.port), indent=1))
    elif a.cmd == "passwd":
        print(json.dumps(set_password(a.dir, a.password), indent=1))
    else:
        stop(a.dir)


if __name__ == "__main__":
    main()
