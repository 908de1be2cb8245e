#!/bin/bash
# make demo: serve the embedded golden image (3 upstream-made layers, 1 GiB) through
# overlaybd-tcmu in a real Linux kernel (User-Mode Linux 6.1 with target_core_user), the way
# containerd's snapshotter creates devices, and check every byte against the manifest.
# Then a writable image: overlaybd-create, mkfs.ext4, files, commit, read back as a lower.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
PY=${OBD_PYTHON:-$repo/.venv/bin/python}
[ -x "$PY" ] || { echo "demo: $PY missing: run 'make install' first" >&2; exit 1; }
[ "$(id -u)" = 0 ] || { echo "demo: run as root (the kernel fixture needs it)" >&2; exit 1; }
exec scripts/uml/run-in-uml.sh -t 600 -- bash scripts/demo-guest.sh "$PY"
