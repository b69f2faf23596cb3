#!/usr/bin/env bash
# The README's test command: installs what the tests need on a fresh Debian machine, then runs
# ruff, mypy and pytest against real PostgreSQL, Redis, kube-apiserver/etcd, the APNs simulator and
# Pushy's mock APNs server, and the Go and Java peers of bench/bench_peers.py.
# Extra arguments go to pytest (e.g. scripts/test.sh -k records).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v chromium >/dev/null || missing+=(chromium)
# The Pushy mock APNs server (tests/pushy) is Java, built with Maven.
command -v java >/dev/null || missing+=(default-jdk-headless)
command -v mvn >/dev/null || missing+=(maven)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian's packages"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

scripts/bootstrap.sh dev
NOTI_K8S_BIN_DIR=$(scripts/build-k8s-bins.sh | tail -n 1)
export NOTI_K8S_BIN_DIR
NOTI_PUSHY_JAR=$(scripts/build-pushy.sh | tail -n 1)
export NOTI_PUSHY_JAR
# The Go and Java peers bench/bench_peers.py (and tests/test_bench_peers.py) measure Noti against.
NOTI_PEERS_DIR=$(scripts/build-peers.sh | tail -n 1)
export NOTI_PEERS_DIR

.venv/bin/ruff check .
scripts/typecheck.sh
mkdir -p test-artifacts
.venv/bin/pytest "$@"
