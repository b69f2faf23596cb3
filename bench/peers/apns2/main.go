// A load client for bench/bench_peers.py built on sideshow/apns2 (gorush's APNs engine): token
// auth, N connections (one apns2.Client, so one HTTP/2 connection, each), M notifications in flight,
// K notifications to one URL, trusting one CA. After a warm-up it prints "ready", waits for a line
// on stdin, sends, and prints one JSON line: {"sent", "ok", "seconds"}.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sideshow/apns2"
	"github.com/sideshow/apns2/token"
	"golang.org/x/net/http2"
)

func main() {
	url := flag.String("url", "", "APNs server base URL, e.g. https://127.0.0.1:2197")
	ca := flag.String("ca", "", "CA certificate (PEM) the server's certificate is signed by")
	keyFile := flag.String("key", "", "token-auth signing key (.p8)")
	keyID := flag.String("key-id", "", "key id")
	teamID := flag.String("team-id", "", "team id")
	topic := flag.String("topic", "", "apns-topic")
	payloadFile := flag.String("payload", "", "the notification payload (JSON file)")
	connections := flag.Int("connections", 2, "HTTP/2 connections")
	concurrency := flag.Int("concurrency", 1000, "notifications in flight")
	count := flag.Int("count", 20000, "notifications to send")
	warmup := flag.Int("warmup", 500, "notifications sent before the measured run")
	flag.Parse()

	fail := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, "apns2-load: "+format+"\n", args...)
		os.Exit(1)
	}
	authKey, err := token.AuthKeyFromFile(*keyFile)
	if err != nil {
		fail("signing key: %v", err)
	}
	payload, err := os.ReadFile(*payloadFile)
	if err != nil {
		fail("payload: %v", err)
	}
	pem, err := os.ReadFile(*ca)
	if err != nil {
		fail("CA: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pem) {
		fail("no certificate in %s", *ca)
	}
	providerToken := &token.Token{AuthKey: authKey, KeyID: *keyID, TeamID: *teamID}
	clients := make([]*apns2.Client, *connections)
	for i := range clients {
		client := apns2.NewTokenClient(providerToken)
		client.Host = *url
		// apns2's own transport, trusting our CA instead of the system's.
		client.HTTPClient = &http.Client{Transport: &http2.Transport{
			TLSClientConfig: &tls.Config{RootCAs: roots},
		}, Timeout: 30 * time.Second}
		clients[i] = client
	}

	run := func(n int) int64 {
		var next, ok int64 = -1, 0
		var wg sync.WaitGroup
		workers := *concurrency
		if n < workers {
			workers = n
		}
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				client := clients[w%len(clients)]
				for {
					i := atomic.AddInt64(&next, 1)
					if i >= int64(n) {
						return
					}
					notification := &apns2.Notification{
						DeviceToken: fmt.Sprintf("%064x", i),
						Topic:       *topic,
						Payload:     payload,
						PushType:    apns2.PushTypeAlert,
						Priority:    apns2.PriorityHigh,
					}
					res, err := client.Push(notification)
					if err == nil && res.StatusCode == http.StatusOK {
						atomic.AddInt64(&ok, 1)
					}
				}
			}(w)
		}
		wg.Wait()
		return ok
	}

	if *warmup > 0 && run(*warmup) == 0 {
		fail("the warm-up sent nothing successfully")
	}
	fmt.Println("ready")
	bufio.NewReader(os.Stdin).ReadString('\n')
	started := time.Now()
	ok := run(*count)
	seconds := time.Since(started).Seconds()
	out, _ := json.Marshal(map[string]any{"sent": *count, "ok": ok, "seconds": seconds})
	fmt.Println(string(out))
}
