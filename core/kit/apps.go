package kit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/connectd/connectd/core/store"
)

// Prefixes make connectd's Kit credentials recognisable (secret scanners,
// logs) and keep the kinds apart.
const (
	clientIDPrefix     = "kitc_"
	clientSecretPrefix = "kits_"
	codePrefix         = "kitac_"
	accessPrefix       = "kitat_"
	refreshPrefix      = "kitrt_"
)

// AppInput describes a Kit app to register.
type AppInput struct {
	Name      string
	Connector string
	// RedirectURIs Kit may use, compared exactly (Kit's docs name both
	// https://app.kit.com/apps/install and https://app.kit.com/apps).
	RedirectURIs    []string
	AfterInstallURL string
}

// randomToken returns prefix + 256 random bits in base64url.
func randomToken(prefix string) string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// Hash is how codes, tokens and client secrets are stored: hex SHA-256.
// They carry 256 random bits, so a plain hash is as good as a slow KDF.
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// secretMatches compares a presented secret with a stored hash in constant
// time (the hashes have fixed length).
func secretMatches(presented, storedHash string) bool {
	got := Hash(presented)
	return subtle.ConstantTimeCompare([]byte(got), []byte(storedHash)) == 1
}

// CheckRedirectURI accepts absolute https URIs without fragment or
// credentials; plain http only for loopback hosts (local development).
func CheckRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("redirect URI %q is not an absolute URL", raw)
	}
	if u.Fragment != "" || u.User != nil {
		return fmt.Errorf("redirect URI %q must not carry a fragment or credentials", raw)
	}
	switch u.Scheme {
	case "https":
	case "http":
		h := u.Hostname()
		if h != "localhost" && h != "127.0.0.1" && h != "::1" {
			return fmt.Errorf("redirect URI %q must use https (http only for loopback)", raw)
		}
	default:
		return fmt.Errorf("redirect URI %q must use https", raw)
	}
	return nil
}

// CreateApp registers a Kit app and returns it with its client secret,
// which is shown once: only its hash is stored.
func CreateApp(ctx context.Context, st store.Kit, in AppInput) (*store.KitApp, string, error) {
	in.Name = strings.TrimSpace(in.Name)
	in.Connector = strings.TrimSpace(in.Connector)
	if in.Name == "" || len(in.Name) > 200 {
		return nil, "", errors.New("kit: an app name (at most 200 characters) is required")
	}
	if in.Connector == "" {
		return nil, "", errors.New("kit: a connector is required")
	}
	if len(in.RedirectURIs) == 0 {
		return nil, "", errors.New("kit: at least one redirect URI is required")
	}
	seen := map[string]bool{}
	var uris []string
	for _, u := range in.RedirectURIs {
		u = strings.TrimSpace(u)
		if err := CheckRedirectURI(u); err != nil {
			return nil, "", fmt.Errorf("kit: %w", err)
		}
		if !seen[u] {
			seen[u] = true
			uris = append(uris, u)
		}
	}
	if in.AfterInstallURL != "" {
		if err := CheckRedirectURI(in.AfterInstallURL); err != nil {
			return nil, "", fmt.Errorf("kit: after-install URL: %w", err)
		}
	}
	secret := randomToken(clientSecretPrefix)
	idb := make([]byte, 16)
	_, _ = rand.Read(idb)
	a := &store.KitApp{
		Name: in.Name, Connector: in.Connector, ClientID: clientIDPrefix + hex.EncodeToString(idb),
		ClientSecretHash: Hash(secret), RedirectURIs: uris, AfterInstallURL: in.AfterInstallURL,
	}
	if err := st.CreateKitApp(ctx, a); err != nil {
		return nil, "", fmt.Errorf("kit: create app: %w", err)
	}
	return a, secret, nil
}

// RotateSecret gives the app (by id or client id) a new client secret and
// returns it; the old one stops working at once.
func RotateSecret(ctx context.Context, st store.Kit, idOrClientID string) (*store.KitApp, string, error) {
	a, err := FindApp(ctx, st, idOrClientID)
	if err != nil {
		return nil, "", err
	}
	secret := randomToken(clientSecretPrefix)
	if err := st.SetKitAppSecret(ctx, a.ID, Hash(secret)); err != nil {
		return nil, "", fmt.Errorf("kit: rotate secret: %w", err)
	}
	return a, secret, nil
}

// FindApp looks an app up by id or client id.
func FindApp(ctx context.Context, st store.Kit, idOrClientID string) (*store.KitApp, error) {
	if strings.HasPrefix(idOrClientID, clientIDPrefix) {
		return st.GetKitAppByClientID(ctx, idOrClientID)
	}
	return st.GetKitApp(ctx, idOrClientID)
}
