#!/usr/bin/env bash
# Builds the peers bench/bench_peers.py measures Noti against, from the registries alone, into a
# cache keyed by their pinned versions (bench/peers/versions.env) and a hash of bench/peers/'s
# sources (not its Python or Markdown files), and reuses them on later runs:
#   apns2-load            our load client on sideshow/apns2 (Go module proxy; bench/peers/apns2)
#   gorush                gorush's full server (Go module proxy; wrapper module bench/peers/gorush)
#   noti-pushy-peer.jar   our load client on Pushy's ApnsClient and Pushy's MockApnsServer in
#                         accept-all mode (Maven Central; bench/peers/pushy-client)
# Progress goes to stderr; the LAST stdout line is the directory holding them:
#   NOTI_PEERS_DIR=$(scripts/build-peers.sh | tail -n 1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
peers="$root/bench/peers"

# shellcheck source=../bench/peers/versions.env
source "$peers/versions.env"
sources=$(cd "$peers" && find . -type f ! -name '*.py' ! -name '*.pyc' ! -name '*.md' ! -path '*/target/*' | LC_ALL=C sort \
    | while read -r f; do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -c1-12)
key="apns2-${APNS2_VERSION}_gorush-${GORUSH_VERSION}_pushy-${PUSHY_VERSION}_netty-${NETTY_VERSION}_src-${sources}"
dir="${NOTI_CACHE_DIR:-$HOME/.cache/noti}/peers/$key"

say() { echo "build-peers: $*" >&2; }
# shellcheck source=maven-jar.sh
source "$root/scripts/maven-jar.sh"

names=(apns2-load gorush noti-pushy-peer.jar)
complete() { for name in "${names[@]}"; do [ -f "$dir/$name" ] || return 1; done; }
if complete; then
    say "cached in $dir"
    echo "$dir"
    exit 0
fi

go=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$go" ] || { say "Go 1.25+ is needed to build apns2-load and gorush"; exit 1; }
command -v java >/dev/null || { say "a JDK (17+) is needed to build the Pushy peer"; exit 1; }
command -v mvn >/dev/null || { say "Maven is needed to build the Pushy peer"; exit 1; }
# A go.mod or pom.xml that drifted from versions.env would cache one version under another's name.
grep -q "github.com/sideshow/apns2 $APNS2_VERSION\$" "$peers/apns2/go.mod" || { say "apns2/go.mod does not require sideshow/apns2 $APNS2_VERSION"; exit 1; }
grep -q "github.com/appleboy/gorush $GORUSH_VERSION\$" "$peers/gorush/go.mod" || { say "gorush/go.mod does not require gorush $GORUSH_VERSION"; exit 1; }
grep -q "<pushy.version>$PUSHY_VERSION</pushy.version>" "$peers/pushy-client/pom.xml" || { say "pushy-client/pom.xml does not pin Pushy $PUSHY_VERSION"; exit 1; }
grep -q "<netty.version>$NETTY_VERSION</netty.version>" "$peers/pushy-client/pom.xml" || { say "pushy-client/pom.xml does not pin netty $NETTY_VERSION"; exit 1; }

mkdir -p "$dir"
# Two test runs starting together build once.
exec 9>"$dir/.lock"
flock 9

build_go() { # name, module dir, package
    [ -f "$dir/$1" ] && return 0
    say "building $1 from $3 (bench/peers/$2) ..."
    local start=$SECONDS
    "$go" build -C "$peers/$2" -mod=readonly -buildvcs=false -trimpath -ldflags="-s -w" -o "$dir/.$1.tmp" "$3"
    mv "$dir/.$1.tmp" "$dir/$1"
    say "built $1 in $((SECONDS - start))s"
}
build_go apns2-load apns2 .
build_go gorush gorush github.com/appleboy/gorush

if [ ! -f "$dir/noti-pushy-peer.jar" ]; then
    say "building the Pushy $PUSHY_VERSION peer (bench/peers/pushy-client) ..."
    start=$SECONDS
    maven_jar "$peers/pushy-client" noti-pushy-peer.jar "$dir"
    say "built noti-pushy-peer.jar in $((SECONDS - start))s"
fi
echo "$dir"
