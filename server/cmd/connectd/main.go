// Command connectd is the connectd server binary with the shipped
// connectors. All logic lives in server/app; build your own binary with
// your own connector map the same way.
package main

import (
	"os"

	"github.com/connectd/connectd/connectors"
	"github.com/connectd/connectd/server/app"
)

func main() {
	os.Exit(app.Main(os.Args[1:], connectors.All()))
}
