#!/bin/bash
# build-smp-uml.sh - a User-Mode Linux kernel with CONFIG_SMP=y, for benchmarks that need two
# guest CPUs (run-in-uml.sh --ncpus N).  Debian packages UML uniprocessor only, so this builds
# Debian unstable's newest linux-source-X.Y as ARCH=um, starting from the packaged UML's own
# config with what the fixture loads built in (hostfs, configfs, target_core_user, tcm_loop,
# target_core_file, iSCSI target, sd, sg, loop).  Cached in $OVERLAYBD_UML_DIR/uml-smp (~20 MB);
# a finished build is reused.  From scratch: ~1 min download, 10-20 min compile on 2 cores,
# ~2 GB of disk meanwhile.  Root (apt-get).  Env: OBD_SMP_KSRC (e.g. linux-source-7.2),
# OBD_SMP_JOBS (default: nproc), OBD_SMP_NICE (default 10).
# Facts (2-core Debian 12 host): SMP UML boots only in seccomp stub mode (seccomp=on
# ncpus=N); a guest CPU is a host thread; the kernel may panic while powering off after the
# command has finished, which run-in-uml.sh ignores (the result is written by then).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${OVERLAYBD_UML_DIR:-/var/cache/overlaybd-uml}
OUT=$DIR/uml-smp
JOBS=${OBD_SMP_JOBS:-$(nproc)}
say() { echo "[smp-uml] $*" >&2; }
[ -e "$OUT/.complete" ] && { say "ready: $(cat "$OUT/kver") in $OUT"; exit 0; }
[ "$(id -u)" = 0 ] || { say "needs root (apt-get)"; exit 1; }
"$HERE/install.sh" >/dev/null        # the packaged UML: its --showconfig is the start
export DEBIAN_FRONTEND=noninteractive
start=$(date +%s)
need=$(for p in build-essential flex bison bc xz-utils kmod; do
    dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"; done)
[ -z "$need" ] || { say "apt-get install" $need; apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $need >/dev/null; }

# unstable's package index, kept apart from the host's apt state
APT=$DIR/smp-apt; mkdir -p "$APT/lists/partial" "$APT/cache/archives/partial"
mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n' | grep -v security | head -1)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && !/security/ {for (i=2;i<=NF;i++) if ($i ~ /^https?:/) {print $i; exit}}' /etc/apt/sources.list 2>/dev/null)
[ -n "$mirror" ] || { say "no Debian mirror in the host's apt sources"; exit 1; }
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror sid main" > "$APT/sources.list"
O=(-o Dir::Etc::SourceList="$APT/sources.list" -o Dir::Etc::SourceParts=/dev/null
   -o Dir::State::Lists="$APT/lists" -o Dir::Cache="$APT/cache" -o APT::Get::List-Cleanup=0)
say "index of unstable ($mirror)"
apt-get "${O[@]}" update -q >/dev/null 2>&1 || true
KSRC=${OBD_SMP_KSRC:-$(apt-cache "${O[@]}" pkgnames linux-source- | grep -E '^linux-source-[0-9]+\.[0-9]+$' | sort -V | tail -1)}
[ -n "$KSRC" ] || { say "unstable lists no linux-source-X.Y"; exit 1; }

SRC=$DIR/smp-src; rm -rf "$SRC"; mkdir -p "$SRC"
say "downloading $KSRC (not installed: unpacked with dpkg -x)"
( cd "$SRC" && apt-get "${O[@]}" download -q "$KSRC" >/dev/null 2>&1 )
dpkg -x "$SRC"/"$KSRC"_*.deb "$SRC/deb"
tar -C "$SRC" -xf "$(ls "$SRC"/deb/usr/src/"$KSRC".tar.* | head -1)"
rm -rf "$SRC/deb" "$SRC"/*.deb
cd "$SRC/$KSRC"
"$DIR/pkg/usr/bin/linux.uml" --showconfig > .config 2>/dev/null || true
grep -q '^CONFIG_' .config || make ARCH=um -s defconfig
BUILTIN="SMP HOSTFS CONFIGFS_FS TARGET_CORE TCM_USER2 LOOPBACK_TARGET TCM_FILEIO TCM_IBLOCK
         ISCSI_TARGET UIO SCSI BLK_DEV_SD CHR_DEV_SG OVERLAY_FS BLK_DEV_LOOP EXT4_FS TMPFS
         DEVTMPFS POSIX_MQUEUE INET"
for o in $BUILTIN; do scripts/config --enable "$o"; done
scripts/config --set-val NR_CPUS 4 --enable DEBUG_INFO_NONE --disable DEBUG_INFO \
    --disable DEBUG_INFO_BTF --disable UML_TIME_TRAVEL_SUPPORT --disable WERROR \
    --set-str LOCALVERSION "-smp"
make ARCH=um -s olddefconfig
for o in $BUILTIN; do grep -q "^CONFIG_$o=y" .config || { say "CONFIG_$o is not built in"; exit 1; }; done
say "compiling with $JOBS jobs (10-20 min on 2 cores)"
nice -n "${OBD_SMP_NICE:-10}" make ARCH=um -j"$JOBS" -s linux > "$SRC/build.log" 2>&1 \
    || { tail -n 30 "$SRC/build.log" >&2; say "build failed: $SRC/build.log"; exit 1; }
KVER=$(make ARCH=um -s kernelrelease)
# everything is built in: a module root whose modules.builtin lists it lets `modprobe -d` succeed
rm -rf "$OUT"; mkdir -p "$OUT/mroot/lib/modules/$KVER"
install -m755 linux "$OUT/linux"; cp .config "$OUT/config"
cp modules.builtin "$OUT/mroot/lib/modules/$KVER/"
[ -e modules.builtin.modinfo ] && cp modules.builtin.modinfo "$OUT/mroot/lib/modules/$KVER/"
: > "$OUT/mroot/lib/modules/$KVER/modules.order"
depmod -b "$OUT/mroot" "$KVER"
echo "$KVER" > "$OUT/kver"
cd /; rm -rf "$SRC" "$APT"
touch "$OUT/.complete"
say "ready: $KVER in $OUT ($(( $(date +%s) - start )) s)"
