#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash bench/guest_tcmu.sh DIR
# DIR holds image-<stack>.json (a 4-layer 1 GiB image; stacks in OBD_BENCH_STACKS, default
# "plain lz4"), flat.raw (the same disk as a plain file) and obd-<workers>.json.  fio (libaio, direct) against a kernel target_core_file backstore of
# flat.raw, a naive Python handler of flat.raw (bench/naive_tcmu.py), then overlaybd-tcmu
# with each engine setting; fio's JSON reports land in
# DIR/out/<name>-<test>.json (name: fileio, naive, obd-<stack>-w<workers>), the daemon's CPU
# seconds and peak RSS per process (psutil) in DIR/out/<name>-procs.json, a sha256 of the first
# 64 MiB in DIR/out/<name>.sha; for overlaybd, each process's counters before and after each
# job in DIR/out/<name>-<test>.c0 / .c1 (counters below).
source scripts/uml/guest-lib.sh      # W, OUT, PY, DEV, start_daemon (from the repository root)
RUNTIME=${OBD_BENCH_SECONDS:-5}
STACKS=${OBD_BENCH_STACKS:-plain lz4}
sha64() {  # the first 64 MiB of $1, once its block device can be read (it may appear late)
    local i
    for i in $(seq 50); do
        dd if="$1" of=/dev/null bs=4k count=1 iflag=direct 2>/dev/null && break
        sleep 0.1
    done
    dd if="$1" bs=1M count=64 iflag=direct 2>/dev/null | sha256sum | cut -c1-64
}
# One line per process of the daemon's tree (CPID: the supervisor, then its children):
# pid, voluntary and involuntary context switches of its main thread, read-like and write-like
# system calls of the whole process (/proc/PID/io), user and system CPU in clock ticks.
# No tool attaches to the daemon: what it does per command is not changed by being counted.
counters() {
    local p
    for p in $CPID $(cat /proc/$CPID/task/*/children 2>/dev/null); do
        [ -r /proc/$p/io ] || continue
        echo "$p $(awk '/^voluntary_ctxt/{v=$2} /^nonvoluntary_ctxt/{n=$2} END{print v, n}' /proc/$p/status)" \
             "$(awk '/^syscr/{r=$2} /^syscw/{w=$2} END{print r, w}' /proc/$p/io)" \
             "$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f12,13)"
    done 2>/dev/null
}
CPID=
fio1() {  # NAME TEST DEVICE RW BS QD
    [ -n "$CPID" ] && counters > "$OUT/$1-$2.c0"
    fio --name="$2" --filename="$3" --rw="$4" --bs="$5" --iodepth="$6" --ioengine=libaio \
        --direct=1 --size=1G --runtime="$RUNTIME" --time_based --output-format=json \
        > "$OUT/$1-$2.json" 2>>"$OUT/fio.err"
    [ -n "$CPID" ] && counters > "$OUT/$1-$2.c1"
    return 0
}
bench() {  # NAME DEVICE
    fio1 "$1" seq1m-qd16 "$2" read 1M 16
    fio1 "$1" rand4k-qd32 "$2" randread 4k 32
    fio1 "$1" rand4k-qd1 "$2" randread 4k 1
}
nproc > "$OUT/nproc"                   # the daemon's default worker count follows it
flat=$(readlink -f "$W/flat.raw")      # (a symlink would give the backstore a zero size)
# Both contenders read from a warm guest page cache (a cold read through hostfs runs at ~200
# MiB/s in the guest): the flat file before the kernel's backstore, the image (through
# overlaybd-export) right before each overlaybd run.
dd if="$flat" of=/dev/null bs=1M 2>/dev/null
ref=$($DEV fileio 50 "$flat")
sha64 "$ref" > "$OUT/fileio.sha"
bench fileio "$ref"
$DEV remove-fileio 50
# the naive single-process Python handler of the same flat file (bench/naive_tcmu.py)
$PY -m bench.naive_tcmu /dev_77/ "$flat" >>"$OUT/naive.out" 2>&1 &
npid=$!
d=$($DEV create 77 "$flat" --nl-reply -1)
sha64 "$d" > "$OUT/naive.sha"
bench naive "$d"
kill -TERM $npid; wait $npid
$DEV remove 77
# OBD_BENCH_TREES "label=path ...": serve from each source tree in turn (PYTHONPATH), a round
# at a time, so that two versions meet the same kernel; default: this checkout alone.
TREES=${OBD_BENCH_TREES:-}
ROUNDS=${OBD_BENCH_ROUNDS:-1}
base_pp=$PYTHONPATH
for stack in $STACKS; do
 for round in $(seq "$ROUNDS"); do
  for tree in ${TREES:-"=$REPO"}; do
   label=${tree%%=*}
   export PYTHONPATH=${tree#*=}:$base_pp
   cd "${tree#*=}"        # (python -m puts the working directory ahead of PYTHONPATH)
   # a tree the guest cannot see would silently fall back to this checkout's package
   case $($PY -c 'import overlaybd; print(overlaybd.__file__)') in
     "${tree#*=}"/*) ;;
     *) log "tree ${tree#*=} is not what the guest imports"; exit 1 ;;
   esac
   for w in ${OBD_BENCH_WORKERS:-0 1 2}; do
    name="obd${label:+-$label}-$stack-w$w${TREES:+-r$round}"
    $PY -m overlaybd.tools.export "$W/image-$stack.json" - 2>/dev/null | dd of=/dev/null bs=1M 2>/dev/null
    start_daemon "$W/obd-$w.json" "$OUT/daemon-w$w.log" || exit 1   # (the log its config names)
    dpid=$DPID
    $PY -m bench.proctree $dpid "$OUT/$name-procs.json" &
    spid=$!
    d=$($DEV create 1 "$W/image-$stack.json")
    sha64 "$d" > "$OUT/$name.sha"
    CPID=$dpid
    bench "$name" "$d"
    CPID=
    $DEV remove 1
    kill -TERM $dpid; wait $dpid; wait $spid
   done
   cd "$REPO"
  done
 done
done
export PYTHONPATH=$base_pp
