#!/bin/bash
# make demo: install the service the way users do (scripts/install-service.sh: a fresh venv with
# a wheel built from this checkout, the unit and the config), under .cache/demo instead of /
# (OBD_DEMO_ROOT to change it); then, in a real kernel, build an ext4 image in three lz4 layers,
# push it to a token-auth registry and serve it lazily (time to first byte, bytes fetched);
# then serve the embedded golden image (3 upstream-made layers,
# 1 GiB) through that overlaybd-tcmu in a real Linux kernel (User-Mode Linux 6.1 with
# target_core_user), the way containerd's snapshotter creates devices, and check every byte
# against the manifest.  Then a writable image: overlaybd-create, mkfs.ext4, files, commit, read
# back as a lower.  Nothing runs from the checkout itself.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
root=${OBD_DEMO_ROOT:-$repo/.cache/demo}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (the kernel fixture needs it)" >&2; exit 1; }
echo "== installing the service under $root (scripts/install-service.sh --root)"
bash scripts/install-service.sh --root "$root"
# part 1: a container image served before it is downloaded (scripts/demo-lazy-guest.sh);
# part 2: upstream's golden image and a writable image (scripts/demo-guest.sh)
exec scripts/uml/run-in-uml.sh -t 900 -- env -u PYTHONPATH \
    bash -c 'bash scripts/demo-lazy-guest.sh "$0" && bash scripts/demo-guest.sh "$0"' "$root"
