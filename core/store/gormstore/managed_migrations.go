package gormstore

// Managed credentials schema (block 300-399): admin-managed API-key field
// values (one row per field, so concurrent edits of different fields never
// lose each other), admin-submitted OAuth apps, managed-login failure marks
// and the audit log. Same conventions as the foundation block.
//
// managed_oauth_apps.slot carries the uniqueness rule "one pending and one
// active app per (host account, platform)" portably: it is the state for
// pending and active rows and the row id for retired ones (which may be
// many), so a plain UNIQUE constraint works on both backends.
func managedMigrations() []migration {
	return []migration{
		dual(300, "managed_values", `CREATE TABLE managed_values (
	id TEXT PRIMARY KEY,
	host_kind TEXT NOT NULL,
	host_account_id TEXT NOT NULL,
	platform TEXT NOT NULL,
	scope TEXT NOT NULL,
	host_user_id TEXT NOT NULL DEFAULT '',
	host_user_name TEXT NOT NULL DEFAULT '',
	field_const TEXT NOT NULL,
	value {blob} NOT NULL,
	set_by TEXT NOT NULL DEFAULT '',
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	CONSTRAINT managed_values_key UNIQUE (host_kind, host_account_id, platform, scope, host_user_id, field_const)
)`),
		dual(301, "managed_oauth_apps", `CREATE TABLE managed_oauth_apps (
	id TEXT PRIMARY KEY,
	host_kind TEXT NOT NULL,
	host_account_id TEXT NOT NULL,
	platform TEXT NOT NULL,
	state TEXT NOT NULL,
	slot TEXT NOT NULL,
	client_id TEXT NOT NULL,
	client_secret {blob},
	token_url TEXT NOT NULL DEFAULT '',
	auth_url TEXT NOT NULL DEFAULT '',
	redirect_uri TEXT NOT NULL DEFAULT '',
	scopes TEXT,
	hostname TEXT NOT NULL DEFAULT '',
	expires_at_ms {bigint},
	promoted_by TEXT NOT NULL DEFAULT '',
	set_by TEXT NOT NULL DEFAULT '',
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	CONSTRAINT managed_oauth_apps_slot_key UNIQUE (host_kind, host_account_id, platform, slot)
)`),
		dual(302, "managed_login_failures", `CREATE TABLE managed_login_failures (
	host_kind TEXT NOT NULL,
	host_account_id TEXT NOT NULL,
	host_user_id TEXT NOT NULL,
	platform TEXT NOT NULL,
	failed_at_ms {bigint} NOT NULL,
	PRIMARY KEY (host_kind, host_account_id, host_user_id, platform)
)`),
		dual(303, "audit_events", `CREATE TABLE audit_events (
	id TEXT PRIMARY KEY,
	at_ms {bigint} NOT NULL,
	actor_kind TEXT NOT NULL,
	actor_account TEXT NOT NULL,
	actor_user TEXT NOT NULL DEFAULT '',
	action TEXT NOT NULL,
	platform TEXT NOT NULL DEFAULT '',
	target TEXT NOT NULL DEFAULT '',
	fields TEXT,
	request_id TEXT NOT NULL DEFAULT ''
)`,
			`CREATE INDEX audit_events_account_idx ON audit_events (actor_kind, actor_account, at_ms)`,
			`CREATE INDEX audit_events_at_idx ON audit_events (at_ms)`,
		),
	}
}
