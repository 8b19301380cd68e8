package gormstore

// Blink schema (block 600-699): Blink authenticated apps (names of the
// environment variables holding their secrets, never the secrets),
// one-time start tokens (hashes only) and linked accounts. Same
// conventions as the foundation block: UUID text keys, unix-millisecond
// times compared by the database clock.
//
// blink_links.blink_linked_account_id is NULL until Blink answers; the
// UNIQUE constraint (app_id, blink_linked_account_id) ignores NULLs on
// both backends.
func blinkMigrations() []migration {
	return []migration{
		dual(600, "blink_apps", `CREATE TABLE blink_apps (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	connector TEXT NOT NULL,
	auth_id TEXT NOT NULL,
	proxy_secret_env TEXT NOT NULL,
	previous_proxy_secret_env TEXT NOT NULL DEFAULT '',
	api_url TEXT NOT NULL,
	api_token_env TEXT NOT NULL,
	share_tokens BOOLEAN NOT NULL DEFAULT FALSE,
	add_path TEXT NOT NULL DEFAULT '',
	delete_path TEXT NOT NULL DEFAULT '',
	update_path TEXT NOT NULL DEFAULT '',
	update_method TEXT NOT NULL DEFAULT '',
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	CONSTRAINT blink_apps_name_key UNIQUE (name)
)`),
		dual(601, "blink_starts", `CREATE TABLE blink_starts (
	token_hash TEXT PRIMARY KEY,
	app_id TEXT NOT NULL,
	blink_user_id TEXT NOT NULL,
	auth_id TEXT NOT NULL,
	expires_at_ms {bigint} NOT NULL,
	used_at_ms {bigint},
	created_at_ms {bigint} NOT NULL
)`,
			`CREATE INDEX blink_starts_expires_idx ON blink_starts (expires_at_ms)`,
		),
		dual(602, "blink_links", `CREATE TABLE blink_links (
	id TEXT PRIMARY KEY,
	blink_linked_account_id TEXT,
	app_id TEXT NOT NULL,
	blink_user_id TEXT NOT NULL,
	user_id TEXT NOT NULL,
	external_account_id TEXT NOT NULL,
	state TEXT NOT NULL,
	pushed_version {bigint} NOT NULL DEFAULT 0,
	pushed_reauth BOOLEAN NOT NULL DEFAULT FALSE,
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	CONSTRAINT blink_links_key UNIQUE (app_id, blink_user_id, user_id),
	CONSTRAINT blink_links_blink_id_key UNIQUE (app_id, blink_linked_account_id)
)`,
			`CREATE INDEX blink_links_user_idx ON blink_links (user_id)`,
			`CREATE INDEX blink_links_state_idx ON blink_links (app_id, state)`,
		),
	}
}
