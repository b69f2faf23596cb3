#!/usr/bin/env bash
# Builds the Pushy mock APNs server harness (tests/pushy/, Maven) into one jar in a cache keyed by
# its pinned versions and a hash of its sources, and reuses it on later runs. Progress goes to
# stderr; the LAST stdout line is the jar's path:
#   NOTI_PUSHY_JAR=$(scripts/build-pushy.sh | tail -n 1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
project="$root/tests/pushy"

# shellcheck source=../tests/pushy/versions.env
source "$project/versions.env"
# tests/harness/pushy.py computes the same key from the same files.
sources=$(cd "$project" && find pom.xml versions.env src -type f | LC_ALL=C sort | while read -r f; do printf '%s\n' "$f"; cat "$f"; done | sha256sum | cut -c1-12)
key="pushy-${PUSHY_VERSION}_netty-${NETTY_VERSION}_src-${sources}"
dir="${NOTI_CACHE_DIR:-$HOME/.cache/noti}/pushy/$key"
jar="$dir/noti-pushy-mock.jar"

say() { echo "build-pushy: $*" >&2; }
# shellcheck source=maven-jar.sh
source "$root/scripts/maven-jar.sh"

if [ -f "$jar" ]; then
    say "cached in $dir"
    echo "$jar"
    exit 0
fi

command -v java >/dev/null || { say "a JDK (17+) is needed to build the Pushy harness"; exit 1; }
command -v mvn >/dev/null || { say "Maven is needed to build the Pushy harness"; exit 1; }
# A pom.xml that drifted from versions.env would cache one version under another's name.
grep -q "<pushy.version>$PUSHY_VERSION</pushy.version>" "$project/pom.xml" || { say "pom.xml does not pin Pushy $PUSHY_VERSION"; exit 1; }
grep -q "<netty.version>$NETTY_VERSION</netty.version>" "$project/pom.xml" || { say "pom.xml does not pin netty $NETTY_VERSION"; exit 1; }

mkdir -p "$dir"
# Two test runs starting together build once.
exec 9>"$dir/.lock"
flock 9
if [ -f "$jar" ]; then
    echo "$jar"
    exit 0
fi
say "building the Pushy $PUSHY_VERSION harness (tests/pushy) ..."
start=$SECONDS
maven_jar "$project" noti-pushy-mock.jar "$dir"
say "built in $((SECONDS - start))s"
echo "$jar"
