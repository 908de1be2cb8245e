#!/bin/bash
# stop-registry.sh --dir D: stops the registry, token server, shim and proxy recorded in D.
exec python3 "$(dirname "$0")/harness.py" stop "$@"
