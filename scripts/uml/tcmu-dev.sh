#!/bin/bash
# tcmu-dev.sh - create/remove overlaybd TCMU devices through configfs, the way the
# accelerated-container-image snapshotter does (spec §9.4).  Run as root where configfs,
# target_core_user and tcm_loop are available (e.g. inside run-in-uml.sh).
#
#   tcmu-dev.sh create ID CONFIG [--dev-id X|--no-dev-id] [--nl-reply N] [--max-data-area-mb N]
#                                [--hba N] [--no-lun] [--wait SECS]    -> prints /dev/sdX
#       dev_config=overlaybd/CONFIG;ID (or ;X), max_data_area_mb (default 4), enable (retried on
#       EAGAIN), attrib/cmd_time_out, then a tcm_loop LUN; prints the SCSI disk.  When enable
#       fails, the resultFile (init-debug.log next to CONFIG, or the config's resultFile) is
#       printed on stderr and the status is 1.
#   tcmu-dev.sh lun ID [--hba N] [--wait SECS]   attach an enabled device to tcm_loop
#   tcmu-dev.sh remove ID [--hba N]              tear down: link, lun, tpgt, naa dir, device
#   tcmu-dev.sh uio ID [--hba N]                 prints /dev/uioN
#   tcmu-dev.sh list [--hba N]
#   tcmu-dev.sh fileio ID FILE        a kernel target_core_file backstore of FILE (a baseline
#                                     for benchmarks) on tcm_loop -> prints /dev/sdX
#   tcmu-dev.sh remove-fileio ID
set -euo pipefail
CFS=/sys/kernel/config/target
die() { echo "tcmu-dev: $*" >&2; exit 1; }
ensure() {
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
    [ -d $CFS/core ] || modprobe target_core_mod
    [ -d /sys/module/target_core_user ] || modprobe target_core_user
    [ -d /sys/module/tcm_loop ] || modprobe tcm_loop
    [ -d $CFS/loopback ] || mkdir -p $CFS/loopback
}
naa_of() { local id=$1; printf 'naa.199%013d' "$id" 2>/dev/null || printf 'naa.199%s' "$id"; }
cmd=${1:-}; shift || true
id=${1:-}; [ -n "$id" ] && shift || true
HBA=999999999; nl= mda=4 lun=1 wait=30 devid=1 dev_id=
args=()
while [ $# -gt 0 ]; do case "$1" in
    --hba) HBA=$2; shift 2 ;; --nl-reply) nl=$2; shift 2 ;;
    --max-data-area-mb) mda=$2; shift 2 ;; --no-lun) lun=0; shift ;;
    --no-dev-id) devid=0; shift ;; --dev-id) dev_id=$2; shift 2 ;; --wait) wait=$2; shift 2 ;;
    *) args+=("$1"); shift ;; esac; done
D=$CFS/core/user_$HBA/dev_$id
case "$cmd" in fileio|remove-fileio) D=$CFS/core/fileio_$HBA/dev_$id ;; esac
find_disk() {
    local t=$1 addr end b
    addr=$(cat "$t/address")
    end=$(( $(date +%s) + wait ))
    while [ "$(date +%s)" -le $end ]; do
        for b in /sys/class/scsi_device/"$addr":0/device/block/*; do
            [ -e "$b" ] && [ -b "/dev/${b##*/}" ] && { echo "/dev/${b##*/}"; return 0; }
        done
        sleep 0.1
    done
    die "no /dev/sdX appeared for dev_$id (address '$addr')"
}
attach_lun() {
    local naa t
    naa=$(naa_of "$id"); t=$CFS/loopback/$naa/tpgt_1
    mkdir -p "$t/lun/lun_0"
    echo -n "$naa" > "$t/nexus"
    ln -s "$D" "$t/lun/lun_0/dev_$id"
    disk=$(find_disk "$t")
    echo 2147483 > "/sys/block/${disk#/dev/}/device/timeout" 2>/dev/null || true
    echo "$disk"
}
case "$cmd" in
create)
    [ ${#args[@]} -ge 1 ] || die "usage: create ID CONFIG [options]"
    config=${args[0]}
    ensure
    mkdir -p "$D"
    cfg="overlaybd/$config"; [ $devid = 1 ] && cfg="$cfg;${dev_id:-$id}"
    echo -n "dev_config=$cfg" > "$D/control"
    echo -n "max_data_area_mb=$mda" > "$D/control"
    [ -n "$nl" ] && echo -n "nl_reply_supported=$nl" > "$D/control"
    ok=0
    for _ in $(seq 100); do
        if err=$(echo -n 1 2>&1 > "$D/enable"); then ok=1; break; fi
        case "$err" in *"Resource temporarily unavailable"*) sleep 0.05 ;; *) break ;; esac
    done
    if [ $ok = 0 ]; then
        rf=$(python3 -c 'import json,os,sys; p=sys.argv[1]; r=json.load(open(p)).get("resultFile","");
print(r if not r or os.path.isabs(r) else os.path.join(os.path.dirname(p), r))' "$config" 2>/dev/null || true)
        echo "tcmu-dev: failed to enable dev_$id: ${err#*: }" >&2
        [ -n "$rf" ] && [ -e "$rf" ] && echo "resultFile: $(cat "$rf")" >&2
        rmdir "$D" 2>/dev/null || true
        exit 1
    fi
    echo -n 2147483 > "$D/attrib/cmd_time_out" 2>/dev/null || true
    [ $lun = 1 ] || exit 0
    attach_lun ;;
lun) [ -d "$D" ] || die "no device dev_$id"; attach_lun ;;
fileio)
    [ ${#args[@]} -ge 1 ] || die "usage: fileio ID FILE"
    ensure
    mkdir -p "$D"
    echo -n "fd_dev_name=${args[0]},fd_dev_size=$(stat -c %s "${args[0]}")" > "$D/control"
    echo -n 1 > "$D/enable"
    attach_lun ;;
remove|remove-fileio)
    naa=$(naa_of "$id"); t=$CFS/loopback/$naa/tpgt_1
    if [ -d "$t" ]; then
        rm -f "$t/lun/lun_0/dev_$id"
        rmdir "$t/lun/lun_0" 2>/dev/null || true
        rmdir "$t" 2>/dev/null || true
        rmdir "$CFS/loopback/$naa" 2>/dev/null || true
    fi
    [ -d "$D" ] && rmdir "$D"
    exit 0 ;;
uio)
    for u in /sys/class/uio/uio*; do
        case "$(cat "$u/name" 2>/dev/null)" in tcm-user/$HBA/dev_$id/*) echo "/dev/${u##*/}"; exit 0 ;; esac
    done
    exit 1 ;;
list) ls "$CFS/core/user_$HBA" 2>/dev/null | grep '^dev_' || true ;;
*) sed -n '2,17p' "$0"; exit 2 ;;
esac
