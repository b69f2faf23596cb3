#!/usr/bin/env bash
# Create .venv and install Noti into it (with the dev extras when given "dev"), pinned by constraints.txt.
# Installs only when the venv is new or pyproject.toml / constraints.txt changed since the last install,
# so a complete .venv starts offline and quietly.
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
venv="$root/.venv"
stamp="$venv/.noti-install"
digest=$(cat "$root/pyproject.toml" "$root/constraints.txt" | sha256sum | cut -d' ' -f1)
# The stamp holds "<digest> <extras>"; a dev install also serves a runtime-only start.
if [ -x "$venv/bin/noti" ] && [ -f "$stamp" ]; then
    read -r stamped_digest stamped_extras <"$stamp" || true
    if [ "$stamped_digest" = "$digest" ] && { [ -z "$extras" ] || [ "${stamped_extras:-}" = "$extras" ]; }; then
        exit 0
    fi
fi
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv" || {
        echo "could not create a virtualenv: on Debian/Ubuntu run 'apt-get install python3-venv'" >&2
        exit 1
    }
fi
echo "installing Noti${extras:+ with its $extras extras} into $venv (once; again only when pyproject.toml or constraints.txt change)" >&2
spec="$root"
[ -n "$extras" ] && spec="$root[$extras]"
pip=("$venv/bin/python" -m pip install -q --disable-pip-version-check)
"${pip[@]}" -U pip
# setuptools' editable-install notice is advice for package authors, not news for a user.
PYTHONWARNINGS=ignore "${pip[@]}" -c "$root/constraints.txt" -e "$spec" 2> >(grep -v -e '^\s*$' -e 'Warning' -e '!!' -e '\*\*\*' -e 'Please be careful' -e 'name as your package' -e 'with strategy' >&2)
rm -f "$stamp"
echo "$digest $extras" >"$stamp"
