# Sourced by the build scripts (build-pushy.sh, build-peers.sh); defines what they share:
#   maven_jar PROJECT_DIR JAR_NAME DEST_DIR
# packages the Maven project (its pom.xml and src/) in a scratch directory, offline first, and
# moves target/JAR_NAME to DEST_DIR/JAR_NAME atomically (a half-written jar is never cached).
maven_jar() {
    local project=$1 name=$2 dest=$3 build
    build=$(mktemp -d)
    cp -r "$project/pom.xml" "$project/src" "$build/"
    # Offline first: once Maven's local repository has the pinned artifacts no registry is asked.
    if ! mvn -q -B -o -f "$build/pom.xml" package >/dev/null 2>&1; then
        mvn -q -B -f "$build/pom.xml" package >&2 || { rm -rf "$build"; return 1; }
    fi
    mv "$build/target/$name" "$dest/.$name.tmp"
    mv "$dest/.$name.tmp" "$dest/$name"
    rm -rf "$build"
}
