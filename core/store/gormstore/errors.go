package gormstore

import (
	"context"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/connectd/connectd/core/store"
	gosqlite "github.com/glebarez/go-sqlite"
	"github.com/hashicorp/go-hclog"
	"github.com/jackc/pgx/v5/pgconn"
	"gorm.io/gorm"
	gormlogger "gorm.io/gorm/logger"
)

// translate maps gorm and driver errors to store sentinels, keeping the
// original in the chain for logs. No gorm error escapes untranslated:
// errors it cannot classify are still returned wrapped with a
// "gormstore:" prefix by callers.
func (s *Store) translate(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gorm.ErrRecordNotFound):
		return store.ErrNotFound
	case errors.Is(err, gorm.ErrDuplicatedKey):
		return fmt.Errorf("%w: duplicate key", store.ErrConflict)
	case errors.Is(err, gorm.ErrForeignKeyViolated):
		return fmt.Errorf("%w: referenced row does not exist", store.ErrNotFound)
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled):
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	case errors.Is(err, driver.ErrBadConn), errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	if strings.Contains(err.Error(), "sql: database is closed") { // database/sql has no sentinel for it
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	var netErr net.Error
	if errors.As(err, &netErr) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		switch {
		case pgErr.Code == "23505":
			return fmt.Errorf("%w: duplicate key", store.ErrConflict)
		case pgErr.Code == "23503":
			return fmt.Errorf("%w: referenced row does not exist", store.ErrNotFound)
		case strings.HasPrefix(pgErr.Code, "08"), // connection exception
			strings.HasPrefix(pgErr.Code, "53"),          // insufficient resources
			strings.HasPrefix(pgErr.Code, "57"),          // operator intervention (shutdown, cancel)
			pgErr.Code == "40001", pgErr.Code == "40P01": // serialization failure, deadlock
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		}
	}
	var sqErr *gosqlite.Error
	if errors.As(err, &sqErr) {
		switch sqErr.Code() & 0xff {
		case 5, 6: // SQLITE_BUSY, SQLITE_LOCKED
			return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
		case 19: // SQLITE_CONSTRAINT
			switch sqErr.Code() {
			case 2067, 1555: // _UNIQUE, _PRIMARYKEY
				return fmt.Errorf("%w: duplicate key", store.ErrConflict)
			case 787: // _FOREIGNKEY
				return fmt.Errorf("%w: referenced row does not exist", store.ErrNotFound)
			}
		}
	}
	if pgconn.Timeout(err) || pgconn.SafeToRetry(err) {
		return fmt.Errorf("%w: %w", store.ErrUnavailable, err)
	}
	return err
}

// gormLogger routes gorm's logs to hclog. SQL is logged as the statement
// template with placeholders: ParamsFilter drops the values, which may be
// tokens or ciphertext.
type gormLogger struct {
	log  hclog.Logger
	slow time.Duration
}

var (
	_ gormlogger.Interface = (*gormLogger)(nil)
	_ gorm.ParamsFilter    = (*gormLogger)(nil)
)

func newGormLogger(l hclog.Logger) *gormLogger {
	return &gormLogger{log: l, slow: 500 * time.Millisecond}
}

func (g *gormLogger) LogMode(gormlogger.LogLevel) gormlogger.Interface { return g }

// Info, Warn and Error come from gorm itself (not from statements); their
// format arguments are gorm's own and are logged at debug.
func (g *gormLogger) Info(_ context.Context, msg string, _ ...any) {
	g.log.Debug("gorm info", "msg", msg)
}

func (g *gormLogger) Warn(_ context.Context, msg string, _ ...any) {
	g.log.Debug("gorm warning", "msg", msg)
}

func (g *gormLogger) Error(_ context.Context, msg string, _ ...any) {
	g.log.Debug("gorm error", "msg", msg)
}

// ParamsFilter removes parameter values before gorm renders SQL for Trace.
func (g *gormLogger) ParamsFilter(_ context.Context, sql string, _ ...any) (string, []any) {
	return sql, nil
}

func (g *gormLogger) Trace(_ context.Context, begin time.Time, fc func() (string, int64), err error) {
	elapsed := time.Since(begin)
	switch {
	case err != nil && !errors.Is(err, gorm.ErrRecordNotFound) && g.log.IsDebug():
		sql, rows := fc()
		g.log.Debug("sql error", "sql", sql, "rows", rows, "elapsed", elapsed, "error", err)
	case elapsed > g.slow && g.log.IsDebug():
		sql, rows := fc()
		g.log.Debug("slow sql", "sql", sql, "rows", rows, "elapsed", elapsed)
	case g.log.IsTrace():
		sql, rows := fc()
		g.log.Trace("sql", "sql", sql, "rows", rows, "elapsed", elapsed)
	}
}
