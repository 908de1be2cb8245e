#!/bin/bash
# install-deps.sh: system packages for the tests and benchmarks, from Debian's registry only.
# systemd only for systemd-analyze, which checks the unit; open-iscsi and libiscsi-bin for the
# iSCSI kernel tests and the conformance suite (bench/conformance_bench.py).  Idempotent.  Runs the per-fixture
# installers scripts/*/install.sh (UML kernel, registry...).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export DEBIAN_FRONTEND=noninteractive
PKGS="gcc dpkg-dev python3-dev python3-venv liblz4-1 e2fsprogs util-linux kmod fio systemd open-iscsi libiscsi-bin"
missing=$(for p in $PKGS; do dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"; done)
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { echo "install-deps: need root to apt-get install: $missing" >&2; exit 1; }
    echo "[deps] apt-get install $missing" >&2
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
for inst in "$here"/*/install.sh; do
    [ -e "$inst" ] || continue
    bash "$inst"
done
