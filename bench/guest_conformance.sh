#!/bin/bash
# Runs INSIDE the UML guest (run-in-uml.sh --mods iscsi_target_mod) from the repository root:
#   bash bench/guest_conformance.sh DIR
# DIR holds obd-<workers>.json (service configs) and image.json (the golden lz4 lowers with a
# writable upper created here on the guest's tmpfs, which can punch holes).  In one boot, libiscsi's
# conformance suite (iscsi-test-cu --dataloss, family $OBD_CU_FAMILY, default SCSI) runs against
# LIO's iSCSI fabric exporting (1) the kernel's file backstore of a 1 GiB tmpfs file with
# emulate_tpu=1 emulate_tpws=1, then (2) overlaybd-tcmu with each workers setting in
# $OBD_CU_WORKERS (default "0 2").  Each run's output (verbose: the tests' own lines) lands in
# DIR/out/cu-<name>.txt.
source scripts/uml/guest-lib.sh      # W, OUT, PY, DEV, start_daemon
FAMILY=${OBD_CU_FAMILY:-SCSI}
ISCSI=scripts/uml/iscsi.sh
CFS=/sys/kernel/config/target
$ISCSI dbroot /tmp/target
cu() {  # NAME IQN
    timeout 1500 iscsi-test-cu --dataloss -t "$FAMILY" "$($ISCSI url "$2")" > "$OUT/cu-$1.txt" 2>&1
    rec "cu-$1.rc" $?
    log "$1: $(grep -c 'passed' "$OUT/cu-$1.txt") lines with 'passed'"
}
# (1) the kernel's file backstore
truncate -s 1G /tmp/flat.img
F=$CFS/core/fileio_7/conf
mkdir -p $F
echo -n "fd_dev_name=/tmp/flat.img,fd_dev_size=$((1 << 30))" > $F/control
echo -n 1 > $F/enable
echo 1 > $F/attrib/emulate_tpu          # (after enable: before it, 6.1 oopses on this write)
echo 1 > $F/attrib/emulate_tpws
$ISCSI export iqn.2026-12.io.overlaybd:fileio fileio_7/conf
cu fileio iqn.2026-12.io.overlaybd:fileio
$ISCSI unexport iqn.2026-12.io.overlaybd:fileio
rmdir $F $CFS/core/fileio_7
rm -f /tmp/flat.img
# (2) overlaybd-tcmu, golden lz4 lowers + a fresh writable upper on tmpfs
for w in ${OBD_CU_WORKERS:-0 2}; do
    rm -f /tmp/up.data /tmp/up.index
    $PY -m overlaybd.tools.create /tmp/up.data /tmp/up.index 1 2>>"$OUT/steps.err"
    start_daemon "$W/obd-$w.json" "$OUT/daemon-w$w.log" || exit 1
    $DEV create 1 "$W/image.json" --no-lun --max-data-area-mb 64 2>>"$OUT/steps.err" || exit 1
    iqn=iqn.2026-12.io.overlaybd:obd-w$w
    $ISCSI export $iqn user_999999999/dev_1
    cu obd-w$w $iqn
    $ISCSI unexport $iqn
    $DEV remove 1
    stop_daemon "daemon-w$w.rc"
done
