//go:build tools

// Package tools pins the command scripts/build-k8s-bins.sh builds from this module.
package tools

import _ "go.etcd.io/etcd/server/v3"
