#!/usr/bin/env bash
# mypy cannot see setuptools' package-dir mapping (gateway/ -> noti.gateway, ...), so check a
# symlink tree laid out the way the installed package is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tree="$root/build/typecheck"
rm -rf "$tree" && mkdir -p "$tree/noti"
for entry in "$root"/noti/*; do ln -s "$entry" "$tree/noti/$(basename "$entry")"; done
for component in gateway sender operator; do ln -s "$root/$component" "$tree/noti/$component"; done
# Run from the tree, not the repository root: `python -m` puts the working directory on sys.path,
# where the operator/ folder would shadow the standard library's operator module.
cd "$tree"
exec "${PYTHON:-$root/.venv/bin/python}" -m mypy --config-file "$root/pyproject.toml" noti "$@"
