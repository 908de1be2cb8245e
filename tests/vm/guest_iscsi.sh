#!/bin/bash
# Runs INSIDE the UML guest (scripts/uml/run-in-uml.sh), from the repository root:
#   bash tests/vm/guest_iscsi.sh DIR
# DIR holds what tests/vm/test_iscsi_vm.py prepared: obd-<workers>.json service configs and
# lz4.json (the golden lz4 stack, read-only).  For workers 0 and 2 the script creates the device
# through configfs without tcm_loop, exports its backstore over LIO's iSCSI fabric on
# 127.0.0.1:3260 (scripts/uml/iscsi-export.sh), logs in with the open-iscsi kernel initiator and
# reads the whole disk.  With workers 2 it then restarts the daemon under the logged-in session
# while a read is running.  Facts go to DIR/out, one file each.
source scripts/uml/guest-lib.sh     # (run from the repository root)
EXP=$REPO/scripts/uml/iscsi-export.sh
PORTAL=127.0.0.1:3260
modprobe iscsi_target_mod && modprobe iscsi_tcp || { log "iSCSI modules missing"; exit 1; }
rec modules "$(cut -d' ' -f1 /proc/modules | grep -E '^(iscsi_target_mod|iscsi_tcp)$' | sort | tr '\n' ' ')"

# open-iscsi: iscsid in the guest (left running: SIGTERM to it took the guest down before)
mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi
INIT=iqn.2026-12.org.overlaybd:guest-initiator
echo "InitiatorName=$INIT" > "$W/initiatorname.iscsi"
iscsid -i "$W/initiatorname.iscsi" -p /run/iscsid.pid || { log "iscsid did not start"; exit 1; }

disk_of_session() {     # the /dev/sdX of the newest iSCSI session (waits up to 30 s)
    local b
    for _ in $(seq 300); do
        for b in /sys/class/iscsi_session/session*/device/target*/*/block/*; do
            [ -e "$b" ] && [ -b "/dev/${b##*/}" ] && { echo "/dev/${b##*/}"; return 0; }
        done
        sleep 0.1
    done
    return 1
}
login() {   # IQN -> /dev/sdX
    iscsiadm -m discovery -t sendtargets -p $PORTAL >>"$OUT/iscsiadm.log" 2>&1 &&
    iscsiadm -m node -T "$1" -p $PORTAL --login >>"$OUT/iscsiadm.log" 2>&1 &&
    disk_of_session
}
logout() {
    iscsiadm -m node -T "$1" -p $PORTAL --logout >>"$OUT/iscsiadm.log" 2>&1
    iscsiadm -m node -o delete -T "$1" >>"$OUT/iscsiadm.log" 2>&1
}

for w in 0 2; do
    log "workers $w: daemon, device, export"
    start_daemon "$W/obd-$w.json" || exit 1
    $DEV create $w "$W/lz4.json" --no-lun 2>>"$OUT/steps.err"
    rec w${w}_create_rc $?
    iqn=iqn.2026-12.org.overlaybd:lz4-w$w
    $EXP export core/user_999999999/dev_$w $iqn > "$OUT/w${w}_url" 2>>"$OUT/steps.err"
    rec w${w}_export_rc $?
    rec w${w}_lun_link "$(readlink -f /sys/kernel/config/target/iscsi/$iqn/tpgt_1/lun/lun_0/dev_$w)"
    disk=$(login $iqn)
    rec w${w}_login_rc $?
    rec w${w}_vendor "$(cat /sys/block/${disk#/dev/}/device/vendor 2>/dev/null)"
    rec w${w}_sysfs "$(readlink -f /sys/block/${disk#/dev/})"
    rec w${w}_size "$(blockdev --getsize64 "$disk")"
    rec w${w}_ro "$(cat /sys/block/${disk#/dev/}/ro)"
    log "workers $w: reading $disk through iSCSI"
    t0=$(date +%s.%N)
    rec w${w}_sha "$(dd if="$disk" bs=4M iflag=direct 2>/dev/null | sha)"
    rec w${w}_secs "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')"
    if [ $w = 0 ]; then
        # the same backstore behind a second target that only one initiator may use, with CHAP
        acl_iqn=iqn.2026-12.org.overlaybd:acl
        ini=iqn.2026-12.org.overlaybd:allowed
        $EXP export core/user_999999999/dev_0 $acl_iqn --acl $ini --chap obd-user obd-secret-123 \
            > /dev/null 2>>"$OUT/steps.err"
        rec acl_export_rc $?
        iscsi-inq -i $ini iscsi://127.0.0.1:3260/$acl_iqn/0 > "$OUT/acl_nocred.txt" 2>&1
        rec acl_nocred_rc $?
        iscsi-inq -i iqn.2026-12.org.overlaybd:stranger \
            "iscsi://obd-user%obd-secret-123@127.0.0.1:3260/$acl_iqn/0" > "$OUT/acl_stranger.txt" 2>&1
        rec acl_stranger_rc $?
        iscsi-inq -i $ini "iscsi://obd-user%wrong-secret-12@127.0.0.1:3260/$acl_iqn/0" \
            > "$OUT/acl_badpass.txt" 2>&1
        rec acl_badpass_rc $?
        iscsi-inq -i $ini "iscsi://obd-user%obd-secret-123@127.0.0.1:3260/$acl_iqn/0" \
            > "$OUT/acl_ok.txt" 2>&1
        rec acl_ok_rc $?
        $EXP unexport $acl_iqn 2>>"$OUT/steps.err"
        rec acl_unexport_rc $?
    fi
    if [ $w = 2 ]; then
        # the daemon restarts under the logged-in initiator while a full read is running
        log "restart under the session"
        ( dd if="$disk" bs=1M iflag=direct 2>/dev/null | sha > "$OUT/restart_sha" ) &
        ddpid=$!
        sleep 1
        stop_daemon restart_stop_rc
        sleep 2
        start_daemon "$W/obd-2.json" || exit 1
        wait $ddpid
        rec restart_session_state "$(cat /sys/class/iscsi_session/session*/state 2>/dev/null | tr '\n' ' ')"
        rec restart_after_sha "$(dd if="$disk" bs=1M count=64 iflag=direct 2>/dev/null | sha)"
        # the same with SIGKILL (a crash): the supervisor dies without cleaning up
        log "SIGKILL under the session"
        kids=$(cat /proc/$DPID/task/*/children 2>/dev/null)
        ( dd if="$disk" bs=1M iflag=direct 2>/dev/null | sha > "$OUT/kill_sha" ) &
        ddpid=$!
        sleep 1
        kill -KILL $DPID; wait $DPID 2>/dev/null; DPID=
        sleep 2
        left=; for k in $kids; do kill -0 $k 2>/dev/null && left="$left $k"; done
        rec kill_workers_left "$(echo $left | wc -w)"
        for k in $left; do kill -KILL $k 2>/dev/null; done
        start_daemon "$W/obd-2.json" || exit 1
        wait $ddpid
        rec kill_session_state "$(cat /sys/class/iscsi_session/session*/state 2>/dev/null | tr '\n' ' ')"
        rec kill_after_sha "$(dd if="$disk" bs=1M count=64 iflag=direct 2>/dev/null | sha)"
    fi
    logout $iqn
    rec w${w}_logout_sessions "$(ls /sys/class/iscsi_session 2>/dev/null | wc -l)"
    $EXP unexport $iqn 2>>"$OUT/steps.err"
    rec w${w}_unexport_rc $?
    $DEV remove $w 2>>"$OUT/steps.err"
    rec w${w}_remove_rc $?
    stop_daemon w${w}_stop_rc
done
rec final_targets "$($EXP list | tr '\n' ' ')"
log "done"
