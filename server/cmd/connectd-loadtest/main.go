// Command connectd-loadtest is connectd's load harness (server/loadtest):
// it starts connectd replica processes (itself, re-executed) with fake
// upstream services, drives a request mix and prints figures.
//
//	go run ./server/cmd/connectd-loadtest -replicas 1 -c 64 -d 20s -bare
package main

import (
	"os"

	"github.com/connectd/connectd/server/loadtest"
)

func main() {
	os.Exit(loadtest.Main(os.Args[1:], os.Stdout, os.Stderr))
}
