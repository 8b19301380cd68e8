package gormstore

import (
	"context"
	"database/sql"
	"errors"
)

// The two reads every authenticated request makes (its session row, its
// user row) go straight to database/sql with a fixed statement and a
// positional Scan: gorm's named-argument expansion and reflective scan
// cost about as much as the read itself on this path (pprof of the load
// harness). Same statements, same pool (the read pool), same error
// translation as query; not logged by the SQL logger.

// placeholder is the dialect's first positional parameter.
func (s *Store) placeholder() string {
	if s.dialect == DialectPostgres {
		return "$1"
	}
	return "?"
}

// hotQueries are built once per Store.
type hotQueries struct {
	user, session string
}

func (s *Store) buildHotQueries() {
	p := s.placeholder()
	s.hot = hotQueries{
		user:    `SELECT ` + userColumns + ` FROM users WHERE id = ` + p,
		session: `SELECT ` + sessionColumns + ` FROM sessions WHERE id = ` + p,
	}
}

// readUserRow reads one user row by id; found is false when none exists.
func (s *Store) readUserRow(ctx context.Context, id string, r *userRow) (found bool, err error) {
	err = s.rsql.QueryRowContext(ctx, s.hot.user, id).Scan(
		&r.ID, &r.Platform, &r.CRMUserID, &r.HostKind, &r.HostAccountID, &r.HostUserID,
		&r.Hostname, &r.AppConnectID, &r.DisplayName, &r.TimezoneName, &r.TimezoneOffset,
		&r.AccessToken, &r.RefreshToken, &r.TokenExpiryMS, &r.APIKey, &r.AdditionalInfo, &r.Secrets,
		&r.OAuthAppRef, &r.Status, &r.Version, &r.CreatedAtMS, &r.UpdatedAtMS)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, s.translate(err)
	}
	return true, nil
}

// readSessionRow reads one session row by id.
func (s *Store) readSessionRow(ctx context.Context, id string, r *sessionRow) (found bool, err error) {
	err = s.rsql.QueryRowContext(ctx, s.hot.session, id).Scan(
		&r.ID, &r.Kind, &r.UserID, &r.HostKind, &r.HostAccountID, &r.HostUserID, &r.Subject,
		&r.ExpiresAtMS, &r.RevokedAtMS, &r.CreatedAtMS)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, s.translate(err)
	}
	return true, nil
}
