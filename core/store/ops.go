package store

import (
	"context"
	"time"
)

// KeyUsage counts stored sealed values per key id of the encryption ring
// (ring name -> key id -> values). Only the "encryption" ring has stored
// values: session tokens are not stored, they expire.
type KeyUsage map[string]map[uint32]int64

// RotateProgress is reported after every batch of a rotation.
type RotateProgress struct {
	Column    string // "<table>.<column>" being re-sealed
	Total     int64  // values not under the primary key when the run started
	Done      int64  // values handled so far (re-sealed + conflicts + failed)
	Resealed  int64
	Conflicts int64 // changed by a concurrent writer between read and save: left as the writer wrote them
	Failed    int64 // could not be opened (unknown key, corrupt): left untouched
}

// RotateResult is the outcome of a rotation run.
type RotateResult struct {
	PrimaryKeyID uint32
	RotateProgress
	// FailedRefs names values that could not be opened ("<table>.<column>
	// <row id>"), at most 20; never their content.
	FailedRefs []string
}

// Rotation re-seals stored values under the encryption ring's primary key.
type Rotation interface {
	// KeyUsage counts sealed values per key id (one scan of every sealed
	// column, reading only each ciphertext's 5-byte header).
	KeyUsage(ctx context.Context) (KeyUsage, error)
	// RotateSealed re-seals every value not under the primary key, in
	// batches of batch values. Each value is opened with its own
	// associated data and saved with a compare-and-swap on the old
	// ciphertext, so a concurrent write is never overwritten. Safe to
	// re-run and to kill at any point: a run only looks at values still
	// under another key.
	RotateSealed(ctx context.Context, batch int, progress func(RotateProgress)) (RotateResult, error)
}

// UserSummary is a stored login as an operator sees it: which secrets it
// holds, never their values.
type UserSummary struct {
	ID              string
	Platform        string
	CRMUserID       string
	Host            HostIdentity
	Hostname        string
	AppConnectID    string
	DisplayName     string
	Status          UserStatus
	TokenExpiry     *time.Time
	HasAccessToken  bool
	HasRefreshToken bool
	HasAPIKey       bool
	HasSecrets      bool
	OAuthAppRef     string
	CreatedAt       time.Time
	UpdatedAt       time.Time
}

// UserFilter narrows ListUsers; empty fields match everything.
type UserFilter struct {
	Platform  string
	HostKind  string
	AccountID string
	Status    string
	// After is the last id of the previous page (ids ascending).
	After string
	Limit int // default 100, at most 1000
}

// OperatorUsers lists stored logins for operator commands.
type OperatorUsers interface {
	ListUsers(ctx context.Context, f UserFilter) ([]UserSummary, error)
	// UserSummary returns ErrNotFound for unknown ids.
	UserSummary(ctx context.Context, id string) (*UserSummary, error)
	// ListUserSessions returns a user record's sessions, newest first,
	// revoked and expired ones included.
	ListUserSessions(ctx context.Context, userID string) ([]Session, error)
}

// Pair is a two-part metric label value.
type Pair struct{ A, B string }

// OpsCounts are the gauges an operator watches, read in one pass.
type OpsCounts struct {
	Users        map[Pair]int64   // (platform, status) -> logins
	LiveSessions map[string]int64 // session kind -> unexpired, unrevoked sessions
	Jobs         map[Pair]int64   // (kind, state) -> jobs: the outbox
	Audit        map[string]int64 // managed-credential audit action -> rows since the given time
}

// OperatorStats reads OpsCounts.
type OperatorStats interface {
	OpsCounts(ctx context.Context, auditSince time.Time) (OpsCounts, error)
}
