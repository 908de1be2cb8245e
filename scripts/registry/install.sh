#!/bin/bash
# install.sh: packages for the loopback registry fixture (Debian 12), idempotent, run as root
# by scripts/install-deps.sh.  docker-registry (CNCF distribution 2.8), tinyproxy (forward
# proxy for the proxyConfig tests), apache2-utils (htpasswd -B), python3-cryptography (the
# token server signs ES256 JWTs with it).  The packaged services are kept from starting.
set -euo pipefail
PKGS="docker-registry tinyproxy apache2-utils python3-cryptography"
missing=$(for p in $PKGS; do dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"; done)
if [ -n "$missing" ]; then
    [ "$(id -u)" = 0 ] || { echo "registry/install.sh: need root to apt-get install:" $missing >&2; exit 1; }
    export DEBIAN_FRONTEND=noninteractive
    made_policy=0
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; made_policy=1
    fi
    echo "[registry] apt-get install" $missing >&2
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends $missing >/dev/null
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi
echo "[registry] $(docker-registry --version 2>&1 | head -1); $(tinyproxy -v 2>&1 | head -1)" >&2
