// Package connectors lists every connector compiled into the shipped
// connectd binary. It is the only package that imports every connector
// package. Operators who build their own binary pass their own map to
// server/app.Main instead.
package connectors

import (
	"github.com/connectd/connectd/connectors/clio"
	"github.com/connectd/connectd/connectors/dropbox"
	"github.com/connectd/connectd/connectors/insightly"
	"github.com/connectd/connectd/connectors/pipedrive"
	"github.com/connectd/connectd/connectors/redact"
	"github.com/connectd/connectd/connectors/redtail"
	"github.com/connectd/connectd/core/connector"
)

// All returns the shipped connectors by platform name. A fresh map on
// every call: there is no package-level registry to mutate.
func All() map[string]connector.Factory {
	return map[string]connector.Factory{
		// CRMs
		"pipedrive": pipedrive.New,
		"clio":      clio.New,
		"insightly": insightly.New,
		"redtail":   redtail.New,
		// App Connect plugins
		"redact":  redact.New,
		"dropbox": dropbox.New,
	}
}
