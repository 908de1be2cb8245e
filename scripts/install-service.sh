#!/bin/bash
# install-service.sh: install overlaybd-tcmu and the tools as a system service (as root).
#   /opt/overlaybd/venv         the package and its dependencies
#   /opt/overlaybd/bin/         the tools (links into the venv)
#   /etc/overlaybd/overlaybd.json  the service config (kept if it exists)
#   /etc/systemd/system/overlaybd-tcmu.service
# The service is not started: `systemctl enable --now overlaybd-tcmu`.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[ "$(id -u)" = 0 ] || { echo "install-service: run as root" >&2; exit 1; }
bash "$here/scripts/make-venv.sh" python3 /opt/overlaybd/venv
/opt/overlaybd/venv/bin/python -m pip install -q "$here"
mkdir -p /opt/overlaybd/bin /etc/overlaybd
for t in /opt/overlaybd/venv/bin/overlaybd-*; do ln -sfn "$t" "/opt/overlaybd/bin/${t##*/}"; done
[ -e /etc/overlaybd/overlaybd.json ] || install -m 0644 "$here/conf/overlaybd.json" /etc/overlaybd/overlaybd.json
install -m 0644 "$here/conf/overlaybd-tcmu.service" /etc/systemd/system/overlaybd-tcmu.service
command -v systemctl >/dev/null && systemctl daemon-reload 2>/dev/null || true
echo "installed: /opt/overlaybd/bin/overlaybd-tcmu; start with: systemctl enable --now overlaybd-tcmu"
