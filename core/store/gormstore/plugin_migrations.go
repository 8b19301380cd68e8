package gormstore

// Plugin server schema (block 400-499): asynchronous plugin tasks (their
// lifecycle and result; the work itself is a row in jobs), plugin logins
// (who connected a plugin -> the users row of the plugin's platform),
// contract-B registrations and operator-managed licences. Same conventions
// as the foundation block: text UUID keys, unix-millisecond times, sealed
// columns as bytes.
func pluginMigrations() []migration {
	return []migration{
		dual(400, "plugin_tasks", `CREATE TABLE plugin_tasks (
	id TEXT PRIMARY KEY,
	plugin_id TEXT NOT NULL,
	owner_key TEXT NOT NULL,
	task_key TEXT NOT NULL,
	user_id TEXT NOT NULL DEFAULT '',
	host_kind TEXT NOT NULL DEFAULT '',
	host_account_id TEXT NOT NULL DEFAULT '',
	host_user_id TEXT NOT NULL DEFAULT '',
	payload {blob},
	callback_url TEXT NOT NULL DEFAULT '',
	contract TEXT NOT NULL,
	state TEXT NOT NULL,
	processed BOOLEAN NOT NULL DEFAULT FALSE,
	successful BOOLEAN NOT NULL DEFAULT FALSE,
	message TEXT NOT NULL DEFAULT '',
	result {blob},
	attempts INTEGER NOT NULL DEFAULT 0,
	last_error TEXT NOT NULL DEFAULT '',
	expires_at_ms {bigint} NOT NULL,
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	done_at_ms {bigint},
	CONSTRAINT plugin_tasks_key UNIQUE (plugin_id, owner_key, task_key)
)`,
			`CREATE INDEX plugin_tasks_state_idx ON plugin_tasks (state, expires_at_ms)`,
		),
		dual(401, "plugin_logins", `CREATE TABLE plugin_logins (
	plugin_id TEXT NOT NULL,
	owner_key TEXT NOT NULL,
	user_id TEXT NOT NULL,
	created_at_ms {bigint} NOT NULL,
	updated_at_ms {bigint} NOT NULL,
	PRIMARY KEY (plugin_id, owner_key)
)`),
		dual(402, "plugin_installs", `CREATE TABLE plugin_installs (
	id TEXT PRIMARY KEY,
	plugin_id TEXT NOT NULL,
	host_kind TEXT NOT NULL,
	host_account_id TEXT NOT NULL,
	host_user_id TEXT NOT NULL DEFAULT '',
	bearer_session_id TEXT NOT NULL UNIQUE,
	created_at_ms {bigint} NOT NULL
)`,
			`CREATE INDEX plugin_installs_account_idx ON plugin_installs (plugin_id, host_kind, host_account_id)`,
		),
		dual(403, "licenses", `CREATE TABLE licenses (
	plugin_id TEXT NOT NULL,
	host_kind TEXT NOT NULL,
	host_account_id TEXT NOT NULL,
	valid BOOLEAN NOT NULL,
	description TEXT NOT NULL DEFAULT '',
	error_message TEXT NOT NULL DEFAULT '',
	valid_until_ms {bigint},
	set_by TEXT NOT NULL DEFAULT '',
	updated_at_ms {bigint} NOT NULL,
	PRIMARY KEY (plugin_id, host_kind, host_account_id)
)`),
	}
}
