#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash tests/vm/guest_bench.sh DIR
# DIR holds golden.json (the golden image), merged.img (the same disk exported to a plain
# file) and obd-<workers>.json.  Reads the overlaybd device and a kernel target_core_file
# backstore of merged.img with dd and fio (direct I/O), for the inline engine and 2 workers;
# fio's JSON reports land in DIR/out/<dev>-<test>.json, dd's summary in DIR/out/<dev>-dd.txt.
set -u
W=$1; OUT=$W/out; mkdir -p "$OUT"
REPO=$(pwd -P)
PY=${OBD_PYTHON:-python3}
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}
DEV=$REPO/scripts/uml/tcmu-dev.sh
RUNTIME=${OBD_BENCH_SECONDS:-5}
sha64() { dd if="$1" bs=1M count=64 iflag=direct 2>/dev/null | sha256sum | cut -c1-64; }
bench() {  # NAME DEVICE
    dd if="$2" of=/dev/null bs=1M count=512 iflag=direct 2> "$OUT/$1-dd.txt"
    fio --name=seq --filename="$2" --rw=read --bs=1M --iodepth=8 --ioengine=libaio --direct=1 \
        --size=1G --runtime="$RUNTIME" --time_based --output-format=json > "$OUT/$1-seq.json" 2>>"$OUT/fio.err"
    fio --name=rand --filename="$2" --rw=randread --bs=4k --iodepth=16 --ioengine=libaio --direct=1 \
        --size=1G --runtime="$RUNTIME" --time_based --output-format=json > "$OUT/$1-rand4k.json" 2>>"$OUT/fio.err"
}
ref=$($DEV fileio 50 "$W/merged.img")
sha64 "$ref" > "$OUT/fileio.sha"
bench fileio "$ref"
for w in 0 2; do
    $PY -m overlaybd.tools.tcmu "$W/obd-$w.json" >>"$OUT/daemon.out" 2>&1 &
    dpid=$!
    for _ in $(seq 600); do
        [ "$(grep -c 'overlaybd-tcmu serving' "$OUT/daemon-w$w.log" 2>/dev/null)" = 1 ] && break
        sleep 0.1
    done
    d=$($DEV create 1 "$W/golden.json")
    sha64 "$d" > "$OUT/obd-w$w.sha"
    bench "obd-w$w" "$d"
    $DEV remove 1
    kill -TERM $dpid; wait $dpid
done
$DEV remove-fileio 50
