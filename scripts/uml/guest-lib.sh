# Sourced by the guest scripts (tests/vm/guest_*.sh, bench/guest_tcmu.sh), which run INSIDE
# the UML guest from the repository root with their work directory W as $1.  Sets W, OUT (the
# record directory), REPO, PY, PYTHONPATH and DEV (the configfs helper), and defines:
#   rec KEY VALUE        record one fact as OUT/KEY for the host-side test to assert on
#   log MESSAGE          progress on stderr, stamped with the guest's uptime
#   sha                  sha256 of stdin, hex only
#   start_daemon CONFIG [LOG]   start overlaybd-tcmu (DPID) and wait for a new "serving" line
#                        in LOG (default OUT/daemon.log); fails if it exits or takes > 60 s.
#                        OBD_TCMU set: that installed overlaybd-tcmu, run from / without
#                        PYTHONPATH (nothing from this checkout); else PY -m overlaybd.tools.tcmu
#   stop_daemon KEY      SIGTERM it and record its exit status as KEY
set -u
W=$1
OUT=$W/out
mkdir -p "$OUT"
REPO=$(pwd -P)
PY=${OBD_PYTHON:-python3}
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
DEV=$REPO/scripts/uml/tcmu-dev.sh
rec() { printf '%s' "$2" > "$OUT/$1"; }
log() { echo "[guest $(cut -d' ' -f1 /proc/uptime)] $*" >&2; }
sha() { sha256sum | cut -c1-64; }

DPID=
start_daemon() {
    local dlog=${2:-$OUT/daemon.log} n0 n
    n0=$(grep -c 'overlaybd-tcmu serving' "$dlog" 2>/dev/null)
    if [ -n "${OBD_TCMU:-}" ]; then
        ( cd / && exec env -u PYTHONPATH "$OBD_TCMU" "$1" ) >>"$OUT/daemon.out" 2>&1 &
    else
        $PY -m overlaybd.tools.tcmu "$1" >>"$OUT/daemon.out" 2>&1 &
    fi
    DPID=$!
    for _ in $(seq 600); do
        n=$(grep -c 'overlaybd-tcmu serving' "$dlog" 2>/dev/null)
        [ "${n:-0}" -gt "${n0:-0}" ] && return 0
        kill -0 $DPID 2>/dev/null || break
        sleep 0.1
    done
    log "daemon did not start"; return 1
}
stop_daemon() {
    kill -TERM $DPID; wait $DPID; rec "$1" $?; DPID=
}
