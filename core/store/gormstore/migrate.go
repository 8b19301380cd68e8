package gormstore

import (
	"context"
	"fmt"
	"sort"

	"gorm.io/gorm"
)

// migration is one forward-only schema step. Versions are numbered in
// blocks so packages can append without colliding:
//
//	100-199 foundation (users, sessions, oauth_flows, jobs, key_checks)
//	200-299 engine
//	300-399 managed credentials
//	400-499 plugins
//	500-599 kit
//	600-699 blink
//
// A migration gives explicit SQL per dialect (reviewed schema, no
// AutoMigrate) and optionally a Go step run after its SQL in the same
// transaction. Never edit a released migration: append a new one.
type migration struct {
	version  int
	name     string
	sqlite   []string
	postgres []string
	up       func(ctx context.Context, tx *gorm.DB, dialect string) error
}

// migrations lists every block in order. Add a block's function here.
func migrations() []migration {
	var all []migration
	all = append(all, foundationMigrations()...) // 100-199
	all = append(all, managedMigrations()...)    // 300-399
	all = append(all, pluginMigrations()...)     // 400-499
	all = append(all, kitMigrations()...)        // 500-599
	all = append(all, blinkMigrations()...)      // 600-699
	return all
}

// SchemaVersion is the highest migration version this binary knows:
// after Migrate, MigrationVersion returns it (unless a newer release
// migrated the database further).
func SchemaVersion() int {
	v := 0
	for _, m := range migrations() {
		v = max(v, m.version)
	}
	return v
}

// migrationLockKey is the PostgreSQL advisory lock id taken while
// migrating ("connectd" in ASCII, as a bigint).
const migrationLockKey int64 = 0x636f6e6e65637464

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version BIGINT PRIMARY KEY,
	name TEXT NOT NULL,
	applied_at_ms BIGINT NOT NULL
)`

func checkMigrations(ms []migration) error {
	seen := map[int]bool{}
	for _, m := range ms {
		if m.version <= 0 || m.name == "" {
			return fmt.Errorf("gormstore: migration %d %q: version and name are required", m.version, m.name)
		}
		if seen[m.version] {
			return fmt.Errorf("gormstore: migration version %d is defined twice", m.version)
		}
		seen[m.version] = true
	}
	return nil
}

// Migrate applies every pending migration in one transaction. PostgreSQL
// serialises concurrent migrators (replicas starting together) with a
// transaction-scoped advisory lock; SQLite's BEGIN IMMEDIATE takes the
// write lock before reading what is applied. A database newer than this
// binary (unknown versions applied) is left alone and logged: forward-only
// schemas let an older replica keep running during a rolling deploy.
func (s *Store) Migrate(ctx context.Context) error {
	ms := migrations()
	if err := checkMigrations(ms); err != nil {
		return err
	}
	sort.Slice(ms, func(i, j int) bool { return ms[i].version < ms[j].version })
	var applied []int
	err := s.w.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		if s.dialect == DialectPostgres {
			if err := tx.Exec("SELECT pg_advisory_xact_lock(?)", migrationLockKey).Error; err != nil {
				return fmt.Errorf("take migration lock: %w", s.translate(err))
			}
		}
		if err := tx.Exec(createMigrationsTable).Error; err != nil {
			return fmt.Errorf("create schema_migrations: %w", s.translate(err))
		}
		var done []int
		if err := tx.Raw("SELECT version FROM schema_migrations").Scan(&done).Error; err != nil {
			return fmt.Errorf("read schema_migrations: %w", s.translate(err))
		}
		have := map[int]bool{}
		for _, v := range done {
			have[v] = true
		}
		known := map[int]bool{}
		for _, m := range ms {
			known[m.version] = true
			if have[m.version] {
				continue
			}
			stmts := m.sqlite
			if s.dialect == DialectPostgres {
				stmts = m.postgres
			}
			for i, q := range stmts {
				if err := tx.Exec(q).Error; err != nil {
					return fmt.Errorf("migration %d %s statement %d: %w", m.version, m.name, i+1, s.translate(err))
				}
			}
			if m.up != nil {
				if err := m.up(ctx, tx, s.dialect); err != nil {
					return fmt.Errorf("migration %d %s: %w", m.version, m.name, err)
				}
			}
			now, nowArg := s.nowExpr()
			a := args{"v": m.version, "name": m.name}
			if nowArg != nil {
				a["now_ms"] = nowArg
			}
			if err := tx.Exec("INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES (@v, @name, "+now+")", a).Error; err != nil {
				return fmt.Errorf("record migration %d: %w", m.version, s.translate(err))
			}
			applied = append(applied, m.version)
		}
		for _, v := range done {
			if !known[v] {
				s.log.Warn("database has a migration this binary does not know (newer release?)", "version", v)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gormstore: migrate: %w", err)
	}
	if len(applied) > 0 {
		s.log.Info("migrated database", "dialect", s.dialect, "applied", applied)
	}
	return nil
}

// MigrationVersion returns the highest applied migration version, 0 for a
// database never migrated.
func (s *Store) MigrationVersion(ctx context.Context) (int, error) {
	var exists bool
	var q string
	if s.dialect == DialectPostgres {
		q = "SELECT to_regclass('schema_migrations') IS NOT NULL"
	} else {
		q = "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
	}
	if err := s.r.WithContext(ctx).Raw(q).Scan(&exists).Error; err != nil {
		return 0, fmt.Errorf("gormstore: migration version: %w", s.translate(err))
	}
	if !exists {
		return 0, nil
	}
	var v *int
	if err := s.r.WithContext(ctx).Raw("SELECT MAX(version) FROM schema_migrations").Scan(&v).Error; err != nil {
		return 0, fmt.Errorf("gormstore: migration version: %w", s.translate(err))
	}
	if v == nil {
		return 0, nil
	}
	return *v, nil
}
