//go:build tools

// Pins gorush for scripts/build-peers.sh, which builds the package github.com/appleboy/gorush from
// this module: the module proxy refuses gorush's version list, so `go install ...@v1.22.0` fails.
package tools

import _ "github.com/appleboy/gorush"
