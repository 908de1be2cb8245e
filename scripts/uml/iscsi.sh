#!/bin/bash
# iscsi.sh - export a target backstore over LIO's iSCSI fabric on loopback, inside the guest
# (run-in-uml.sh --mods iscsi_target_mod,iscsi_tcp), through configfs.
#
#   iscsi.sh dbroot DIR            persistent-reservation state under DIR (before any device:
#                                  without it every PR command answers NOT READY)
#   iscsi.sh export IQN BACKSTORE [--ro] [--chap USER PASS] [--acl INITIATOR_IQN]
#                                  BACKSTORE: core/<hba>/<name>, e.g. user_1/obd1 or fileio_2/f1;
#                                  LUN 0 of tpgt_1, portal 127.0.0.1:3260, any initiator (demo
#                                  mode; --ro: write-protected for them), CHAP if asked; --acl:
#                                  only that initiator (a node ACL mapping LUN 0, CHAP on it)
#   iscsi.sh unexport IQN          the reverse (log initiators out first)
#   iscsi.sh url IQN               iscsi://127.0.0.1:3260/IQN/0 (libiscsi's tools)
set -euo pipefail
T=/sys/kernel/config/target
PORTAL=127.0.0.1:3260
die() { echo "iscsi.sh: $*" >&2; exit 1; }
cmd=${1:-}; shift || true
case "$cmd" in
dbroot)
    mkdir -p "$1/pr"
    echo "$1" > $T/dbroot ;;
export)
    iqn=$1 bs=$2; shift 2
    ro=0 user= pass= acl=
    while [ $# -gt 0 ]; do
        case "$1" in
            --ro) ro=1; shift ;;
            --chap) user=$2 pass=$3; shift 3 ;;
            --acl) acl=$2; shift 2 ;;
            *) die "unknown option $1" ;;
        esac
    done
    [ -d "$T/core/$bs" ] || die "no backstore $T/core/$bs"
    tpg=$T/iscsi/$iqn/tpgt_1
    mkdir -p "$tpg/lun/lun_0" "$tpg/np/$PORTAL"
    ln -s "$T/core/$bs" "$tpg/lun/lun_0/$(basename "$bs")"
    auth=$tpg
    if [ -n "$acl" ]; then                      # only this initiator, LUN 0 mapped to it
        echo 0 > "$tpg/attrib/generate_node_acls"
        mkdir -p "$tpg/acls/$acl/lun_0"
        ln -s "$tpg/lun/lun_0" "$tpg/acls/$acl/lun_0/lun_0"
        echo $ro > "$tpg/acls/$acl/lun_0/write_protect"
        auth=$tpg/acls/$acl
    else
        echo 1 > "$tpg/attrib/generate_node_acls"
        echo 1 > "$tpg/attrib/cache_dynamic_acls"
        echo $ro > "$tpg/attrib/demo_mode_write_protect"
    fi
    if [ -n "$user" ]; then
        echo -n "$user" > "$auth/auth/userid"      # (a newline would be part of it)
        echo -n "$pass" > "$auth/auth/password"
        echo 1 > "$tpg/attrib/authentication"
    else
        echo 0 > "$tpg/attrib/authentication"
    fi
    echo 1 > "$tpg/enable" ;;
unexport)
    iqn=$1; tpg=$T/iscsi/$iqn/tpgt_1
    [ -d "$tpg" ] || exit 0
    echo 0 > "$tpg/enable"
    for m in "$tpg"/acls/*/lun_*/*; do [ -L "$m" ] && rm "$m"; done
    for a in "$tpg"/acls/*/; do [ -d "$a" ] && rmdir "$a"lun_* "$a"; done
    for l in "$tpg"/lun/lun_*/*; do [ -L "$l" ] && rm "$l"; done
    rmdir "$tpg"/lun/lun_* "$tpg/np/$PORTAL" "$tpg" "$T/iscsi/$iqn" ;;
url)
    echo "iscsi://$PORTAL/$1/0" ;;
*)
    sed -n '2,13p' "$0"; exit 2 ;;
esac
