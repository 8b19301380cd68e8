package plugins

import (
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/session"
)

// minExternalSecret is the shortest shared HS256 secret accepted: HMAC
// keys shorter than the hash output weaken it (RFC 7518 section 3.2).
const minExternalSecret = 32

// externalVerifier verifies session JWTs of another App Connect server:
// HS256 only (the algorithm is pinned, so "none" and RS/HS confusion are
// refused), exp required, iss checked when configured, length capped. The
// caller is the token's App Connect user id claim ("id").
type externalVerifier struct {
	secret []byte
	parser *jwt.Parser
}

type externalClaims struct {
	jwt.RegisteredClaims
	ID string `json:"id"`
}

func newExternalVerifier(pluginID string, e ExternalJWT, getenv func(string) string, clk clock.Clock) (*externalVerifier, error) {
	if e.SecretEnv == "" {
		return nil, fmt.Errorf("plugins: plugin %s: external JWT settings need SecretEnv", pluginID)
	}
	secret := getenv(e.SecretEnv)
	if len(secret) < minExternalSecret {
		return nil, fmt.Errorf("plugins: plugin %s: %s must hold a shared secret of at least %d bytes", pluginID, e.SecretEnv, minExternalSecret)
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(session.Leeway),
		jwt.WithTimeFunc(clk.Now),
	}
	if e.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(e.Issuer))
	}
	return &externalVerifier{secret: []byte(secret), parser: jwt.NewParser(opts...)}, nil
}

// verify returns the App Connect user id the token speaks for.
func (v *externalVerifier) verify(token string) (string, error) {
	if len(token) > session.MaxTokenLength {
		return "", errors.New("external token too long")
	}
	var cl externalClaims
	if _, err := v.parser.ParseWithClaims(token, &cl, func(*jwt.Token) (any, error) { return v.secret, nil }); err != nil {
		return "", fmt.Errorf("external token: %w", err)
	}
	if cl.ID == "" || len(cl.ID) > 256 {
		return "", errors.New("external token lacks an id claim")
	}
	if cl.ExpiresAt != nil && cl.IssuedAt != nil && cl.ExpiresAt.Sub(cl.IssuedAt.Time) > 90*24*time.Hour {
		return "", errors.New("external token lives longer than 90 days")
	}
	return cl.ID, nil
}
