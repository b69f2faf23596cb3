#!/usr/bin/env bash
# The README's first command: install Noti into .venv and run the whole service on one machine.
# Extra arguments go to `noti dev` (e.g. scripts/dev.sh --port 9000).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/bootstrap.sh
exec .venv/bin/noti dev "$@"
