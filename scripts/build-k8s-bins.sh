#!/usr/bin/env bash
# Builds kube-apiserver, kubectl, etcd and helm for the k8s tests from the Go module proxy alone
# (the wrapper modules in tests/k8s/bin/) into a cache keyed by their pinned versions, and reuses
# them on later runs. Progress goes to stderr; the LAST stdout line is the bin directory:
#   NOTI_K8S_BIN_DIR=$(scripts/build-k8s-bins.sh | tail -n 1)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
modules="$root/tests/k8s/bin"

# shellcheck source=../tests/k8s/bin/versions.env
source "$modules/versions.env"
# tests/harness/k8s.py computes the same directory from the same file.
key="kube-${KUBE_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}"
bin="${NOTI_CACHE_DIR:-$HOME/.cache/noti}/k8s/$key/bin"

say() { echo "build-k8s-bins: $*" >&2; }

# name, module dir, package, extra -ldflags
targets=(
    "etcd|etcd|go.etcd.io/etcd/server/v3|"
    "helm|helm|helm.sh/helm/v3/cmd/helm|-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
    "kube-apiserver|kube|k8s.io/kubernetes/cmd/kube-apiserver|KUBE"
    "kubectl|kube|k8s.io/kubernetes/cmd/kubectl|KUBE"
)

missing=()
for target in "${targets[@]}"; do
    name=${target%%|*}
    [ -x "$bin/$name" ] || missing+=("$target")
done
if [ ${#missing[@]} -eq 0 ]; then
    say "cached in $bin"
    echo "$bin"
    exit 0
fi

go=$(command -v go || echo /usr/local/go/bin/go)
[ -x "$go" ] || { say "Go 1.24+ is needed to build ${missing[*]%%|*}"; exit 1; }

# A go.mod that drifted from versions.env would cache one version under another's name.
grep -q "k8s.io/kubernetes $KUBE_VERSION\$" "$modules/kube/go.mod" || { say "kube/go.mod does not require k8s.io/kubernetes $KUBE_VERSION"; exit 1; }
grep -q "go.etcd.io/etcd/server/v3 $ETCD_VERSION\$" "$modules/etcd/go.mod" || { say "etcd/go.mod does not require etcd $ETCD_VERSION"; exit 1; }
grep -q "helm.sh/helm/v3 $HELM_VERSION\$" "$modules/helm/go.mod" || { say "helm/go.mod does not require helm $HELM_VERSION"; exit 1; }

# What Kubernetes' own release build stamps; helm reads it as .Capabilities.KubeVersion, and an
# unstamped v0.0.0-master server fails every chart's kubeVersion constraint.
minor=${KUBE_VERSION#v1.}
minor=${minor%%.*}
kube_ldflags=""
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    kube_ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    kube_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done

mkdir -p "$bin"
# Two test runs starting together build once.
exec 9>"$bin/.lock"
flock 9
for target in "${missing[@]}"; do
    IFS='|' read -r name dir pkg ldflags <<<"$target"
    [ -x "$bin/$name" ] && continue
    [ "$ldflags" = KUBE ] && ldflags=$kube_ldflags
    say "building $name from $pkg (tests/k8s/bin/$dir) ..."
    start=$SECONDS
    "$go" build -C "$modules/$dir" -mod=readonly -buildvcs=false -trimpath \
        -ldflags="-s -w $ldflags" -o "$bin/.$name.tmp" "$pkg"
    mv "$bin/.$name.tmp" "$bin/$name"
    say "built $name in $((SECONDS - start))s"
done
echo "$bin"
