#!/bin/bash
# scripts/uml/install.sh - prepare the User-Mode-Linux fixture the VM tests boot.
# Idempotent (~1 s when nothing changed).  Debian packages only, via apt-get:
#  * fio, e2fsprogs, sg3-utils, kmod, util-linux are installed on the host (the guest sees the
#    host root read-only, so host tools and the project's Python run inside it unchanged);
#  * xstate-shim.so is built from xstate-shim.c with gcc (LD_PRELOADed by run-in-uml.sh: UML
#    6.1 cannot restore registers on hosts with a larger XSAVE area, e.g. AMX; see the .c);
#  * Debian's user-mode-linux (a 6.1 kernel built as a Linux program, with target_core_user,
#    tcm_loop, uio, sd_mod as modules) is fetched with `apt-get download` and unpacked with
#    `dpkg -x` into $OVERLAYBD_UML_DIR: it is never installed, the host is untouched.
# Env: OVERLAYBD_UML_DIR (default /var/cache/overlaybd-uml), OVERLAYBD_UML_NO_APT=1 skips apt-get
#      install of the host tools when they are known present.
set -euo pipefail
DIR=${OVERLAYBD_UML_DIR:-/var/cache/overlaybd-uml}
export DEBIAN_FRONTEND=noninteractive
log() { echo "[uml-install] $*" >&2; }
[ "$(id -u)" = 0 ] || { log "must run as root (apt-get)"; exit 1; }

PKGS="fio e2fsprogs sg3-utils kmod util-linux coreutils gcc libc6-dev"
if [ "${OVERLAYBD_UML_NO_APT:-0}" != 1 ]; then
    missing=$(for p in $PKGS; do
        dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
    done)
    if [ -n "$missing" ]; then
        log "apt-get install" $missing
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends $missing >/dev/null
    fi
fi

mkdir -p "$DIR"
if [ ! -e "$DIR/.complete" ] || [ ! -x "$DIR/pkg/usr/bin/linux.uml" ]; then
    log "fetching user-mode-linux (apt-get download + dpkg -x into $DIR)"
    rm -rf "$DIR/pkg" "$DIR/mroot" "$DIR/dl"; mkdir -p "$DIR/dl"
    ( cd "$DIR/dl" && apt-get download -q user-mode-linux 2>&1 \
        | grep -v 'Download is performed unsandboxed' >&2 || true )
    if ! ls "$DIR"/dl/user-mode-linux_*.deb >/dev/null 2>&1; then
        apt-get update -q >/dev/null
        ( cd "$DIR/dl" && apt-get download -q user-mode-linux 2>&1 \
            | grep -v 'Download is performed unsandboxed' >&2 || true )
    fi
    deb=$(ls "$DIR"/dl/user-mode-linux_*.deb)
    dpkg -x "$deb" "$DIR/pkg"
    kver=$(ls "$DIR/pkg/usr/lib/uml/modules" | head -1)
    [ -n "$kver" ] || { log "no modules in $deb"; exit 1; }
    # a module root for `modprobe -d`: lib/modules/<kver> -> the package's modules
    mkdir -p "$DIR/mroot/lib/modules"
    ln -sfn "$DIR/pkg/usr/lib/uml/modules/$kver" "$DIR/mroot/lib/modules/$kver"
    depmod -b "$DIR/mroot" "$kver"
    echo "$kver" > "$DIR/kver"
    rm -rf "$DIR/dl"
    touch "$DIR/.complete"
fi
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ ! -e "$DIR/xstate-shim.so" ] || [ "$here/xstate-shim.c" -nt "$DIR/xstate-shim.so" ]; then
    log "building xstate-shim.so"
    gcc -shared -fPIC -O2 -Wall -o "$DIR/xstate-shim.so.tmp" "$here/xstate-shim.c" -ldl
    mv "$DIR/xstate-shim.so.tmp" "$DIR/xstate-shim.so"
fi
log "ready: UML $(cat "$DIR/kver") in $DIR"
