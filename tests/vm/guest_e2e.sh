#!/bin/bash
# Runs INSIDE the UML guest (scripts/uml/run-in-uml.sh), from the repository root:
#   bash tests/vm/guest_e2e.sh DIR
# DIR (shared with the host) holds what tests/vm/test_tcmu_vm.py prepared: obd-<workers>.json
# service configs and image configs (golden, golden2, dup, bad, turbo, multi3..5, rw).  The script
# drives overlaybd-tcmu the way the snapshotter does (configfs + tcm_loop) and records what it
# sees as one file per fact in DIR/out; the test module asserts on them.
source scripts/uml/guest-lib.sh     # (run from the repository root)
# head_sha DEV MiB
head_sha() { dd if="$1" bs=1M count="$2" iflag=direct 2>/dev/null | sha; }

log "start daemon (inline engine)"
start_daemon "$W/obd-0.json" || exit 1

# 1. the golden image, read-only, read in full
log "golden device"
d1=$($DEV create 1 "$W/golden.json" 2>>"$OUT/steps.err")
rec golden_create_rc $?
rec golden_result "$(cat "$W/golden.result" 2>/dev/null)"
rec golden_sha "$(dd if="$d1" bs=4M iflag=direct 2>/dev/null | sha)"
rec golden_size "$(blockdev --getsize64 "$d1")"
rec golden_ro "$(cat /sys/block/${d1#/dev/}/ro)"
sg1=/dev/$(ls /sys/block/${d1#/dev/}/device/scsi_generic/)
sg_inq "$sg1" > "$OUT/sg_inq.txt" 2>&1
sg_inq -p 0xb0 "$sg1" > "$OUT/sg_inq_b0.txt" 2>&1
sg_inq -p 0xb2 "$sg1" > "$OUT/sg_inq_b2.txt" 2>&1
sg_readcap -l "$sg1" > "$OUT/sg_readcap16.txt" 2>&1
sg_readcap "$sg1" > "$OUT/sg_readcap10.txt" 2>&1
sg_modes -a "$sg1" > "$OUT/sg_modes.txt" 2>&1
# a WRITE(10) sent straight to the read-only disk: CHECK CONDITION DATA PROTECT/0x2700
sg_raw -v -s 512 -i /dev/zero "$sg1" 2a 00 00 00 00 00 00 00 01 00 > "$OUT/sg_raw_write.txt" 2>&1
# reconfiguring a live device is not supported: the kernel's write fails, the device lives on
echo -n "overlaybd//elsewhere.json;1" 2>"$OUT/reconfig.err" > /sys/kernel/config/target/core/user_999999999/dev_1/attrib/dev_config
rec reconfig_rc $?
rec golden_head_sha "$(head_sha "$d1" 64)"

# 2. a device created with nl_reply_supported=-1 works too
log "nl_reply=-1 device"
d2=$($DEV create 2 "$W/golden2.json" --nl-reply -1 2>>"$OUT/steps.err")
rec nlreply_create_rc $?
rec nlreply_head_sha "$(head_sha "$d2" 64)"

# 3. a second device with dev_id 1 is refused, and says why
log "duplicated dev_id"
$DEV create 9 "$W/dup.json" --dev-id 1 > /dev/null 2>"$OUT/dup.err"
rec dup_rc $?
rec dup_result "$(cat "$W/dup.result" 2>/dev/null)"

# 4. a bad config: enable fails, the resultFile says why
log "bad config"
$DEV create 10 "$W/bad.json" > /dev/null 2>"$OUT/bad.err"
rec bad_rc $?
rec bad_result "$(cat "$W/bad.result" 2>/dev/null)"
# 4b. a TurboOCI layer (not implemented): refused, never served as plain bytes
log "TurboOCI config"
$DEV create 11 "$W/turbo.json" > /dev/null 2>"$OUT/turbo.err"
rec turbo_rc $?
rec turbo_result "$(cat "$W/turbo.result" 2>/dev/null)"

# 5. three devices at once (created concurrently), then removed
log "three devices"
pids=
for i in 3 4 5; do
    ( $DEV create $i "$W/multi$i.json" > "$W/multi$i.dev" 2>>"$OUT/steps.err"; echo $? > "$W/multi$i.rc" ) &
    pids="$pids $!"
done
wait $pids
for i in 3 4 5; do
    rec multi${i}_rc "$(cat "$W/multi$i.rc")"
    rec multi${i}_sha "$(head_sha "$(cat "$W/multi$i.dev")" 64)"
done
uio_before=$(ls /sys/class/uio | wc -l)
for i in 3 4 5; do $DEV remove $i 2>>"$OUT/steps.err"; done
rec multi_remove_uio "$uio_before $(ls /sys/class/uio | wc -l)"
rec multi_remove_list "$($DEV list | tr '\n' ' ')"

# 6. a writable image: mkfs, files, remove, re-create, read back
log "writable device"
d6=$($DEV create 6 "$W/rw.json" 2>>"$OUT/steps.err")
rec rw_create_rc $?
rec rw_ro "$(cat /sys/block/${d6#/dev/}/ro)"
mkfs.ext4 -q -F "$d6" > "$OUT/mkfs.txt" 2>&1
rec rw_mkfs_rc $?
mkdir -p /mnt/rw
mount "$d6" /mnt/rw && rec rw_mount1 0
mkdir -p /mnt/rw/dir
head -c 3000000 /dev/urandom > /mnt/rw/a.bin
head -c 70000 /dev/urandom > /mnt/rw/dir/b.bin
seq 1 50000 > /mnt/rw/dir/c.txt
( cd /mnt/rw && sha256sum a.bin dir/b.bin dir/c.txt ) > "$OUT/rw_written.sha"
sync
umount /mnt/rw
$DEV remove 6 2>>"$OUT/steps.err"
rec rw_removed "$([ -e "$d6" ] && echo present || echo gone)"
d6=$($DEV create 6 "$W/rw.json" 2>>"$OUT/steps.err")
rec rw_recreate_rc $?
mount "$d6" /mnt/rw && ( cd /mnt/rw && sha256sum a.bin dir/b.bin dir/c.txt ) > "$OUT/rw_read.sha"
umount /mnt/rw
$DEV remove 6 2>>"$OUT/steps.err"

# 7. restart: SIGTERM exits 0, a new daemon (worker processes this time) re-attaches
log "restart"
# a full read of dev 1 runs across the restart: commands queued while no daemon serves the ring
# are failed BUSY by the new daemon's reset_ring and retried by the SCSI layer
( dd if="$d1" bs=1M iflag=direct 2>/dev/null | sha > "$OUT/restart_busy_sha" ) &
ddpid=$!
sleep 1
stop_daemon stop1_rc
sleep 1
start_daemon "$W/obd-2.json" || exit 1
wait $ddpid
rec restart_head_sha1 "$(head_sha "$d1" 64)"
rec restart_head_sha2 "$(head_sha "$d2" 64)"
# and it still takes new devices
d7=$($DEV create 7 "$W/golden.json" 2>>"$OUT/steps.err")
rec restart_new_rc $?
rec restart_new_sha "$(head_sha "$d7" 64)"
for i in 7 2 1; do $DEV remove $i 2>>"$OUT/steps.err"; done
rec final_list "$($DEV list | tr '\n' ' ')"
rec final_uio "$(ls /sys/class/uio | wc -l)"
kill -HUP $DPID; sleep 0.5
stop_daemon stop2_rc
log "done"
