package identity

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/connectd/connectd/core/session"
	"github.com/connectd/connectd/core/store"
)

// ErrUsage marks command-line mistakes (the CLI exits with status 2).
var ErrUsage = errors.New("usage")

// Issuer issues operator identity tokens (*session.Manager).
type Issuer interface {
	IssueIdentity(ctx context.Context, host store.HostIdentity, admin bool, ttl time.Duration) (string, *session.Claims, error)
}

// Revoker revokes a session row (*session.Manager).
type Revoker interface {
	Revoke(ctx context.Context, sessionID string) error
}

// MaxTokenTTL caps --ttl: identity tokens are for people and scripts that
// can ask again, not long-lived credentials.
const MaxTokenTTL = 90 * 24 * time.Hour

const tokenHelp = `Usage: connectd identity token --account A --user U [--admin] [--ttl 24h]

Prints an operator identity token (prefix cdi_) for host kind "operator",
account A and user U. Send it as X-RC-Access-Token to App Connect routes
and the admin page. It is never forwarded to RingCentral. The session id
printed on stderr revokes it: connectd identity revoke --session ID.
`

const revokeHelp = `Usage: connectd identity revoke --session ID

Revokes an operator identity token by its session id (printed when it was
issued). Every replica refuses it from the next request on.
`

// TokenCommand runs "connectd identity token" (args exclude "identity
// token"): it prints the token on stdout and its session id and expiry on
// stderr. A flag mistake returns an error wrapping ErrUsage; --help
// returns flag.ErrHelp after printing the help to stdout.
func TokenCommand(ctx context.Context, args []string, stdout, stderr io.Writer, iss Issuer) error {
	fs := flag.NewFlagSet("identity token", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	account := fs.String("account", "", "host account id (required)")
	user := fs.String("user", "", "host user id (required)")
	admin := fs.Bool("admin", false, "the user is an administrator of the account")
	ttl := fs.Duration("ttl", 24*time.Hour, "lifetime of the token")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, tokenHelp)
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: identity token: %v (run connectd identity token --help)", ErrUsage, err)
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("%w: identity token: unexpected argument %q", ErrUsage, fs.Arg(0))
	case *account == "" || *user == "":
		return fmt.Errorf("%w: identity token: --account and --user are required", ErrUsage)
	case len(*account) > 64 || len(*user) > 64:
		return fmt.Errorf("%w: identity token: --account and --user are at most 64 characters", ErrUsage)
	case *ttl <= 0 || *ttl > MaxTokenTTL:
		return fmt.Errorf("%w: identity token: --ttl must be between 1s and %s", ErrUsage, MaxTokenTTL)
	}
	tok, claims, err := iss.IssueIdentity(ctx, store.HostIdentity{Kind: KindOperator, AccountID: *account, UserID: *user}, *admin, *ttl)
	if err != nil {
		return fmt.Errorf("issue identity token: %w", err)
	}
	fmt.Fprintln(stdout, tok)
	fmt.Fprintf(stderr, "session %s, expires %s (revoke: connectd identity revoke --session %s)\n",
		claims.SessionID, claims.ExpiresAt.UTC().Format(time.RFC3339), claims.SessionID)
	return nil
}

// RevokeCommand runs "connectd identity revoke --session ID".
func RevokeCommand(ctx context.Context, args []string, stdout io.Writer, rev Revoker) error {
	fs := flag.NewFlagSet("identity revoke", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	sid := fs.String("session", "", "session id of the token (required)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, revokeHelp)
			return flag.ErrHelp
		}
		return fmt.Errorf("%w: identity revoke: %v (run connectd identity revoke --help)", ErrUsage, err)
	}
	if fs.NArg() > 0 || *sid == "" {
		return fmt.Errorf("%w: identity revoke: --session is required", ErrUsage)
	}
	if err := rev.Revoke(ctx, *sid); err != nil {
		return fmt.Errorf("revoke identity token: %w", err)
	}
	fmt.Fprintf(stdout, "revoked session %s\n", *sid)
	return nil
}
