package app

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/store"
	"github.com/connectd/connectd/server/doctor"
	"github.com/connectd/connectd/server/logging"
)

const usersHelp = `Usage: connectd users list [--platform P] [--host-kind K] [--account A] [--status S] [--limit 100] [--after ID] [--json]
       connectd users show ID [--json]
       connectd users revoke ID

Stored logins (one per CRM login), their sessions and which secrets they
hold - never the secrets. revoke logs the user out as the product does:
credentials deleted, every session revoked at once, the upstream token
revoked (retried in the background by a running server if the CRM is down).
`

// usersCmd: connectd users list|show|revoke.
func usersCmd(ctx context.Context, args []string, env Env, connectors map[string]connector.Factory) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: users: missing subcommand (run connectd users --help)", errUsage)
	}
	sub, rest := args[0], args[1:]
	if isHelp(sub) {
		fmt.Fprint(env.Stdout, usersHelp)
		return flag.ErrHelp
	}
	fs := flag.NewFlagSet("users "+sub, flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), usersHelp) }
	var f store.UserFilter
	fs.StringVar(&f.Platform, "platform", "", "only this platform")
	fs.StringVar(&f.HostKind, "host-kind", "", "only this host kind (ringcentral, operator, kit, blink, ...)")
	fs.StringVar(&f.AccountID, "account", "", "only this host account")
	fs.StringVar(&f.Status, "status", "", "only this status (active, needs_reauth, refresh_uncertain, revoked)")
	fs.StringVar(&f.After, "after", "", "list ids after this one (paging)")
	fs.IntVar(&f.Limit, "limit", 100, "at most this many (1..1000)")
	asJSON := fs.Bool("json", false, "print JSON")
	var want []string
	switch sub {
	case "list":
	case "show", "revoke":
		want = []string{"ID"}
	default:
		return fmt.Errorf("%w: users: unknown subcommand %q (run connectd users --help)", errUsage, sub)
	}
	vals, err := parsePositional(fs, rest, want, env)
	if err != nil {
		return err
	}
	if f.Limit < 1 || f.Limit > 1000 {
		return fmt.Errorf("%w: users list: --limit must be 1..1000", errUsage)
	}
	switch sub {
	case "list":
		return openOpsStore(ctx, env, func(st opsStore) error { return usersList(ctx, env.Stdout, st, f, *asJSON) })
	case "show":
		return openOpsStore(ctx, env, func(st opsStore) error { return usersShow(ctx, env.Stdout, st, vals[0], *asJSON) })
	default:
		return usersRevoke(ctx, env, connectors, vals[0])
	}
}

// opsStore is what the users commands read.
type opsStore interface {
	store.OperatorUsers
}

func openOpsStore(ctx context.Context, env Env, fn func(st opsStore) error) error {
	cfg, err := loadConfig("connectd", "", nil, env)
	if err != nil {
		return err
	}
	logger := logging.New(env.Stderr, cfg.LogLevel, cfg.LogFormat)
	_, _, st, err := OpenStore(ctx, cfg, logger)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

// userJSON is the operator's view of a login: flags for secrets.
type userJSON struct {
	ID              string        `json:"id"`
	Platform        string        `json:"platform"`
	CRMUserID       string        `json:"crmUserId"`
	HostKind        string        `json:"hostKind"`
	HostAccountID   string        `json:"hostAccountId"`
	HostUserID      string        `json:"hostUserId"`
	Hostname        string        `json:"hostname,omitempty"`
	AppConnectID    string        `json:"appConnectId,omitempty"`
	DisplayName     string        `json:"displayName,omitempty"`
	Status          string        `json:"status"`
	TokenExpiry     *time.Time    `json:"tokenExpiry,omitempty"`
	HasAccessToken  bool          `json:"hasAccessToken"`
	HasRefreshToken bool          `json:"hasRefreshToken"`
	HasAPIKey       bool          `json:"hasApiKey"`
	HasSecrets      bool          `json:"hasSecrets"`
	OAuthApp        string        `json:"oauthApp,omitempty"`
	CreatedAt       time.Time     `json:"createdAt"`
	UpdatedAt       time.Time     `json:"updatedAt"`
	Sessions        []sessionJSON `json:"sessions,omitempty"`
}

type sessionJSON struct {
	ID        string     `json:"id"`
	Kind      string     `json:"kind"`
	Subject   string     `json:"subject,omitempty"`
	CreatedAt time.Time  `json:"createdAt"`
	ExpiresAt time.Time  `json:"expiresAt"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	State     string     `json:"state"`
}

func toUserJSON(u store.UserSummary) userJSON {
	return userJSON{
		ID: u.ID, Platform: u.Platform, CRMUserID: u.CRMUserID, HostKind: u.Host.Kind, HostAccountID: u.Host.AccountID,
		HostUserID: u.Host.UserID, Hostname: u.Hostname, AppConnectID: u.AppConnectID, DisplayName: u.DisplayName,
		Status: string(u.Status), TokenExpiry: u.TokenExpiry, HasAccessToken: u.HasAccessToken, HasRefreshToken: u.HasRefreshToken,
		HasAPIKey: u.HasAPIKey, HasSecrets: u.HasSecrets, OAuthApp: u.OAuthAppRef, CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt,
	}
}

func secretsHeld(u store.UserSummary) string {
	var s []string
	if u.HasAccessToken {
		s = append(s, "access")
	}
	if u.HasRefreshToken {
		s = append(s, "refresh")
	}
	if u.HasAPIKey {
		s = append(s, "apikey")
	}
	if u.HasSecrets {
		s = append(s, "extra")
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ",")
}

func usersList(ctx context.Context, w io.Writer, st opsStore, f store.UserFilter, asJSON bool) error {
	list, err := st.ListUsers(ctx, f)
	if err != nil {
		return err
	}
	if asJSON {
		out := make([]userJSON, 0, len(list))
		for _, u := range list {
			out = append(out, toUserJSON(u))
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(out)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPLATFORM\tCRM USER\tHOST\tSTATUS\tHOLDS\tUPDATED")
	for _, u := range list {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s/%s\t%s\t%s\t%s\n", u.ID, u.Platform, u.CRMUserID, u.Host.Kind, u.Host.AccountID, u.Host.UserID,
			u.Status, secretsHeld(u), u.UpdatedAt.Format(time.RFC3339))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(list) == f.Limit && len(list) > 0 {
		fmt.Fprintf(w, "(more: --after %s)\n", list[len(list)-1].ID)
	}
	return nil
}

func usersShow(ctx context.Context, w io.Writer, st opsStore, id string, asJSON bool) error {
	u, err := st.UserSummary(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return fmt.Errorf("no user %q (connectd users list shows the ids)", id)
	}
	if err != nil {
		return err
	}
	sessions, err := st.ListUserSessions(ctx, id)
	if err != nil {
		return err
	}
	now := time.Now()
	j := toUserJSON(*u)
	for _, s := range sessions {
		state := "live"
		switch {
		case s.RevokedAt != nil:
			state = "revoked"
		case !now.Before(s.ExpiresAt):
			state = "expired"
		}
		j.Sessions = append(j.Sessions, sessionJSON{ID: s.ID, Kind: s.Kind, Subject: s.Subject, CreatedAt: s.CreatedAt, ExpiresAt: s.ExpiresAt, RevokedAt: s.RevokedAt, State: state})
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(j)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k, v string) { fmt.Fprintf(tw, "%s\t%s\n", k, v) }
	row("id", j.ID)
	row("platform", j.Platform)
	row("crm user", j.CRMUserID)
	row("host", j.HostKind+" account "+j.HostAccountID+" user "+j.HostUserID)
	if j.Hostname != "" {
		row("hostname", j.Hostname)
	}
	if j.DisplayName != "" {
		row("name", j.DisplayName)
	}
	row("status", j.Status)
	row("holds", secretsHeld(*u)+" (values never shown)")
	if j.TokenExpiry != nil {
		row("token expiry", j.TokenExpiry.Format(time.RFC3339))
	}
	if j.OAuthApp != "" {
		row("oauth app", j.OAuthApp)
	}
	row("created", j.CreatedAt.Format(time.RFC3339))
	row("updated", j.UpdatedAt.Format(time.RFC3339))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "\nsessions (%d):\n", len(j.Sessions))
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKIND\tSTATE\tCREATED\tEXPIRES")
	for _, s := range j.Sessions {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", s.ID, s.Kind, s.State, s.CreatedAt.Format(time.RFC3339), s.ExpiresAt.Format(time.RFC3339))
	}
	return tw.Flush()
}

func usersRevoke(ctx context.Context, env Env, connectors map[string]connector.Factory, id string) error {
	return operatorServer(ctx, env, connectors, func(d *Deps, w *Wired) error {
		if _, err := d.Store.UserSummary(ctx, id); errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("no user %q (connectd users list shows the ids)", id)
		} else if err != nil {
			return err
		}
		if _, err := w.Engine.Auth.Logout(ctx, id); err != nil {
			return fmt.Errorf("revoke user %s: %w", id, err)
		}
		// Try the queued upstream revocation now; a running server retries it.
		if n, err := w.Engine.Jobs.RunOnce(ctx); err != nil {
			d.Logger.Warn("upstream revocation will be retried by the server", "user", id, "error", err)
		} else {
			d.Logger.Debug("jobs run", "count", n)
		}
		fmt.Fprintf(env.Stdout, "revoked user %s: credentials deleted, sessions revoked\n", id)
		return nil
	})
}

// doctorCmd: connectd doctor [--online] [config flags].
func doctorCmd(ctx context.Context, args []string, env Env, connectors map[string]connector.Factory) error {
	online := false
	var rest []string
	for _, a := range args {
		switch a {
		case "--online", "-online":
			online = true
		case "-h", "-help", "--help":
			fmt.Fprint(env.Stdout, "Usage: connectd doctor [--online] [serve flags]\n\nChecks configuration, database reachability and migration version, key check\nvalues and which keys stored values use, manifests, each connector's\navailability (with --online: whether its OAuth endpoints answer), the public\nURL and redirect URIs. Prints OK / WARN / FAIL with how to fix each; exits 1\non any FAIL. Changes nothing.\n")
			return flag.ErrHelp
		default:
			rest = append(rest, a)
		}
	}
	rep := doctor.Run(ctx, doctor.Options{Getenv: env.Getenv, Args: rest, Manifests: manifestsFS(env), Connectors: connectors, Online: online})
	rep.Write(env.Stdout)
	if rep.Failed() {
		return errSilent
	}
	return nil
}
