#!/bin/bash
# start-registry.sh --dir D [--auth none|basic|token] [--port P] [--token-port TP]
#                   [--redirect-port RP --cdn-port CP] [--user U --password PW] [--log-level L]
# Starts docker-registry on 127.0.0.1 (plus token server / redirect shim); prints JSON settings
# (also in D/env.json).  Stop with stop-registry.sh --dir D (kills only the pids recorded in D).
exec python3 "$(dirname "$0")/harness.py" start "$@"
