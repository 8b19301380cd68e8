// Package gormstore implements core/store on gorm for SQLite (pure Go,
// github.com/glebarez/sqlite) and PostgreSQL (gorm.io/driver/postgres).
//
// The schema is explicit SQL per dialect, applied by versioned forward-only
// migrations (see Migrate). Every secret column is sealed at this boundary
// with associated data "<logical table>/<row id>/<field>", so a ciphertext
// moved to another row or field does not open. Times that decide races or
// expiry are integer unix milliseconds computed by the database clock (or,
// in tests, an injected clock) inside the statement that decides.
//
// SQLite runs with one writer connection (see Open): SQLite allows one
// writer at a time per database file, and letting database/sql hand several
// connections to concurrent writers only turns that into SQLITE_BUSY
// ("database is locked") under load. Readers use a separate pool and, in WAL
// mode, never block the writer.
package gormstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strings"
	"time"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/store"
	"github.com/glebarez/sqlite"
	"github.com/hashicorp/go-hclog"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
)

// Sealer seals and opens secret values with associated data.
// *encryption.AEAD implements it.
type Sealer interface {
	Seal(plaintext, associatedData []byte) ([]byte, error)
	Open(ciphertext, associatedData []byte) ([]byte, error)
}

// Options configures Open.
type Options struct {
	// URL selects the backend: postgres://... or postgresql://... for
	// PostgreSQL; sqlite://PATH, sqlite:PATH, a plain file path, or
	// sqlite::memory: (or :memory:) for SQLite.
	URL string
	// Sealer seals secret columns. Required.
	Sealer Sealer
	// Logger receives the store's logs (nil = discard). SQL is logged at
	// trace/debug level as the statement template, never with parameter
	// values.
	Logger hclog.Logger
	// Clock, when set, replaces the database clock in every statement
	// (bound as a parameter). For tests: move time without sleeping. nil =
	// the database clock (production).
	Clock clock.Clock
	// MaxOpenConns caps the PostgreSQL pool and the SQLite read pool
	// (default 10). The SQLite write pool is always one connection.
	MaxOpenConns int
	// SessionCacheTTL: how long GetSession may answer from memory
	// (default DefaultSessionCacheTTL; capped at 900ms so revocation
	// reaches every replica within 1 s; negative disables the cache).
	SessionCacheTTL time.Duration
}

// Dialect names.
const (
	DialectSQLite   = "sqlite"
	DialectPostgres = "postgres"
)

// Store is the gorm backend of store.Store. It holds no connection across
// calls and no transaction open while the caller does anything else.
type Store struct {
	dialect string
	w       *gorm.DB // writes (SQLite: exactly one connection)
	r       *gorm.DB // reads (SQLite: a separate pool; PostgreSQL: same as w)
	sealer  Sealer
	log     hclog.Logger
	clock   clock.Clock
	closers []*sql.DB
	// sessions caches session rows briefly (nil = off).
	sessions *sessionCache
	// rsql is the database/sql pool under r (hotreads.go).
	rsql *sql.DB
	hot  hotQueries
}

var _ store.Store = (*Store)(nil)

// Open connects to the database named by o.URL. It does not migrate: call
// Migrate. A malformed URL returns an error that never contains the URL
// (it may hold a password).
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Sealer == nil {
		return nil, errors.New("gormstore: Options.Sealer is required")
	}
	log := o.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	maxOpen := o.MaxOpenConns
	if maxOpen <= 0 {
		maxOpen = 10
	}
	target, err := parseURL(o.URL)
	if err != nil {
		return nil, err
	}
	cacheTTL := o.SessionCacheTTL
	if cacheTTL == 0 {
		cacheTTL = DefaultSessionCacheTTL
	}
	s := &Store{dialect: target.dialect, sealer: o.Sealer, log: log, clock: o.Clock, sessions: newSessionCache(cacheTTL)}
	gl := newGormLogger(log.Named("sql"))
	cfg := func() *gorm.Config {
		return &gorm.Config{
			TranslateError:         true,
			Logger:                 gl,
			SkipDefaultTransaction: true,
			DisableAutomaticPing:   true, // Open pings with a timeout
		}
	}
	switch target.dialect {
	case DialectPostgres:
		db, err := gorm.Open(postgres.Open(target.dsn), cfg())
		if err != nil {
			return nil, redacted(fmt.Errorf("gormstore: open postgres: %w: %w", store.ErrUnavailable, err), target.password)
		}
		sqlDB, err := db.DB()
		if err != nil {
			return nil, fmt.Errorf("gormstore: open postgres: %w", err)
		}
		sqlDB.SetMaxOpenConns(maxOpen)
		sqlDB.SetMaxIdleConns(maxOpen)
		sqlDB.SetConnMaxIdleTime(5 * time.Minute)
		s.w, s.r = db, db
		s.rsql = sqlDB
		s.closers = []*sql.DB{sqlDB}
	case DialectSQLite:
		if err := s.openSQLite(target, cfg, maxOpen); err != nil {
			return nil, err
		}
	}
	s.buildHotQueries()
	if err := s.Ping(ctx); err != nil {
		_ = s.Close()
		return nil, redacted(err, target.password)
	}
	return s, nil
}

// openSQLite opens the write pool (one connection, BEGIN IMMEDIATE) and,
// for file databases, a read pool. An in-memory database exists only on its
// one connection, so reads share the writer there.
func (s *Store) openSQLite(t target, cfg func() *gorm.Config, maxOpen int) error {
	// busy_timeout still matters: other processes (replicas sharing the
	// file, the sqlite3 shell) and WAL checkpoints can hold the lock.
	common := "_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)"
	var wdsn, rdsn string
	if t.memory {
		wdsn = "file::memory:?" + common + "&_txlock=immediate"
	} else {
		file := "file:" + t.dsn
		// synchronous(FULL): a commit that returned is on disk. NORMAL
		// could lose the last commits on power loss, and a lost rotated
		// refresh token is a dead grant.
		wdsn = file + "?" + common + "&_pragma=journal_mode(WAL)&_pragma=synchronous(FULL)&_txlock=immediate"
		rdsn = file + "?" + common + "&_pragma=query_only(1)"
	}
	w, err := gorm.Open(sqlite.Open(wdsn), cfg())
	if err != nil {
		return fmt.Errorf("gormstore: open sqlite: %w: %w", store.ErrUnavailable, err)
	}
	wsql, err := w.DB()
	if err != nil {
		return fmt.Errorf("gormstore: open sqlite: %w", err)
	}
	// ONE writer connection: SQLite serialises writers on the file lock;
	// with a single connection, concurrent writers queue in database/sql
	// instead of failing with "database is locked", and a statement that
	// decides a race (lease, single use, claim) runs alone.
	wsql.SetMaxOpenConns(1)
	wsql.SetMaxIdleConns(1)
	wsql.SetConnMaxLifetime(0)
	wsql.SetConnMaxIdleTime(0) // an in-memory database dies with its connection
	s.w = w
	s.closers = []*sql.DB{wsql}
	if t.memory {
		s.r, s.rsql = w, wsql
		return nil
	}
	r, err := gorm.Open(sqlite.Open(rdsn), cfg())
	if err != nil {
		_ = wsql.Close()
		return fmt.Errorf("gormstore: open sqlite read pool: %w: %w", store.ErrUnavailable, err)
	}
	rsql, err := r.DB()
	if err != nil {
		_ = wsql.Close()
		return fmt.Errorf("gormstore: open sqlite read pool: %w", err)
	}
	rsql.SetMaxOpenConns(maxOpen)
	rsql.SetMaxIdleConns(maxOpen)
	s.r, s.rsql = r, rsql
	s.closers = append(s.closers, rsql)
	return nil
}

type target struct {
	dialect  string
	dsn      string // postgres: the URL; sqlite: the file path
	memory   bool
	password string // postgres: redacted from any error text
}

// redactedError keeps the error chain (errors.Is still works) but prints
// with the password masked: drivers usually mask it already; this is the
// belt to their braces.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func redacted(err error, password string) error {
	if err == nil || password == "" || !strings.Contains(err.Error(), password) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), password, "xxxxx"), err: err}
}

// parseURL picks the backend. Errors never contain the URL.
func parseURL(raw string) (target, error) {
	raw = strings.TrimSpace(raw)
	if raw == "" {
		return target{}, errors.New("gormstore: database URL is empty (want postgres://..., sqlite://PATH or sqlite::memory:)")
	}
	lower := strings.ToLower(raw)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		u, err := url.Parse(raw)
		if err != nil {
			// url.Error repeats the URL, password included: say what to
			// check instead.
			return target{}, errors.New("gormstore: malformed PostgreSQL URL (the URL is not shown because it may contain a password; check that special characters in the user name and password are percent-encoded)")
		}
		if u.Host == "" {
			return target{}, errors.New("gormstore: malformed PostgreSQL URL: no host")
		}
		if strings.Trim(u.Path, "/") == "" {
			return target{}, errors.New("gormstore: malformed PostgreSQL URL: no database name")
		}
		pw, _ := u.User.Password()
		return target{dialect: DialectPostgres, dsn: raw, password: pw}, nil
	case lower == "sqlite::memory:" || lower == ":memory:" || lower == "sqlite://:memory:":
		return target{dialect: DialectSQLite, memory: true}, nil
	case strings.HasPrefix(lower, "sqlite://"):
		return sqlitePath(raw[len("sqlite://"):])
	case strings.HasPrefix(lower, "sqlite:"):
		return sqlitePath(raw[len("sqlite:"):])
	case strings.HasPrefix(lower, "file:"):
		return sqlitePath(raw[len("file:"):])
	case strings.Contains(raw, "://"):
		scheme := raw[:strings.Index(raw, "://")]
		if len(scheme) > 20 || strings.ContainsAny(scheme, "@:/") {
			scheme = "?"
		}
		return target{}, fmt.Errorf("gormstore: unsupported database URL scheme %q (want postgres:// or sqlite://)", scheme)
	default:
		return sqlitePath(raw)
	}
}

func sqlitePath(p string) (target, error) {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return target{}, errors.New("gormstore: SQLite URL must not carry query parameters (connectd sets the pragmas itself)")
	}
	if p == "" {
		return target{}, errors.New("gormstore: SQLite URL has no file path")
	}
	if p == ":memory:" {
		return target{dialect: DialectSQLite, memory: true}, nil
	}
	return target{dialect: DialectSQLite, dsn: p}, nil
}

// Dialect reports "sqlite" or "postgres".
func (s *Store) Dialect() string { return s.dialect }

// Ping checks the database answers within 3 seconds. It uses the read
// pool, so a busy SQLite writer does not make the server look down.
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var one int
	if _, err := s.query(ctx, s.r, &one, "SELECT 1", nil); err != nil {
		return fmt.Errorf("gormstore: ping: %w", err)
	}
	if one != 1 {
		return fmt.Errorf("gormstore: ping: unexpected answer: %w", store.ErrUnavailable)
	}
	return nil
}

// Close releases the connection pools.
func (s *Store) Close() error {
	var errs []error
	for _, c := range s.closers {
		if err := c.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// args are named statement arguments (@name in SQL).
type args = map[string]any

// nowExpr is the one place that decides what "now" means in SQL: the
// database clock in unix milliseconds (PostgreSQL statement time, not
// transaction start), or the injected clock bound as @now_ms. Every
// statement template writes {now} where it needs the time.
func (s *Store) nowExpr() (string, any) {
	if s.clock != nil {
		return "CAST(@now_ms AS BIGINT)", s.clock.Now().UnixMilli()
	}
	if s.dialect == DialectPostgres {
		// statement_timestamp(): the current statement's start, not the
		// transaction's (now()). Unlike clock_timestamp() it is STABLE:
		// one value for the whole statement (every comparison in it
		// agrees) and usable as an index bound (the jobs claim scan).
		return "CAST(extract(epoch from statement_timestamp())*1000 AS BIGINT)", nil
	}
	// The bundled SQLite (3.41) predates unixepoch('subsec'); julianday
	// has sub-millisecond resolution.
	return "CAST(ROUND((julianday('now') - 2440587.5)*86400000.0) AS INTEGER)", nil
}

// stmt expands {now} in a statement template and adds @now_ms when the
// clock is injected. a may be nil.
func (s *Store) stmt(tmpl string, a args) (string, args) {
	expr, v := s.nowExpr()
	if a == nil {
		a = args{}
	}
	if v != nil {
		a["now_ms"] = v
	}
	return strings.ReplaceAll(tmpl, "{now}", expr), a
}

// vars passes the named arguments only when the statement names any:
// without an '@', gorm would bind the map itself as a positional value.
func vars(q string, a args) []any {
	if !strings.Contains(q, "@") {
		return nil
	}
	return []any{a}
}

// exec runs a write statement and returns rows affected.
func (s *Store) exec(ctx context.Context, db *gorm.DB, tmpl string, a args) (int64, error) {
	q, a := s.stmt(tmpl, a)
	res := db.WithContext(ctx).Exec(q, vars(q, a)...)
	if res.Error != nil {
		return 0, s.translate(res.Error)
	}
	return res.RowsAffected, nil
}

// query runs a statement returning rows (SELECT or ... RETURNING) into
// dest (a pointer to a slice, or to one value) and returns how many rows
// it read. It goes through Rows/ScanRows rather than gorm's Scan because
// Scan logs through a recorder that renders parameter values into the SQL.
func (s *Store) query(ctx context.Context, db *gorm.DB, dest any, tmpl string, a args) (int64, error) {
	q, a := s.stmt(tmpl, a)
	tx := db.WithContext(ctx).Raw(q, vars(q, a)...)
	rows, err := tx.Rows()
	if err != nil {
		return 0, s.translate(err)
	}
	defer rows.Close()
	var n int64
	if rows.Next() {
		if err := tx.ScanRows(rows, dest); err != nil {
			return 0, s.translate(err)
		}
		n = 1
		if v := reflect.ValueOf(dest); v.Kind() == reflect.Pointer && v.Elem().Kind() == reflect.Slice {
			n = int64(v.Elem().Len())
		}
	}
	if err := rows.Err(); err != nil {
		return 0, s.translate(err)
	}
	if err := rows.Close(); err != nil {
		return 0, s.translate(err)
	}
	return n, nil
}

func msPtr(t *time.Time) any {
	if t == nil || t.IsZero() {
		return nil
	}
	return t.UnixMilli()
}

func msTime(ms int64) time.Time { return time.UnixMilli(ms).UTC() }

func msTimePtr(ms *int64) *time.Time {
	if ms == nil {
		return nil
	}
	t := msTime(*ms)
	return &t
}

// blob passes nil as an untyped NULL (drivers differ on nil []byte).
func blob(b []byte) any {
	if b == nil {
		return nil
	}
	return b
}
