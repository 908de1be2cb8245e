#!/bin/bash
# install-service.sh [--root DIR] [--wheel FILE]: install overlaybd-tcmu and the tools as a
# system service (as root).  What you get:
#   /opt/overlaybd/venv            the package (a plain, non-editable install) and its dependencies
#   /opt/overlaybd/bin/            the tools: links to the venv's overlaybd-* commands
#   /etc/overlaybd/overlaybd.json  the service config (an existing one is kept)
#   /etc/systemd/system/overlaybd-tcmu.service   the unit (systemd is told to reload its units)
# The config and the unit come from the installed package (venv/share/overlaybd/conf).
# The service is not started: `systemctl enable --now overlaybd-tcmu`.  After moving its log
# away (logrotate): `systemctl reload overlaybd-tcmu` (SIGHUP) makes it reopen the log.
#   --wheel FILE  install this wheel instead of one built from this checkout
#   --root DIR    install everything under DIR instead of /, with the unit and the config pointing
#                 there (/opt/overlaybd, /etc/overlaybd, /var/log become DIR/...); nothing is
#                 registered with systemd.  For trials and tests.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
root=; wheel=
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=$(realpath -m "$2"); shift 2 ;;
        --wheel) wheel=$(realpath "$2"); shift 2 ;;
        -h|--help) sed -n '2,14s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "install-service: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
[ "$root" = / ] && root=
[ -n "$root" ] || [ "$(id -u)" = 0 ] || { echo "install-service: run as root" >&2; exit 1; }
case "$root" in *' '*|*'#'*) echo "install-service: --root must not contain spaces or '#'" >&2; exit 2 ;; esac

venv=$root/opt/overlaybd/venv
bash "$here/scripts/make-venv.sh" python3 "$venv"
py=$venv/bin/python
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
if [ -z "$wheel" ]; then
    echo "[install-service] building the wheel from $here" >&2
    "$py" -m pip wheel -q --no-deps -w "$tmp" "$here"
    wheel=$(ls "$tmp"/overlaybd-*.whl)
fi
"$py" -m pip install -q "$wheel"                               # the package and its dependencies
"$py" -m pip install -q --no-deps --force-reinstall "$wheel"   # this very build, even at the same version
"$py" -c 'import overlaybd.zfile._zfast' 2>/dev/null || echo "install-service: warning: the C" \
    "accelerator of the ZFile reader was not built (install gcc and python3-dev, then run this" \
    "again); the slower pure-Python reader is used" >&2

# Paths in the shipped config and unit, moved under --root.
relocate() {
    if [ -n "$root" ]; then
        sed -e "s#\([ =\"]\)\(/opt/overlaybd\|/etc/overlaybd\|/var/log\)#\1$root\2#g" "$1"
    else
        cat "$1"
    fi
}
conf=$venv/share/overlaybd/conf
units=$root/etc/systemd/system
mkdir -p "$root/opt/overlaybd/bin" "$root/etc/overlaybd" "$units"
[ -z "$root" ] || mkdir -p "$root/var/log"
for t in "$venv"/bin/overlaybd-*; do ln -sfn "$t" "$root/opt/overlaybd/bin/${t##*/}"; done
if [ ! -e "$root/etc/overlaybd/overlaybd.json" ]; then
    relocate "$conf/overlaybd.json" > "$tmp/overlaybd.json"
    install -m 0644 "$tmp/overlaybd.json" "$root/etc/overlaybd/overlaybd.json"
fi
relocate "$conf/overlaybd-tcmu.service" > "$tmp/overlaybd-tcmu.service"
install -m 0644 "$tmp/overlaybd-tcmu.service" "$units/overlaybd-tcmu.service"
if [ -z "$root" ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi
echo "installed: $root/opt/overlaybd/bin/overlaybd-tcmu, config $root/etc/overlaybd/overlaybd.json," \
     "unit $units/overlaybd-tcmu.service"
[ -n "$root" ] || echo "start it with: systemctl enable --now overlaybd-tcmu"
