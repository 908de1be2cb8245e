#!/bin/bash
# run-in-uml.sh [options] [--] COMMAND...
# Run COMMAND as root inside a throw-away User-Mode-Linux 6.1 guest (Debian's user-mode-linux,
# unpacked by scripts/uml/install.sh) with configfs mounted and target_core_user, tcm_loop,
# target_core_file, sd_mod, sg and loop loaded.  The guest root is the host root through hostfs
# (read-only, under a tmpfs overlay); the current directory and every --rw DIR are shared
# read-write; /tmp, /run, /var/tmp, /dev/shm are fresh tmpfs.  No KVM needed; boots in ~2 s.
# The environment and the working directory carry over; stdin is /dev/null; stdout/stderr are
# relayed (streamed).  Exit status: COMMAND's; 124 timeout; 125 fixture failure.
# Options: -t/--timeout SECS (default 900), -m/--mem MB (default 2048), --rw DIR (repeatable),
#          --no-cwd-rw, --keep (keep the run dir with the guest console log), -v (print console),
#          --mods M1,M2 (more modules to load, e.g. iscsi_target_mod,iscsi_tcp for iSCSI),
#          --ncpus N (N > 1: the SMP kernel scripts/uml/build-smp-uml.sh builds; benchmarks only).
# Env: OVERLAYBD_UML_DIR (default /var/cache/overlaybd-uml).
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${OVERLAYBD_UML_DIR:-/var/cache/overlaybd-uml}
TIMEOUT=900; MEM=2048; VERBOSE=0; KEEP=0; CWD_RW=1; RW=(); NCPUS=1
MODS=configfs,uio,target_core_mod,target_core_user,tcm_loop,target_core_file,sd_mod,sg,loop
while [ $# -gt 0 ]; do
    case "$1" in
        -t|--timeout) TIMEOUT=$2; shift 2 ;;
        -m|--mem) MEM=$2; shift 2 ;;
        --rw) RW+=("$(realpath "$2")"); shift 2 ;;
        --no-cwd-rw) CWD_RW=0; shift ;;
        --mods) MODS=$MODS,$2; shift 2 ;;
        --ncpus) NCPUS=$2; shift 2 ;;
        --keep) KEEP=1; shift ;;
        -v|--verbose) VERBOSE=1; shift ;;
        -h|--help) sed -n '2,/^# Env/p' "$0"; exit 0 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
die() { echo "run-in-uml: $*" >&2; exit 125; }
[ $# -gt 0 ] || die "usage: $0 [options] [--] COMMAND..."
UML=$DIR/pkg/usr/bin/linux.uml; MROOT=$DIR/mroot; SMP=()
[ -x "$UML" ] || die "UML not installed: run (as root) $HERE/install.sh"
case "$NCPUS" in ''|*[!0-9]*|0) die "--ncpus wants a positive number, got '$NCPUS'" ;; esac
if [ "$NCPUS" -gt 1 ]; then     # SMP needs the seccomp stub mode; everything is built in
    [ -e "$DIR/uml-smp/.complete" ] || die "no SMP kernel: run $HERE/build-smp-uml.sh (once, 10-20 min)"
    UML=$DIR/uml-smp/linux; MROOT=$DIR/uml-smp/mroot; SMP=(ncpus="$NCPUS" seccomp=on)
fi
mkdir -p "$DIR/runs"; RUN=$(mktemp -d "$DIR/runs/r.XXXXXX") || die "mktemp failed"
UPID=; TPIDS=()
cleanup() {
    [ -n "$UPID" ] && kill "$UPID" 2>/dev/null
    for p in "${TPIDS[@]}"; do kill "$p" 2>/dev/null; done
    if [ $KEEP = 1 ]; then echo "run-in-uml: run dir kept: $RUN" >&2; else rm -rf "$RUN"; fi
}
trap cleanup EXIT; trap 'exit 130' INT TERM
printf '%q ' "$@" > "$RUN/cmd.sh"; echo >> "$RUN/cmd.sh"
export -p | grep -vE '^declare -x (BASH_[A-Z_]*|SHLVL|PWD|OLDPWD|_|HOSTNAME|TMPDIR)(=|$)' > "$RUN/env.sh"
pwd -P > "$RUN/cwd"
[ $CWD_RW = 1 ] && RW=("$(pwd -P)" "${RW[@]}")
: > "$RUN/shares"
for d in "${RW[@]}"; do
    case "$d" in *' '*|*$'\t'*|*,*) die "cannot share a dir whose name has a space or comma: $d" ;; esac
    [ "$d" = / ] && die "refusing to share / read-write"
    echo "$d" >> "$RUN/shares"
done
cp "$HERE/guest/stage2.sh" "$RUN/stage2.sh"
: > "$RUN/stdout"; : > "$RUN/stderr"
# UML keeps guest memory in a file under TMPDIR: it must be a tmpfs that allows exec.
# The xstate shim lets UML 6.1 restore registers on hosts with a larger XSAVE area (AMX).
SHIM=; [ -e "$DIR/xstate-shim.so" ] && SHIM=$DIR/xstate-shim.so
LD_PRELOAD=$SHIM TMPDIR=/dev/shm timeout -k 5 "$TIMEOUT" "$UML" mem="${MEM}M" rootfstype=hostfs rootflags=/ ro \
    init="$HERE/guest/init.sh" con0=null,fd:3 con=null ssl=null panic=-1 quiet \
    obd.dir="$RUN" obd.mroot="$MROOT" obd.mods="$MODS" "${SMP[@]}" \
    </dev/null 3>"$RUN/console.log" >"$RUN/uml.log" 2>&1 &
UPID=$!
tail -n +1 -f --pid=$UPID "$RUN/stdout" & TPIDS+=($!)
tail -n +1 -f --pid=$UPID "$RUN/stderr" >&2 & TPIDS+=($!)
wait $UPID; urc=$?; UPID=
wait "${TPIDS[@]}" 2>/dev/null; TPIDS=()
if [ -e "$RUN/rc" ]; then
    rc=$(cat "$RUN/rc")
else
    if [ $urc = 124 ] || [ $urc = 137 ]; then rc=124; echo "run-in-uml: timeout after ${TIMEOUT}s" >&2
    else rc=125; echo "run-in-uml: the guest ended without a result (rc=$urc)" >&2; fi
    tail -n 20 "$RUN/uml.log" >&2; tail -n 40 "$RUN/console.log" >&2
fi
[ $VERBOSE = 1 ] && { echo "---- guest console ----" >&2; cat "$RUN/console.log" >&2; }
exit "$rc"
