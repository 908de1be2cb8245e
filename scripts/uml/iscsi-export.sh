#!/bin/bash
# iscsi-export.sh - put a LIO backstore (an overlaybd TCMU device, or a target_core_file disk)
# behind the kernel's iSCSI target (iscsi_target_mod) through configfs only, no targetcli.
# Run as root where configfs and the target modules are available (e.g. inside run-in-uml.sh).
#
#   iscsi-export.sh export BACKSTORE IQN [--portal IP:PORT] [--acl INITIATOR_IQN]
#                                        [--chap USER PASS] [--ro]
#       BACKSTORE: a device dir under /sys/kernel/config/target, e.g. core/user_999999999/dev_1
#       (tcmu-dev.sh create ... --no-lun) or core/fileio_1/disk0.  Makes IQN/tpgt_1 with the
#       device as lun_0 and a portal (default 127.0.0.1:3260), then enables the TPG.
#       Without --acl every initiator may log in (demo mode: generate_node_acls=1); with --acl
#       only that initiator, through a node ACL mapping lun_0.  --chap sets CHAP (userid and
#       password on the ACL, or on the TPG in demo mode) and attrib/authentication=1.  --ro
#       exports the LUN write-protected (demo_mode_write_protect=1, or the mapped LUN's
#       write_protect=1).
#   iscsi-export.sh unexport IQN      disable the TPG and remove ACLs, portal, LUN and target
#   iscsi-export.sh dbroot DIR        point the kernel's persistent-reservation store at DIR
#                                     (must happen before the first backstore exists)
#   iscsi-export.sh list
set -euo pipefail
CFS=/sys/kernel/config/target
die() { echo "iscsi-export: $*" >&2; exit 1; }
ensure() {
    mountpoint -q /sys/kernel/config || mount -t configfs configfs /sys/kernel/config
    [ -d $CFS/core ] || modprobe target_core_mod
    [ -d /sys/module/iscsi_target_mod ] || modprobe iscsi_target_mod
    [ -d $CFS/iscsi ] || mkdir -p $CFS/iscsi
}
cmd=${1:-}; shift || true
case "$cmd" in
export)
    [ $# -ge 2 ] || die "usage: export BACKSTORE IQN [options]"
    bs=${1#$CFS/}; iqn=$2; shift 2
    portal=127.0.0.1:3260 acl= chap_user= chap_pass= ro=0
    while [ $# -gt 0 ]; do case "$1" in
        --portal) portal=$2; shift 2 ;; --acl) acl=$2; shift 2 ;;
        --chap) chap_user=$2; chap_pass=$3; shift 3 ;; --ro) ro=1; shift ;;
        *) die "unknown option $1" ;; esac; done
    ensure
    [ -d "$CFS/$bs" ] || die "no backstore $CFS/$bs"
    [ "$(cat "$CFS/$bs/enable" 2>/dev/null)" = 1 ] || die "backstore $bs is not enabled"
    t=$CFS/iscsi/$iqn/tpgt_1
    [ -e "$t" ] && die "$iqn already exists"
    mkdir -p "$t/lun/lun_0"
    ln -s "$CFS/$bs" "$t/lun/lun_0/${bs##*/}"
    mkdir "$t/np/$portal"
    if [ -z "$acl" ]; then
        echo 1 > "$t/attrib/generate_node_acls"
        echo 1 > "$t/attrib/cache_dynamic_acls"
        echo $ro > "$t/attrib/demo_mode_write_protect"
        if [ -n "$chap_user" ]; then
            echo -n "$chap_user" > "$t/auth/userid"
            echo -n "$chap_pass" > "$t/auth/password"
        fi
    else
        echo 0 > "$t/attrib/generate_node_acls"
        mkdir -p "$t/acls/$acl/lun_0"
        ln -s "$t/lun/lun_0" "$t/acls/$acl/lun_0/lun_0"
        echo $ro > "$t/acls/$acl/lun_0/write_protect"
        if [ -n "$chap_user" ]; then
            echo -n "$chap_user" > "$t/acls/$acl/auth/userid"
            echo -n "$chap_pass" > "$t/acls/$acl/auth/password"
        fi
    fi
    if [ -n "$chap_user" ]; then echo 1 > "$t/attrib/authentication"
    else echo 0 > "$t/attrib/authentication"; fi
    echo 1 > "$t/enable"
    echo "iscsi://$portal/$iqn/0" ;;
unexport)
    [ $# -ge 1 ] || die "usage: unexport IQN"
    iqn=$1; t=$CFS/iscsi/$iqn/tpgt_1
    [ -d "$CFS/iscsi/$iqn" ] || exit 0
    if [ -d "$t" ]; then
        echo 0 > "$t/enable" 2>/dev/null || true
        for a in "$t"/acls/*/; do
            [ -d "$a" ] || continue
            for m in "$a"lun_*/; do
                [ -d "$m" ] || continue
                find "$m" -maxdepth 1 -type l -delete; rmdir "$m"
            done
            rmdir "$a"
        done
        for l in "$t"/lun/lun_*/; do
            [ -d "$l" ] || continue
            find "$l" -maxdepth 1 -type l -delete; rmdir "$l"
        done
        for p in "$t"/np/*/; do [ -d "$p" ] && rmdir "$p"; done
        rmdir "$t"
    fi
    rmdir "$CFS/iscsi/$iqn" ;;
dbroot)
    [ $# -ge 1 ] || die "usage: dbroot DIR"
    ensure
    mkdir -p "$1/pr" "$1/alua"
    echo -n "$1" > $CFS/dbroot ;;
list) ensure; for t in "$CFS"/iscsi/*/; do [ -d "${t}tpgt_1" ] && basename "$t"; done; true ;;
*) sed -n '2,21p' "$0"; exit 2 ;;
esac
