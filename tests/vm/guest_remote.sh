#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash tests/vm/guest_remote.sh W
# W holds blobs/*.tar (tar-wrapped lz4 ZFile layers).  A token-auth registry runs inside the
# guest on its loopback (the guest has its own network namespace); the blobs are pushed to it,
# overlaybd-tcmu serves the remote image, and what the kernel reads is recorded in W/out.
# The cache gets its own tmpfs: the guest /tmp is too small for the cache's free-disk rule
# (keep 1 GiB free), and W (hostfs) does not report holes, so the cache would be bypassed there.
source scripts/uml/guest-lib.sh     # (run from the repository root)

mkdir -p /mnt/cache && mount -t tmpfs -o size=3g tmpfs /mnt/cache
log "start registry (token auth)"
/usr/bin/python3 scripts/registry/harness.py start --dir /tmp/reg --auth token --port 5000 \
    > /tmp/reg.json 2> "$OUT/registry.err" || { log "registry failed"; cat "$OUT/registry.err" >&2; exit 1; }
$PY -c "import json; e=json.load(open('/tmp/reg.json')); print(e['url'], e['user'], e['password'])" > /tmp/reg.txt
read -r URL USER PASS < /tmp/reg.txt   # (no /dev/fd in the guest: no process substitution)
/usr/bin/python3 scripts/registry/push-blob.py --registry "$URL" --repo img/remote \
    --user "$USER" --password "$PASS" "$W"/blobs/*.tar > /tmp/pushed.jsonl || { log "push failed"; exit 1; }
$PY - "$URL" "$USER" "$PASS" "$W" <<'P'
import base64, json, sys
url, user, pw, w = sys.argv[1:5]
pushed = [json.loads(l) for l in open("/tmp/pushed.jsonl")]
pushed.sort(key=lambda p: p["file"])
host = url.split("://", 1)[1]
json.dump({"auths": {host + "/img": {"auth": base64.b64encode(f"{user}:{pw}".encode()).decode()}}},
          open("/tmp/cred.json", "w"))
json.dump({"logConfig": {"logPath": f"{w}/out/daemon.log", "logLevel": 0},
           "credentialConfig": {"mode": "file", "path": "/tmp/cred.json"},
           "cacheConfig": {"cacheType": "file", "cacheDir": "/mnt/cache", "cacheSizeGB": 1},
           "auditPath": f"{w}/out/audit.log", "workerConfig": {"workers": 2},
           "exporterConfig": {"enable": True, "port": 9863}},
          open("/tmp/obd.json", "w"))
json.dump({"repoBlobUrl": f"{url}/v2/img/remote/blobs",
           "lowers": [{"digest": p["digest"], "size": p["size"]} for p in pushed],
           "resultFile": f"{w}/out/remote.result"}, open("/tmp/remote.json", "w"))
json.dump({"repoBlobUrl": f"{url}/v2/img/remote/blobs",
           "lowers": [{"digest": "sha256:" + "0" * 64, "size": 1}],
           "resultFile": f"{w}/out/missing.result"}, open("/tmp/missing.json", "w"))
P

log "start daemon"
start_daemon /tmp/obd.json || exit 1

d=$($DEV create 1 /tmp/remote.json 2>>"$OUT/steps.err")
rec create_rc $?
rec result "$(cat "$OUT/remote.result" 2>/dev/null)"
rec sha "$(dd if="$d" bs=4M iflag=direct 2>/dev/null | sha256sum | cut -c1-64)"
rec cached "$(ls /mnt/cache | sort | tr '\n' ' ')"
for q in "" "?format=json"; do          # the exporter of the daemon the kernel just read from
    $PY -c 'import sys, urllib.request; sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())' \
        "http://127.0.0.1:9863/metrics$q" > "$OUT/metrics${q:+.json}" 2>>"$OUT/steps.err"
done
$DEV remove 1 2>>"$OUT/steps.err"

$DEV create 2 /tmp/missing.json > /dev/null 2>>"$OUT/steps.err"
rec missing_rc $?

stop_daemon stop_rc
/usr/bin/python3 scripts/registry/harness.py stop --dir /tmp/reg > /dev/null 2>&1
log "done"
