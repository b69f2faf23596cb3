#!/usr/bin/env bash
# Create .venv and install Noti into it (with the dev extras when given "dev"), pinned by constraints.txt.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
extras=${1:-}

# `python -m` puts the working directory first on sys.path, where the operator/ folder would
# shadow the standard library's operator module: run Python from elsewhere.
cd /
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    echo "Noti needs Python 3.11 or newer; set PYTHON=/path/to/python3.11" >&2
    exit 1
fi
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv" || {
        echo "could not create a virtualenv: on Debian/Ubuntu run 'apt-get install python3-venv'" >&2
        exit 1
    }
fi
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
"$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -U pip
"$root/.venv/bin/python" -m pip install -q --disable-pip-version-check -c "$root/constraints.txt" -e "$spec"
