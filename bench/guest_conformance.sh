#!/bin/bash
# Runs INSIDE the UML guest (scripts/uml/run-in-uml.sh), from the repository root:
#   bash bench/guest_conformance.sh DIR
# One boot, three backstores behind LIO's iSCSI fabric on 127.0.0.1:3260, each run through
# libiscsi's conformance suite `iscsi-test-cu --dataloss --test SCSI`:
#   file   kernel target_core_file over a sparse file on tmpfs, emulate_tpu=1 emulate_tpws=1
#   w0 w2  overlaybd-tcmu (workers 0 / 2): DIR/image.json's lowers + a fresh writable upper
# DIR holds obd-0.json, obd-2.json and image.json (prepared by bench/conformance.py).  The raw
# output goes to DIR/out/cu-<name>.txt; bench/conformance.py parses it.
source scripts/uml/guest-lib.sh     # (run from the repository root)
EXP=$REPO/scripts/uml/iscsi-export.sh
CFS=/sys/kernel/config/target
# persistent reservations keep state under dbroot: give it a writable folder before any device
$EXP dbroot /run/target || exit 1
SIZE=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["size"])' "$W/image.json")
run_suite() {   # NAME BACKSTORE
    local iqn=iqn.2026-12.org.overlaybd:cu-$1 t0
    $EXP export "$2" $iqn > /dev/null || return 1
    log "iscsi-test-cu on $1"
    t0=$(date +%s)
    iscsi-test-cu --dataloss --test SCSI "iscsi://127.0.0.1:3260/$iqn/0" > "$OUT/cu-$1.txt" 2>&1
    rec cu-$1.rc $?
    rec cu-$1.secs $(( $(date +%s) - t0 ))
    $EXP unexport $iqn
}

# (a) the kernel's file backstore
truncate -s "$SIZE" /run/file0.img
F=$CFS/core/fileio_1/file0
mkdir -p $F
echo -n "fd_dev_name=/run/file0.img,fd_dev_size=$SIZE" > $F/control
echo -n 1 > $F/enable
echo 1 > $F/attrib/emulate_tpu; echo 1 > $F/attrib/emulate_tpws
run_suite file core/fileio_1/file0
rmdir $F; rm -f /run/file0.img

# (b) this daemon, workers 0 and 2, golden lowers + a fresh writable upper on tmpfs
for w in 0 2; do
    up=/run/upper-$w; mkdir -p $up
    if [ -n "${OBD_TCMU:-}" ]; then      # the installed tools (tests), else this checkout's
        ( cd / && env -u PYTHONPATH "${OBD_TCMU%/*}/overlaybd-create" $up/data $up/index $(( SIZE >> 30 )) )
    else
        $PY -m overlaybd.tools.create $up/data $up/index $(( SIZE >> 30 ))
    fi > /dev/null || exit 1
    $PY - "$W/image.json" "$up" > $up/config.json <<'PY'
import json, sys
cfg = json.load(open(sys.argv[1]))
cfg.pop("size")
cfg["upper"] = {"data": sys.argv[2] + "/data", "index": sys.argv[2] + "/index"}
cfg["resultFile"] = sys.argv[2] + "/result"
print(json.dumps(cfg))
PY
    start_daemon "$W/obd-$w.json" || exit 1
    $DEV create $w $up/config.json --no-lun 2>>"$OUT/steps.err" || exit 1
    run_suite w$w core/user_999999999/dev_$w
    $DEV remove $w
    stop_daemon stop-w$w.rc
    rm -rf $up
done
log "done"
