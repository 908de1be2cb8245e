#!/bin/bash
# build-deb.sh [--out DIR] [--version V] [--wheel FILE] [--wheels DIR]: build the Debian package
# overlaybd_<V>_<arch>.deb (`make deb`).  It bundles a virtualenv, the way dh-virtualenv does, but
# with nothing beyond what `make install` already needs (python3-venv, python3-dev, gcc) and
# dpkg-dev (installed if missing, as root):
#   /opt/overlaybd/venv            a venv of Debian's /usr/bin/python3 holding this checkout's
#                                  wheel and its dependencies' wheels (built at a staging path,
#                                  then every path in it rewritten to the final one; bytecode is
#                                  compiled with the final paths)
#   /opt/overlaybd/bin/overlaybd-* links to the venv's tools
#   /etc/overlaybd/overlaybd.json  a conffile: an upgrade keeps the administrator's changes
#   /lib/systemd/system/overlaybd-tcmu.service
# The maintainer scripts (scripts/deb/) enable and start the service only where systemd runs.
#   --out DIR     where the .deb goes (default: dist/ of this checkout)
#   --version V   the package version (default: the wheel's version, revision 1: 0.1.0-1)
#   --wheel FILE  package this wheel instead of one built from the checkout
#   --wheels DIR  offline: take wheels only from DIR (pip --no-index): the dependencies', and
#                 setuptools and wheel to build this checkout's (fill it where there is a network:
#                 python3 -m pip wheel -w DIR . setuptools wheel)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$here/dist; version=; wheel=; wheels=
while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=$2; shift 2 ;;
        --version) version=$2; shift 2 ;;
        --wheel) wheel=$(realpath "$2"); shift 2 ;;
        --wheels) wheels=$(realpath "$2"); shift 2 ;;
        -h|--help) sed -n '2,21s/^# \{0,1\}//p' "$0"; exit 0 ;;
        *) echo "build-deb: unknown argument '$1' (see --help)" >&2; exit 2 ;;
    esac
done
step() { echo "[build-deb] $*" >&2; }
die() { echo "build-deb: $*" >&2; exit 1; }
PY=/usr/bin/python3                  # Debian's interpreter: the installed venv runs on it
VENV=/opt/overlaybd/venv
command -v dpkg-query >/dev/null || die "build on Debian (no dpkg here)"
# What the build needs: the venv module, the C accelerator's compiler and headers, dpkg-shlibdeps.
need="python3 python3-venv python3-dev gcc dpkg-dev"
missing=$(for p in $need; do dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"; done)
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || die "missing packages: apt-get install" $missing
    step "apt-get install" $missing
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q --no-install-recommends $missing >/dev/null
fi
mkdir -p "$out"; out=$(realpath "$out")

work=$(mktemp -d "${TMPDIR:-/tmp}/overlaybd-deb.XXXXXX"); trap 'rm -rf "$work"' EXIT
stage=$work/root
step "build tools: a venv with pip in $work/tools"
bash "$here/scripts/make-venv.sh" "$PY" "$work/tools" --bundled-pip >&2
pip=("$work/tools/bin/python" -m pip)

mkdir -p "$work/wheels"
src=(); [ -z "$wheels" ] || src=(--no-index --find-links "$wheels")
if [ -z "$wheel" ]; then
    step "the project's wheel, from $here"
    "${pip[@]}" wheel -q --no-deps "${src[@]}" -w "$work/wheels" "$here"
    wheel=$(ls "$work"/wheels/overlaybd-*.whl)
else
    cp "$wheel" "$work/wheels/"
fi
wver=$(basename "$wheel" | cut -d- -f2)
version=${version:-$wver-1}
step "the dependencies' wheels ${wheels:+(from $wheels only)}"
"${pip[@]}" wheel -q "${src[@]}" --find-links "$work/wheels" -w "$work/wheels" "$wheel"

step "the venv: $PY -m venv, at the staging path of $VENV"
"$PY" -m venv --without-pip "$stage$VENV"
"${pip[@]}" --python "$stage$VENV/bin/python" install -q --no-compile --no-index \
    --find-links "$work/wheels" "overlaybd==$wver"
"$stage$VENV/bin/python" -I -B -c 'import overlaybd.zfile._zfast' 2>/dev/null || die "the wheel has no" \
    "C accelerator (overlaybd.zfile._zfast): install gcc and python3-dev and build again"
# Relocate: scripts' #! lines, activate*, pyvenv.cfg name the staging path; nothing else may.
grep -rlIF "$stage" "$stage$VENV" | while read -r f; do
    sed -i "s#$stage$VENV#$VENV#g" "$f"
done
step "bytecode, compiled with the final paths"
"$stage$VENV/bin/python" -m compileall -q -s "$stage" -p / "$stage$VENV/lib" >/dev/null \
    || step "warning: some modules did not compile (they are compiled when imported)"
left=$(grep -rlF "$stage" "$stage" || true)
[ -z "$left" ] || die "the staging path is still named in: $left"

mkdir -p "$stage/opt/overlaybd/bin" "$stage/etc/overlaybd" "$stage/lib/systemd/system"
for t in "$stage$VENV"/bin/overlaybd-*; do ln -s "../venv/bin/${t##*/}" "$stage/opt/overlaybd/bin/"; done
conf=$stage$VENV/share/overlaybd/conf
install -m 0644 "$conf/overlaybd.json" "$stage/etc/overlaybd/overlaybd.json"
install -m 0644 "$conf/overlaybd-tcmu.service" "$stage/lib/systemd/system/overlaybd-tcmu.service"
mkdir -p "$stage/usr/share/doc/overlaybd"
install -m 0644 "$here/README.md" "$stage/usr/share/doc/overlaybd/README.md"

step "control files, version $version"
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
next=$("$PY" -c 'import sys; print("%d.%d" % (sys.version_info[0], sys.version_info[1] + 1))')
mkdir -p "$stage/DEBIAN"
# The libraries the compiled modules need (those vendored in the wheels' *.libs folders aside).
shlibs=$(cd "$work" && mkdir -p debian && touch debian/control &&
         dpkg-shlibdeps -O --ignore-missing-info $(find "$stage" -type d -name '*.libs' -printf '-l%p ') \
             $(find "$stage" -name '*.so*' -type f) 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependencies of the compiled modules"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: overlaybd
Version: $version
Architecture: $(dpkg --print-architecture)
Maintainer: overlaybd in Python <root@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$stage" | cut -f1)
Depends: python$pyver, python3 (>= $pyver~), python3 (<< $next), kmod, $shlibs
Section: admin
Priority: optional
Homepage: https://github.com/containerd/overlaybd
Description: overlaybd container images as TCMU block devices (Python)
 overlaybd-tcmu serves container images made of LSMT/ZFile layers as Linux
 block devices through target_core_user, fetching blobs from an OCI registry
 on demand.  With the overlaybd-* image tools, in a virtualenv of Debian's
 python3 under /opt/overlaybd.
CONTROL
echo /etc/overlaybd/overlaybd.json > "$stage/DEBIAN/conffiles"
for s in postinst prerm postrm; do install -m 0755 "$here/scripts/deb/$s" "$stage/DEBIAN/$s"; done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z \
    | xargs -0 md5sum > DEBIAN/md5sums)
chmod -R u+rwX,go+rX,go-w "$stage"           # whatever the builder's umask: readable, root-writable
deb=$out/overlaybd_${version}_$(dpkg --print-architecture).deb
step "dpkg-deb --build -> $deb"
dpkg-deb --root-owner-group -Zxz -z6 --build "$stage" "$deb" >&2
echo "$deb"
