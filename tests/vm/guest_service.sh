#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash tests/vm/guest_service.sh W ROOT
# ROOT holds a service installed by scripts/install-service.sh --root ROOT (or by the .deb: ROOT /,
# OBD_UNIT its unit).  This script does
# what systemd does with ROOT's unit -- ExecStartPre, ExecStart with OOMScoreAdjust and a
# NOTIFY_SOCKET, ExecReload, then SIGTERM to the main process only (KillMode=mixed) -- with the
# test's config W/obd.json bind-mounted over the installed one, serves W/golden.json and records
# what it saw in W/out (see tests/vm/test_service_vm.py).
source scripts/uml/guest-lib.sh     # (run from the repository root)
ROOT=$2
unit=${OBD_UNIT:-$ROOT/etc/systemd/system/overlaybd-tcmu.service}   # (the .deb's: /lib/systemd/system)
key() { sed -n "s/^$1=//p" "$unit"; }
cp "$unit" "$OUT/unit"

start=$(key ExecStart)
mount --bind "$W/obd.json" "${start##* }" || { log "cannot bind the config over ${start##* }"; exit 1; }
$(key ExecStartPre) > "$OUT/pre.out" 2>&1
rec pre_rc $?

# the service manager's end of NOTIFY_SOCKET: one line per datagram
python3 - /run/notify.sock "$OUT/notify" <<'P' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(4096).replace(b"\n", b" ") + b"\n")
P
npid=$!
for _ in $(seq 100); do [ -S /run/notify.sock ] && break; sleep 0.1; done

log "ExecStart: $start"
( echo "$(key OOMScoreAdjust)" > /proc/self/oom_score_adj; cd /
  exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin NOTIFY_SOCKET=/run/notify.sock $start ) \
    > "$OUT/daemon.out" 2>&1 &
MAINPID=$!
for _ in $(seq 600); do
    grep -q '^READY=1' "$OUT/notify" 2>/dev/null && break
    kill -0 $MAINPID 2>/dev/null || break
    sleep 0.1
done
rec ready "$(grep -c '^READY=1' "$OUT/notify" 2>/dev/null)"
rec main_oom "$(cat /proc/$MAINPID/oom_score_adj)"
workers=$(ps -o pid= --ppid $MAINPID | tr -d ' ')
for p in $workers; do echo "$p $(cat /proc/$p/oom_score_adj) $(tr '\0' ' ' < /proc/$p/cmdline)"; done \
    > "$OUT/workers"

log "golden device"
d=$($DEV create 1 "$W/golden.json" 2>>"$OUT/steps.err")
rec create_rc $?
rec result "$(cat "$W/golden.result" 2>/dev/null)"
rec sha "$(dd if="$d" bs=4M iflag=direct 2>/dev/null | sha)"

log "ExecReload"
reload=$(key ExecReload)
${reload//\$MAINPID/$MAINPID}
rec reload_rc $?
for _ in $(seq 50); do grep -q 'SIGHUP' "$W/log/overlaybd.log" && break; sleep 0.1; done
$DEV remove 1 2>>"$OUT/steps.err"

log "stop: SIGTERM to the main process"
kill -TERM $MAINPID; wait $MAINPID
rec stop_rc $?
sleep 0.5
rec left "$(for p in $workers; do kill -0 "$p" 2>/dev/null && echo "$p"; done)"
kill $npid
