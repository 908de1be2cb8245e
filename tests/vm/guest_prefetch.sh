#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash tests/vm/guest_prefetch.sh W
# W holds layer0.tar/layer1.tar (an ext4 disk in two ZFile+tar layers) and app.txt (the files
# a container start reads).  A registry runs in the guest; overlaybd-tcmu (2 workers) serves:
#   1. record, as containerd's record-trace drives it: empty trace file, device, mount, reads,
#      delete trace.lock, wait for trace.ok (its delay is recorded);
#   2. a cold start without any trace (baseline registry reads);
#   3. replay of the recorded trace on a new device, cold cache;
#   4. an acceleration layer (a tar holding only `trace`, made with overlaybd's tar writer,
#      unpacked like the snapshotter does) on a new device, cold cache.
# Facts go to W/out for tests/vm/test_prefetch_vm.py.
source scripts/uml/guest-lib.sh     # (run from the repository root)

mkdir -p /mnt/cache /mnt/reg /mnt/img
mount -t tmpfs -o size=3g tmpfs /mnt/cache    # the cache keeps 1 GiB free: room above that
mount -t tmpfs -o size=1g tmpfs /mnt/reg
log "start registry"
/usr/bin/python3 scripts/registry/harness.py start --dir /mnt/reg/r --auth none --port 5000 \
    > /tmp/reg.json 2> "$OUT/registry.err" || { log "registry failed"; exit 1; }
URL=$($PY -c "import json; print(json.load(open('/tmp/reg.json'))['url'])")
/usr/bin/python3 scripts/registry/push-blob.py --registry "$URL" --repo pf/app \
    "$W"/layer0.tar "$W"/layer1.tar > /tmp/pushed.jsonl || { log "push failed"; exit 1; }
mkdir -p "$W/rec" "$W/accel"
$PY - "$URL" "$W" <<'P'
import json, sys
url, w = sys.argv[1:3]
pushed = sorted((json.loads(l) for l in open("/tmp/pushed.jsonl")), key=lambda p: p["file"])
lowers = [{"digest": p["digest"], "size": p["size"]} for p in pushed]
json.dump({"logConfig": {"logPath": f"{w}/out/daemon.log", "logLevel": 1},
           "cacheConfig": {"cacheType": "file", "cacheDir": "/mnt/cache", "cacheSizeGB": 1},
           "auditPath": f"{w}/out/audit.log", "workerConfig": {"workers": 2},
           "download": {"enable": True, "delay": 0, "delayExtra": 1}}, open("/tmp/obd.json", "w"))
def cfg(name, **extra):
    doc = {"repoBlobUrl": f"{url}/v2/pf/app/blobs", "lowers": lowers,
           "resultFile": f"{w}/out/{name}.result"}
    doc.update(extra)
    json.dump(doc, open(f"/tmp/{name}.json", "w"))
# the record device's layers have a dir: background download could run there, and must not
cfg("rec", recordTracePath=f"{w}/rec/trace",
    lowers=[dict(lo, dir=f"{w}/rec/l{i}") for i, lo in enumerate(lowers)])
cfg("cold")
cfg("replay", recordTracePath=f"{w}/rec/trace")
cfg("accel", lowers=lowers + [{"dir": f"{w}/accel"}], accelerationLayer=True)
P

downloads() { grep -c '|download\[' "$OUT/audit.log" 2>/dev/null || echo 0; }
cold_cache() { rm -f /mnt/cache/sha256:*; }
# start NAME ID: mount the device of NAME read-only and read every file of app.txt; records
# NAME_sha (sha256 of each file, one per line) and NAME_during (registry reads meanwhile)
start() {
    local d=$1 name=$2 before
    before=$(downloads)
    mount -o ro,noload "$d" /mnt/img || { log "mount $name failed"; return 1; }
    while read -r f; do sha256sum "/mnt/img$f" | cut -c1-64; done < "$W/app.txt" > "$OUT/${name}_sha"
    umount /mnt/img
    rec "${name}_during" $(( $(downloads) - before ))
}
# wait_replay TRACE: until the daemon logs the end of the replay of TRACE (60 s at most)
wait_replay() {
    for _ in $(seq 600); do
        grep -q "Prefetch: $1: .* reads done" "$OUT/daemon.log" && return 0
        sleep 0.1
    done
    log "replay of $1 did not end"; return 1
}

log "start daemon"
start_daemon /tmp/obd.json || exit 1

log "1. record"
: > "$W/rec/trace"
d=$($DEV create 1 /tmp/rec.json 2>>"$OUT/steps.err")
rec rec_create_rc $?
rec rec_result "$(cat "$OUT/rec.result" 2>/dev/null)"
[ -e "$W/rec/trace.lock" ] && rec rec_lock_created 1
start "$d" rec
sleep 2                                 # (background download would have started by now)
rec rec_bk_download "$(grep -c '|bk_download\[' "$OUT/audit.log" 2>/dev/null)"
rec rec_dl_files "$(find "$W"/rec/l0 "$W"/rec/l1 -type f 2>/dev/null | wc -l)"
t0=$(date +%s%N)
rm "$W/rec/trace.lock"
for _ in $(seq 300); do [ -e "$W/rec/trace.ok" ] && break; sleep 0.01; done
rec rec_ok_ms $(( ($(date +%s%N) - t0) / 1000000 ))
rec rec_ok "$( [ -e "$W/rec/trace.ok" ] && echo 1 || echo 0 )"
$DEV remove 1 2>>"$OUT/steps.err"

log "2. cold start, no trace"
cold_cache
d=$($DEV create 2 /tmp/cold.json 2>>"$OUT/steps.err")
rec cold_create_rc $?
start "$d" cold
$DEV remove 2 2>>"$OUT/steps.err"

log "3. replay"
cold_cache
d=$($DEV create 3 /tmp/replay.json 2>>"$OUT/steps.err")
rec replay_create_rc $?
wait_replay "$W/rec/trace" && rec replay_done 1
start "$d" replay
$DEV remove 3 2>>"$OUT/steps.err"

log "4. acceleration layer"
$PY -c "import sys; from overlaybd.prefetch.accel import make_layer; make_layer(sys.argv[1], sys.argv[2])" \
    "$W/rec/trace" /tmp/accel.tar 2>>"$OUT/steps.err"
tar -tf /tmp/accel.tar > "$OUT/accel_members"
tar -xf /tmp/accel.tar -C "$W/accel"
cold_cache
d=$($DEV create 4 /tmp/accel.json 2>>"$OUT/steps.err")
rec accel_create_rc $?
rec accel_size "$(blockdev --getsize64 "$d")"
wait_replay "$W/accel/trace" && rec accel_done 1
start "$d" accel
$DEV remove 4 2>>"$OUT/steps.err"

stop_daemon stop_rc
/usr/bin/python3 scripts/registry/harness.py stop --dir /mnt/reg/r > /dev/null 2>&1
log "done"
