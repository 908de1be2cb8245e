#!/bin/bash
# Runs inside the guest (see scripts/demo.sh), part 1: a container image served before it has
# been downloaded.  ROOT = where install-service.sh put the service; the report also goes to
# $OBD_DEMO_OUT/lazy.json when that is set (tests read it).
#  1. build: an ext4 file system in three layers, each an overlaybd writable layer committed
#     by the project's own tools as a tar-wrapped lz4 ZFile (overlaybd-create, mkfs.ext4,
#     overlaybd-commit -z -t), layer 2 and 3 written on top of the ones below;
#  2. push the three blobs to a registry with token auth on the guest's loopback;
#  3. overlaybd-tcmu (the installed one) with a credential file, a cache on tmpfs and the
#     metrics exporter; the device created the way the snapshotter does (repoBlobUrl, lowers
#     by digest and size, resultFile); mount it, read a file, report what it cost.
set -uo pipefail
ROOT=$1
BIN=$ROOT/opt/overlaybd/bin
REPO=$(pwd -P)
DEV=$REPO/scripts/uml/tcmu-dev.sh
W=/tmp/lazy
rm -rf $W; mkdir -p $W/out
say() { printf '\n== %s\n' "$*"; }
fail() { echo "DEMO FAILED: $*"; for f in $W/build.log $W/overlaybd.log; do [ -f $f ] && tail -n 15 $f; done; exit 1; }
tool() { "$BIN/overlaybd-$1" "${@:2}"; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b - a}'; }
DPID=
start_daemon() {  # CONFIG LOG
    ( cd / && exec "$BIN/overlaybd-tcmu" "$1" ) >>$W/daemon.out 2>&1 &
    DPID=$!
    for _ in $(seq 600); do grep -q 'overlaybd-tcmu serving' "$2" 2>/dev/null && return 0; sleep 0.1; done
    fail "daemon did not start"
}
stop_daemon() { kill -TERM $DPID; wait $DPID; DPID=; }
trap '[ -n "$DPID" ] && kill -TERM $DPID 2>/dev/null' EXIT

say "building an image: ext4 in three lz4 ZFile layers, tar-wrapped, with the project's tools"
cat > $W/build.json <<J
{"logConfig": {"logPath": "$W/build.log", "logLevel": 1}, "workerConfig": {"workers": 0},
 "enableAudit": false, "cacheConfig": {"cacheDir": "$W/build-cache"}}
J
start_daemon $W/build.json $W/build.log
mkdir -p /mnt/lazy
lowers=""
for n in 1 2 3; do
    tool create $W/u$n.data $W/u$n.index 1 >/dev/null || fail "overlaybd-create"
    python3 - "$W" "$n" "$lowers" <<'P'
import json, sys
w, n, lowers = sys.argv[1], sys.argv[2], [x for x in sys.argv[3].split() if x]
json.dump({"lowers": [{"file": f} for f in lowers],
           "upper": {"data": f"{w}/u{n}.data", "index": f"{w}/u{n}.index"},
           "resultFile": f"{w}/u{n}.result"}, open(f"{w}/u{n}.json", "w"))
P
    sd=$($DEV create 1$n $W/u$n.json) || fail "layer $n: $(cat $W/u$n.result)"
    if [ $n = 1 ]; then mkfs.ext4 -q -F $sd || fail mkfs; fi
    mount $sd /mnt/lazy || fail "mount layer $n"
    case $n in
    1) mkdir -p /mnt/lazy/usr/lib && cp -r /usr/lib/python3/dist-packages/pip /mnt/lazy/usr/lib/ 2>/dev/null
       cp -r /etc /mnt/lazy/etc
       head -c $((48 << 20)) /dev/urandom > /mnt/lazy/usr/lib/libbig.so ;;
    2) cp -r $REPO/overlaybd /mnt/lazy/usr/lib/overlaybd
       head -c $((24 << 20)) /dev/urandom > /mnt/lazy/usr/lib/runtime.bin
       rm -rf /mnt/lazy/etc/ssl ;;
    3) mkdir -p /mnt/lazy/app
       echo "hello from the top layer of a lazily pulled image" > /mnt/lazy/app/hello.txt
       head -c $((4 << 20)) /dev/urandom > /mnt/lazy/app/model.bin ;;
    esac
    ( cd /mnt/lazy && sha256sum app/hello.txt app/model.bin 2>/dev/null ) > $W/expected.sha
    umount /mnt/lazy && $DEV remove 1$n
    tool commit -z -t $W/u$n.data $W/u$n.index $W/layer$n.tar >/dev/null || fail "commit layer $n"
    lowers="$lowers $W/layer$n.tar"
    echo "  layer $n: $(stat -c %s $W/layer$n.tar) bytes ($(tool info $W/layer$n.tar | python3 -c 'import json,sys; print(json.load(sys.stdin)["kinds"])'))"
done
stop_daemon

say "pushing the blobs to a registry (token auth) on the guest's loopback"
/usr/bin/python3 scripts/registry/harness.py start --dir /tmp/reg --auth token --port 5000 \
    > /tmp/reg.json 2> $W/registry.err || fail "registry: $(cat $W/registry.err)"
python3 -c "import json; e=json.load(open('/tmp/reg.json')); print(e['url'], e['user'], e['password'])" > /tmp/reg.txt
read -r URL USER PASS < /tmp/reg.txt
/usr/bin/python3 scripts/registry/push-blob.py --registry "$URL" --repo demo/app \
    --user "$USER" --password "$PASS" $W/layer1.tar $W/layer2.tar $W/layer3.tar > $W/pushed.jsonl \
    || fail "push"
mkdir -p /mnt/cache && mount -t tmpfs -o size=3g tmpfs /mnt/cache
python3 - "$URL" "$USER" "$PASS" "$W" <<'P'
import base64, json, sys
url, user, pw, w = sys.argv[1:5]
pushed = sorted((json.loads(l) for l in open(f"{w}/pushed.jsonl")), key=lambda p: p["file"])
host = url.split("://", 1)[1]
json.dump({"auths": {host + "/demo": {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}}},
          open(f"{w}/cred.json", "w"))
json.dump({"logConfig": {"logPath": f"{w}/overlaybd.log", "logLevel": 1},
           "credentialConfig": {"mode": "file", "path": f"{w}/cred.json"},
           "cacheConfig": {"cacheType": "file", "cacheDir": "/mnt/cache", "cacheSizeGB": 1},
           "download": {"enable": True, "delay": 600},      # background download later: the demo shows what reading alone fetches
           "auditPath": f"{w}/audit.log", "workerConfig": {"workers": 0},
           "exporterConfig": {"enable": True, "port": 9863}}, open(f"{w}/overlaybd.json", "w"))
json.dump({"repoBlobUrl": f"{url}/v2/demo/app/blobs",
           "lowers": [{"digest": p["digest"], "size": p["size"]} for p in pushed],
           "resultFile": f"{w}/app.result"}, open(f"{w}/app.json", "w"))
for p in pushed:
    print(f"  {p['digest'][:19]}...  {p['size']:>10,} bytes  ({p['file'].rsplit('/', 1)[-1]})")
P

say "serving it before it is downloaded: the installed overlaybd-tcmu, a device as the snapshotter makes it"
start_daemon $W/overlaybd.json $W/overlaybd.log
t0=$(now)
sd=$($DEV create 1 $W/app.json) || fail "enable failed: $(cat $W/app.result)"
t_dev=$(since $t0)
dd if=$sd of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null || fail "first read"
t_first=$(since $t0)
mount -o ro $sd /mnt/lazy || fail "mount"
t_mount=$(since $t0)
cat /mnt/lazy/app/hello.txt | sed 's/^/  app\/hello.txt: /'
( cd /mnt/lazy && sha256sum -c --quiet $W/expected.sha ) || fail "files differ from what was written"
t_read=$(since $t0)
echo "  resultFile: $(cat $W/app.result)"
python3 -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
    "http://127.0.0.1:9863/metrics" > $W/metrics.txt || fail "scrape"
python3 - "$W" "$t_dev" "$t_first" "$t_mount" "$t_read" "${OBD_DEMO_OUT:-}" <<'P'
import json, re, sys
w, t_dev, t_first, t_mount, t_read, dest = sys.argv[1:7]
metrics = {}
for line in open(f"{w}/metrics.txt"):
    m = re.match(r"^([a-zA-Z_:][\w:]*)(\{[^}]*\})? ([-+0-9.eE]+|NaN)$", line.strip())
    if m:
        metrics[m.group(1)] = metrics.get(m.group(1), 0.0) + float(m.group(3))
pushed = [json.loads(l) for l in open(f"{w}/pushed.jsonl")]
image = sum(p["size"] for p in pushed)
fetched = metrics.get("overlaybd_layer_registry_bytes_total", 0)
report = {"time_to_device_s": float(t_dev), "time_to_first_byte_s": float(t_first),
          "time_to_mount_s": float(t_mount), "time_to_file_s": float(t_read),
          "image_bytes": image, "fetched_bytes": int(fetched),
          "registry_reads": int(metrics.get("overlaybd_layer_registry_reads_total", 0)),
          "cache_hit_reads": int(metrics.get("overlaybd_layer_cache_hit_reads_total", 0)),
          "layer_reads": int(metrics.get("overlaybd_layer_reads_total", 0)),
          "registry_errors": int(metrics.get("overlaybd_registry_errors_total", 0)),
          "result": open(f"{w}/app.result").read().strip(), "files_equal": True}
print(f"  time to device {report['time_to_device_s']:.2f} s, to first byte "
      f"{report['time_to_first_byte_s']:.2f} s, to mount {report['time_to_mount_s']:.2f} s, "
      f"to the file read and checked {report['time_to_file_s']:.2f} s")
print(f"  fetched {fetched / 2**20:.1f} MiB of a {image / 2**20:.1f} MiB image "
      f"({100 * fetched / image:.1f}%) in {report['registry_reads']} registry reads")
print(f"  layer reads {report['layer_reads']}, of which served from the cache alone "
      f"{report['cache_hit_reads']}; registry errors {report['registry_errors']}")
print("  exporter: " + ", ".join(f"{k} {metrics[k]:g}" for k in (
    "overlaybd_layer_read_bytes_total", "overlaybd_layer_registry_bytes_total",
    "overlaybd_layer_refills_total", "overlaybd_inflight_commands") if k in metrics))
if dest:
    json.dump(report, open(f"{dest}/lazy.json", "w"))
P
umount /mnt/lazy && $DEV remove 1
stop_daemon
[ -n "${OBD_DEMO_OUT:-}" ] && cp $W/audit.log $W/overlaybd.log $W/metrics.txt "$OBD_DEMO_OUT"/
/usr/bin/python3 scripts/registry/harness.py stop --dir /tmp/reg >/dev/null 2>&1
umount /mnt/cache
echo; echo "LAZY PULL OK"
