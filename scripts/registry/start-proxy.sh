#!/bin/bash
# start-proxy.sh --dir D [--port P]: tinyproxy forward proxy on 127.0.0.1, access log D/proxy.log.
exec python3 "$(dirname "$0")/harness.py" proxy "$@"
