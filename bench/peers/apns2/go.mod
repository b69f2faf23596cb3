// A sideshow/apns2 load client for bench/bench_peers.py, built by scripts/build-peers.sh.
module noti.dev/bench/peers/apns2

go 1.24.0

require (
	github.com/sideshow/apns2 v0.25.0
	golang.org/x/net v0.43.0
)

require (
	github.com/golang-jwt/jwt/v4 v4.4.1 // indirect
	golang.org/x/text v0.28.0 // indirect
)
