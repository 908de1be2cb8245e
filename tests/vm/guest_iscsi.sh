#!/bin/bash
# Runs INSIDE the UML guest (run-in-uml.sh --mods iscsi_target_mod,iscsi_tcp) from the
# repository root:  bash tests/vm/guest_iscsi.sh DIR
# DIR holds obd-<workers>.json and lz4.json (the golden lz4 stack, read-only).  For workers 0
# and 2: overlaybd-tcmu ($OBD_TCMU, the installed one) serves the image, LIO's iSCSI fabric
# exports its backstore on 127.0.0.1:3260, open-iscsi logs in, and the whole disk is read
# through the initiator (sha256 recorded).  With workers 0 the daemon is then restarted under
# the logged-in session and the first 64 MiB read again, and a second target with a node ACL
# and CHAP is tried with libiscsi's iscsi-inq; with workers 2 the daemon gets SIGTERM, then
# SIGKILL, while a whole-disk read runs.  Results: DIR/out/<key> files.
source scripts/uml/guest-lib.sh      # W, OUT, PY, DEV, start_daemon, stop_daemon, rec, log, sha
ISCSI=scripts/uml/iscsi.sh
$ISCSI dbroot /tmp/target
mkdir -p /etc/iscsi /run/lock/iscsi /var/lib/iscsi
echo "InitiatorName=iqn.2026-12.io.overlaybd:guest" > /etc/iscsi/initiatorname.iscsi
iscsid || { log "iscsid did not start"; exit 1; }
attached() {  # IQN -> /dev/sdX of its session
    local d
    for _ in $(seq 100); do
        d=$(iscsiadm -m session -P 3 2>/dev/null | awk -v t="$1" '$1=="Target:"{m=($2==t)} m && /Attached scsi disk/ {print $4; exit}')
        [ -n "$d" ] && [ -b "/dev/$d" ] && { echo "/dev/$d"; return 0; }
        sleep 0.2
    done
    return 1
}
for w in 0 2; do
    start_daemon "$W/obd-$w.json" "$OUT/daemon-w$w.log" || exit 1
    $DEV create 1 "$W/lz4.json" --no-lun 2>>"$OUT/steps.err" || exit 1
    iqn=iqn.2026-12.io.overlaybd:golden-w$w
    $ISCSI export $iqn user_999999999/dev_1 --ro
    iscsiadm -m discovery -t sendtargets -p 127.0.0.1 > "$OUT/discovery-w$w.txt" 2>&1
    iscsiadm -m node -T $iqn -p 127.0.0.1 --login > "$OUT/login-w$w.txt" 2>&1
    rec "login-w$w.rc" $?
    d=$(attached $iqn) || { log "no disk for $iqn"; exit 1; }
    rec "disk-w$w" "$d"
    t0=$(date +%s.%N)
    rec "sha-w$w" "$(dd if="$d" bs=4M iflag=direct 2>/dev/null | sha)"
    rec "secs-w$w" "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{print b - a}')"
    rec "size-w$w" "$(blockdev --getsize64 "$d")"
    if [ $w = 2 ]; then     # restarts while the initiator reads: SIGTERM, then SIGKILL (a crash)
        for sig in TERM KILL; do
            kids=$(cat /proc/$DPID/task/*/children 2>/dev/null)
            ( dd if="$d" bs=1M iflag=direct 2>/dev/null | sha > "$OUT/inflight-$sig-sha" ) &
            ddpid=$!
            sleep 1
            kill -$sig $DPID; wait $DPID; rec "inflight-$sig-rc" $?; DPID=
            # orphans notice on their heartbeat thread (every heartbeatSec / 4): give them 15 s
            for _ in $(seq 30); do
                left=; for k in $kids; do kill -0 $k 2>/dev/null && left="$left $k"; done
                [ -z "$left" ] && break
                sleep 0.5
            done
            rec "inflight-$sig-workers-left" "$(echo $left | wc -w)"
            for k in $left; do kill -KILL $k 2>/dev/null; done
            start_daemon "$W/obd-$w.json" "$OUT/daemon-w$w.log" || exit 1
            wait $ddpid
            rec "inflight-$sig-session" "$(cat /sys/class/iscsi_session/session*/state | tr '\n' ' ')"
        done
    fi
    if [ $w = 0 ]; then     # only a named initiator with its CHAP secret gets in (libiscsi)
        aiqn=iqn.2026-12.io.overlaybd:acl ini=iqn.2026-12.io.overlaybd:allowed
        $ISCSI export $aiqn user_999999999/dev_1 --acl $ini --chap obd-user obd-secret-123
        url=127.0.0.1:3260/$aiqn/0
        iscsi-inq -i $ini iscsi://$url > "$OUT/acl-nocred.txt" 2>&1; rec acl-nocred.rc $?
        iscsi-inq -i iqn.2026-12.io.overlaybd:stranger "iscsi://obd-user%obd-secret-123@$url" \
            > "$OUT/acl-stranger.txt" 2>&1; rec acl-stranger.rc $?
        iscsi-inq -i $ini "iscsi://obd-user%wrong-secret-1@$url" > "$OUT/acl-badpass.txt" 2>&1
        rec acl-badpass.rc $?
        iscsi-inq -i $ini "iscsi://obd-user%obd-secret-123@$url" > "$OUT/acl-ok.txt" 2>&1
        rec acl-ok.rc $?
        $ISCSI unexport $aiqn; rec acl-unexport.rc $?
    fi
    if [ $w = 0 ]; then     # the daemon goes away and comes back under a logged-in initiator
        stop_daemon "stop-w$w.rc"
        start_daemon "$W/obd-$w.json" "$OUT/daemon-w$w.log" || exit 1
        rec "restart-head-sha" "$(dd if="$d" bs=1M count=64 iflag=direct 2>/dev/null | sha)"
    fi
    iscsiadm -m node -T $iqn -p 127.0.0.1 --logout > "$OUT/logout-w$w.txt" 2>&1
    rec "logout-w$w.rc" $?
    $ISCSI unexport $iqn
    $DEV remove 1
    stop_daemon "daemon-w$w.rc"
done
rec done 1
