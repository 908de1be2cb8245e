#!/bin/bash
# Runs inside the guest (see scripts/demo.sh): ROOT = where install-service.sh put the service.
set -uo pipefail
ROOT=$1
BIN=$ROOT/opt/overlaybd/bin
REPO=$(pwd -P)
DEV=$REPO/scripts/uml/tcmu-dev.sh
G=$REPO/tests/data/golden
W=/tmp/demo
mkdir -p $W
say() { printf '\n== %s\n' "$*"; }
fail() { echo "DEMO FAILED: $*"; [ -f $W/overlaybd.log ] && tail -n 20 $W/overlaybd.log; exit 1; }
tool() { "$BIN/overlaybd-$1" "${@:2}"; }

cat > $W/overlaybd.json <<J
{"logConfig": {"logPath": "$W/overlaybd.log", "logLevel": 1},
 "auditPath": "$W/audit.log",
 "cacheConfig": {"cacheType": "file", "cacheDir": "$W/cache", "cacheSizeGB": 1},
 "workerConfig": {"workers": 2}}
J
python3 - "$G" "$W" <<'P'
import json, sys
g, w = sys.argv[1:3]
json.dump({"lowers": [{"file": f"{g}/layer{i}.lz4.zfile"} for i in (1, 2, 3)],
           "resultFile": f"{w}/golden.result"}, open(f"{w}/golden.json", "w"))
P
say "overlaybd-tcmu (2 worker processes) on $(uname -sr)"
( cd / && exec "$BIN/overlaybd-tcmu" $W/overlaybd.json ) >$W/daemon.out 2>&1 &
DPID=$!
for _ in $(seq 300); do grep -q 'overlaybd-tcmu serving' $W/overlaybd.log 2>/dev/null && break; sleep 0.1; done
grep -q 'overlaybd-tcmu serving' $W/overlaybd.log 2>/dev/null || fail "daemon did not start"
ps -o pid,psr,rss,args --ppid $DPID -p $DPID | sed 's/^/  /'
pkg=$(grep -o 'starting (package [^)]*' $W/overlaybd.log | head -n 1); pkg=${pkg#starting (package }
case "$pkg" in "$ROOT"/opt/overlaybd/venv/*) echo "  the installed package: $pkg" ;;
    *) fail "the daemon runs '$pkg', not the package installed under $ROOT" ;; esac

say "device for the golden image (lz4 ZFile layers made by upstream's overlaybd-commit)"
sd=$($DEV create 1 $W/golden.json) || fail "enable failed: $(cat $W/golden.result)"
echo "  $sd  $(blockdev --getsize64 $sd) bytes, read-only=$(cat /sys/block/${sd#/dev/}/ro), resultFile: $(cat $W/golden.result)"
t0=$(date +%s.%N)
got=$(dd if=$sd bs=4M iflag=direct 2>/dev/null | sha256sum | cut -c1-64)
t1=$(date +%s.%N)
want=$(python3 -c "import json; print(json.load(open('$G/manifest.json'))['merged']['sha256'])")
echo "  sha256 of all 1 GiB: $got"
echo "  manifest expects:    $want"
[ "$got" = "$want" ] || fail "bytes differ"
awk -v a=$t0 -v b=$t1 'BEGIN{printf "  read 1 GiB in %.2f s (%.0f MB/s)\n", b-a, 1073.74/(b-a)}'

say "a writable image: overlaybd-create, mkfs.ext4, files, commit"
tool create -s $W/upper.data $W/upper.index 1 >/dev/null
python3 - "$G" "$W" <<'P'
import json, sys
g, w = sys.argv[1:3]
json.dump({"lowers": [], "upper": {"data": f"{w}/upper.data", "index": f"{w}/upper.index"},
           "resultFile": f"{w}/rw.result"}, open(f"{w}/rw.json", "w"))
P
rw=$($DEV create 2 $W/rw.json) || fail "writable enable failed: $(cat $W/rw.result)"
mkfs.ext4 -q -F $rw && mkdir -p /mnt/demo && mount $rw /mnt/demo || fail "mkfs/mount"
cp -r $REPO/overlaybd /mnt/demo/ && seq 1 100000 > /mnt/demo/numbers.txt
( cd /mnt/demo && find . -type f | sort | xargs sha256sum ) > $W/written.sha
echo "  wrote $(wc -l < $W/written.sha) files: $(du -sh /mnt/demo | cut -f1)"
umount /mnt/demo && $DEV remove 2
tool commit -z $W/upper.data $W/upper.index $W/layer.commit >/dev/null || fail "commit"
echo "  committed: $(tool info $W/layer.commit | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["kinds"], d["zfile"]["blocks"], "blocks")')"
python3 -c "import json; json.dump({'lowers': [{'file': '$W/layer.commit'}], 'resultFile': '$W/ro.result'}, open('$W/ro.json', 'w'))"
ro=$($DEV create 3 $W/ro.json) || fail "reopen failed: $(cat $W/ro.result)"
mount -o ro $ro /mnt/demo || fail "mount committed layer"
( cd /mnt/demo && sha256sum -c --quiet $W/written.sha ) || fail "files differ after commit"
echo "  the committed layer, served read-only, has every file back byte for byte"
umount /mnt/demo

say "teardown"
for i in 3 1; do $DEV remove $i; done
kill -TERM $DPID; wait $DPID; echo "  daemon exited with $? after SIGTERM"
echo "  last log lines:"; tail -n 4 $W/overlaybd.log | sed 's/^/    /'
echo; echo "DEMO OK"
