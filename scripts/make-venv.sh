#!/bin/bash
# make-venv.sh PYTHON VENV [--bundled-pip]: create the project's virtualenv (installs python3-venv on
# Debian if needed).  --bundled-pip: keep the pip that comes with Python (offline), do not upgrade.
set -euo pipefail
py=${1:-python3}; venv=${2:-.venv}
if ! "$py" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    echo "[venv] installing python3-venv (apt-get)" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null && apt-get install -y -q python3-venv python3-dev >/dev/null
fi
"$py" -m venv "$venv"
[ "${3:-}" = --bundled-pip ] || "$venv/bin/python" -m pip install -q --upgrade pip setuptools wheel
