#!/bin/bash
# Runs INSIDE the UML guest from the repository root:  bash stress/guest_stress.sh W
# (python -m stress.fullstack run starts it).  The cache gets a small tmpfs of its own (so the
# fill_cache_disk fault can fill it); upper layers live on another.
source scripts/uml/guest-lib.sh     # (run from the repository root)
mkdir -p /mnt/cachefs /mnt/upper
mount -t tmpfs -o size=1100m tmpfs /mnt/cachefs && mkdir -p /mnt/cachefs/cache
mount -t tmpfs -o size=256m tmpfs /mnt/upper
dmesg -c > /dev/null 2>&1
$PY -m stress.fullstack guest "$W"
