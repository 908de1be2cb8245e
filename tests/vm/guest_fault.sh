#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash tests/vm/guest_fault.sh W
# A full verified read of the golden image (lz4 layers) through overlaybd-tcmu with 2 workers,
# while a worker process is killed with SIGKILL every second.  Records in W/out what the reader
# saw (dd status, sha256), how many workers were killed, and what the kernel logged.
source scripts/uml/guest-lib.sh     # (run from the repository root)

start_daemon "$W/obd.json" || exit 1
d=$($DEV create 1 "$W/image.json" 2>>"$OUT/steps.err") || { rec create_rc 1; exit 1; }
dmesg -c > /dev/null 2>&1
kills=0
for round in 1 2; do
    ( dd if="$d" bs=1M iflag=direct 2>"$OUT/dd$round.err" | sha256sum | cut -c1-64 > "$OUT/sha$round";
      echo "${PIPESTATUS[0]}" > "$OUT/dd$round.rc" ) &
    reader=$!
    while kill -0 $reader 2>/dev/null; do
        sleep 1
        victim=$(ps -o pid= --ppid $DPID | head -n $(( (kills % 2) + 1 )) | tail -n 1 | tr -d ' ')
        if [ -n "$victim" ] && kill -0 $reader 2>/dev/null; then
            kill -9 "$victim" && kills=$((kills + 1))
        fi
    done
    wait $reader
done
rec kills "$kills"
rec io_errors "$(dmesg | grep -ciE 'I/O error|critical medium error|blk_update_request')"
# the last victim's replacement may still be on its way (a restart delay): wait up to 30 s
for _ in $(seq 60); do
    [ "$(ps -o pid= --ppid $DPID | wc -l)" -ge 2 ] && break
    sleep 0.5
done
rec workers_after "$(ps -o pid= --ppid $DPID | wc -l)"
$DEV remove 1 2>>"$OUT/steps.err"
stop_daemon stop_rc
