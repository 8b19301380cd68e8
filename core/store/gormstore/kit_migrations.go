package gormstore

// Kit schema (block 500-599): connectd as the OAuth 2.0 authorization
// server Kit installs apps through. Codes and tokens are keyed by their
// SHA-256 (never stored in the clear); client secrets likewise. Deleting an
// app deletes its grants, codes and tokens (ON DELETE CASCADE); revoking a
// grant is one UPDATE that every token lookup joins against.
func kitMigrations() []migration {
	return []migration{
		dual(500, "kit_apps", `CREATE TABLE kit_apps (
	id TEXT PRIMARY KEY,
	name TEXT NOT NULL,
	connector TEXT NOT NULL,
	client_id TEXT NOT NULL,
	client_secret_hash TEXT NOT NULL,
	redirect_uris TEXT NOT NULL,
	after_install_url TEXT NOT NULL DEFAULT '',
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	CONSTRAINT kit_apps_client_id_key UNIQUE (client_id)
)`),
		dual(501, "kit_grants", `CREATE TABLE kit_grants (
	id TEXT PRIMARY KEY,
	app_id TEXT NOT NULL REFERENCES kit_apps (id) ON DELETE CASCADE,
	user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
	expires_at_ms {bigint} NOT NULL,
	revoked_at_ms {bigint},
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL
)`,
			`CREATE INDEX kit_grants_app_idx ON kit_grants (app_id)`,
			`CREATE INDEX kit_grants_user_idx ON kit_grants (user_id)`,
		),
		dual(502, "kit_codes", `CREATE TABLE kit_codes (
	code_hash TEXT PRIMARY KEY,
	app_id TEXT NOT NULL REFERENCES kit_apps (id) ON DELETE CASCADE,
	grant_id TEXT NOT NULL REFERENCES kit_grants (id) ON DELETE CASCADE,
	redirect_uri TEXT NOT NULL,
	expires_at_ms {bigint} NOT NULL,
	used_at_ms {bigint},
	created_at_ms {bigint} NOT NULL
)`,
			`CREATE INDEX kit_codes_grant_idx ON kit_codes (grant_id)`,
		),
		dual(503, "kit_tokens", `CREATE TABLE kit_tokens (
	token_hash TEXT PRIMARY KEY,
	grant_id TEXT NOT NULL REFERENCES kit_grants (id) ON DELETE CASCADE,
	kind TEXT NOT NULL,
	parent_hash TEXT NOT NULL DEFAULT '',
	expires_at_ms {bigint} NOT NULL,
	rotated_at_ms {bigint},
	created_at_ms {bigint} NOT NULL
)`,
			`CREATE INDEX kit_tokens_grant_idx ON kit_tokens (grant_id)`,
			`CREATE INDEX kit_tokens_parent_idx ON kit_tokens (parent_hash)`,
			`CREATE INDEX kit_tokens_expiry_idx ON kit_tokens (expires_at_ms)`,
		),
	}
}
