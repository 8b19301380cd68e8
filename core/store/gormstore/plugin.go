package gormstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/connectd/connectd/core/store"
	"github.com/google/uuid"
)

// Logical table names for associated data (never change them).
const adPluginTasks = "plugin_tasks"

var _ store.PluginStore = (*Store)(nil)

const pluginTaskColumns = `id, plugin_id, owner_key, task_key, user_id, host_kind, host_account_id, host_user_id,
	payload, callback_url, contract, state, processed, successful, message, result, attempts, last_error,
	expires_at_ms, created_at_ms, updated_at_ms, done_at_ms`

type pluginTaskRow struct {
	ID            string `gorm:"column:id"`
	PluginID      string `gorm:"column:plugin_id"`
	OwnerKey      string `gorm:"column:owner_key"`
	TaskKey       string `gorm:"column:task_key"`
	UserID        string `gorm:"column:user_id"`
	HostKind      string `gorm:"column:host_kind"`
	HostAccountID string `gorm:"column:host_account_id"`
	HostUserID    string `gorm:"column:host_user_id"`
	Payload       []byte `gorm:"column:payload"`
	CallbackURL   string `gorm:"column:callback_url"`
	Contract      string `gorm:"column:contract"`
	State         string `gorm:"column:state"`
	Processed     bool   `gorm:"column:processed"`
	Successful    bool   `gorm:"column:successful"`
	Message       string `gorm:"column:message"`
	Result        []byte `gorm:"column:result"`
	Attempts      int    `gorm:"column:attempts"`
	LastError     string `gorm:"column:last_error"`
	ExpiresAtMS   int64  `gorm:"column:expires_at_ms"`
	CreatedAtMS   int64  `gorm:"column:created_at_ms"`
	UpdatedAtMS   int64  `gorm:"column:updated_at_ms"`
	DoneAtMS      *int64 `gorm:"column:done_at_ms"`
}

func (s *Store) decodePluginTask(r *pluginTaskRow) (*store.PluginTask, error) {
	t := &store.PluginTask{
		ID: r.ID, PluginID: r.PluginID, OwnerKey: r.OwnerKey, TaskKey: r.TaskKey, UserID: r.UserID,
		Host:        store.HostIdentity{Kind: r.HostKind, AccountID: r.HostAccountID, UserID: r.HostUserID},
		CallbackURL: r.CallbackURL, Contract: r.Contract, State: r.State, Processed: r.Processed,
		Successful: r.Successful, Message: r.Message, Attempts: r.Attempts, LastError: r.LastError,
		ExpiresAt: msTime(r.ExpiresAtMS), CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS),
		DoneAt: msTimePtr(r.DoneAtMS),
	}
	var err error
	if t.Payload, err = s.open(adPluginTasks, r.ID, "payload", r.Payload); err != nil {
		return nil, err
	}
	if t.Result, err = s.open(adPluginTasks, r.ID, "result", r.Result); err != nil {
		return nil, err
	}
	return t, nil
}

// CreatePluginTask inserts t (ID generated when empty; TaskKey defaults to
// the id) in state accepted, or returns the existing task with the same
// (plugin, owner, task key).
func (s *Store) CreatePluginTask(ctx context.Context, t *store.PluginTask) (*store.PluginTask, bool, error) {
	if t == nil || t.PluginID == "" || t.OwnerKey == "" || t.Contract == "" || t.ExpiresAt.IsZero() {
		return nil, false, errors.New("gormstore: create plugin task: plugin, owner, contract and expiry are required")
	}
	id := t.ID
	if id == "" {
		id = uuid.NewString()
	}
	key := t.TaskKey
	if key == "" {
		key = id
	}
	payload, err := s.seal(adPluginTasks, id, "payload", t.Payload)
	if err != nil {
		return nil, false, err
	}
	var rows []pluginTaskRow
	if _, err := s.query(ctx, s.w, &rows, `INSERT INTO plugin_tasks (id, plugin_id, owner_key, task_key, user_id, host_kind,
			host_account_id, host_user_id, payload, callback_url, contract, state, expires_at_ms, created_at_ms, updated_at_ms)
		VALUES (@id, @plugin, @owner, @key, @user, @hk, @ha, @hu, @payload, @cb, @contract, 'accepted', @exp, {now}, {now})
		ON CONFLICT (plugin_id, owner_key, task_key) DO NOTHING
		RETURNING `+pluginTaskColumns, args{
		"id": id, "plugin": t.PluginID, "owner": t.OwnerKey, "key": key, "user": t.UserID,
		"hk": t.Host.Kind, "ha": t.Host.AccountID, "hu": t.Host.UserID, "payload": blob(payload),
		"cb": t.CallbackURL, "contract": t.Contract, "exp": t.ExpiresAt.UnixMilli(),
	}); err != nil {
		return nil, false, fmt.Errorf("gormstore: create plugin task: %w", err)
	}
	if len(rows) == 1 {
		stored, err := s.decodePluginTask(&rows[0])
		return stored, true, err
	}
	if _, err := s.query(ctx, s.w, &rows, `SELECT `+pluginTaskColumns+` FROM plugin_tasks
		WHERE plugin_id = @plugin AND owner_key = @owner AND task_key = @key`,
		args{"plugin": t.PluginID, "owner": t.OwnerKey, "key": key}); err != nil {
		return nil, false, fmt.Errorf("gormstore: create plugin task: %w", err)
	}
	if len(rows) == 0 {
		return nil, false, fmt.Errorf("gormstore: create plugin task: %w", store.ErrConflict)
	}
	stored, err := s.decodePluginTask(&rows[0])
	return stored, false, err
}

// GetPluginTask reads one task.
func (s *Store) GetPluginTask(ctx context.Context, id string) (*store.PluginTask, error) {
	var rows []pluginTaskRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+pluginTaskColumns+` FROM plugin_tasks WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: get plugin task: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: plugin task %s: %w", id, store.ErrNotFound)
	}
	return s.decodePluginTask(&rows[0])
}

// taskMissed tells ErrNotFound from ErrConflict after a conditional update
// matched nothing.
func (s *Store) taskMissed(ctx context.Context, op, id string) error {
	var n int64
	if _, err := s.query(ctx, s.w, &n, `SELECT COUNT(*) FROM plugin_tasks WHERE id = @id`, args{"id": id}); err != nil {
		return fmt.Errorf("gormstore: %s: %w", op, err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: %s %s: %w", op, id, store.ErrNotFound)
	}
	return fmt.Errorf("gormstore: %s %s: task is final: %w", op, id, store.ErrConflict)
}

// MarkPluginTaskRunning moves accepted -> running.
func (s *Store) MarkPluginTaskRunning(ctx context.Context, id string) error {
	n, err := s.exec(ctx, s.w, `UPDATE plugin_tasks SET state = 'running', updated_at_ms = {now}
		WHERE id = @id AND state IN ('accepted', 'running')`, args{"id": id})
	if err != nil {
		return fmt.Errorf("gormstore: mark plugin task running: %w", err)
	}
	if n == 0 {
		return s.taskMissed(ctx, "mark plugin task running", id)
	}
	return nil
}

// SavePluginTaskOutcome stores the first outcome of a task; a processed
// task keeps the outcome it has.
func (s *Store) SavePluginTaskOutcome(ctx context.Context, id string, successful bool, message string, result []byte) (*store.PluginTask, error) {
	sealed, err := s.seal(adPluginTasks, id, "result", result)
	if err != nil {
		return nil, err
	}
	if _, err := s.exec(ctx, s.w, `UPDATE plugin_tasks SET processed = TRUE, successful = @ok, message = @msg, result = @result,
			updated_at_ms = {now}
		WHERE id = @id AND processed = FALSE AND state IN ('accepted', 'running')`,
		args{"id": id, "ok": successful, "msg": truncateError(message), "result": blob(sealed)}); err != nil {
		return nil, fmt.Errorf("gormstore: save plugin task outcome: %w", err)
	}
	var rows []pluginTaskRow
	if _, err := s.query(ctx, s.w, &rows, `SELECT `+pluginTaskColumns+` FROM plugin_tasks WHERE id = @id`, args{"id": id}); err != nil {
		return nil, fmt.Errorf("gormstore: save plugin task outcome: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: plugin task %s: %w", id, store.ErrNotFound)
	}
	return s.decodePluginTask(&rows[0])
}

// NotePluginTaskAttempt counts an attempt.
func (s *Store) NotePluginTaskAttempt(ctx context.Context, id, lastError string) error {
	n, err := s.exec(ctx, s.w, `UPDATE plugin_tasks SET attempts = attempts + 1, last_error = @err, updated_at_ms = {now}
		WHERE id = @id`, args{"id": id, "err": truncateError(lastError)})
	if err != nil {
		return fmt.Errorf("gormstore: note plugin task attempt: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: plugin task %s: %w", id, store.ErrNotFound)
	}
	return nil
}

// FinishPluginTask sets a final state once.
func (s *Store) FinishPluginTask(ctx context.Context, id, state, lastError string) error {
	if state != store.TaskDelivered && state != store.TaskFailed {
		return fmt.Errorf("gormstore: finish plugin task: state %q is not delivered or failed", state)
	}
	n, err := s.exec(ctx, s.w, `UPDATE plugin_tasks SET state = @state,
			last_error = CASE WHEN @err = '' THEN last_error ELSE @err END, done_at_ms = {now}, updated_at_ms = {now}
		WHERE id = @id AND state IN ('accepted', 'running')`, args{"id": id, "state": state, "err": truncateError(lastError)})
	if err != nil {
		return fmt.Errorf("gormstore: finish plugin task: %w", err)
	}
	if n == 0 {
		return s.taskMissed(ctx, "finish plugin task", id)
	}
	return nil
}

// ExpirePluginTasks marks unfinished tasks past their expiry expired.
func (s *Store) ExpirePluginTasks(ctx context.Context) (int64, error) {
	n, err := s.exec(ctx, s.w, `UPDATE plugin_tasks SET state = 'expired', done_at_ms = {now}, updated_at_ms = {now}
		WHERE state IN ('accepted', 'running') AND expires_at_ms <= {now}`, nil)
	if err != nil {
		return 0, fmt.Errorf("gormstore: expire plugin tasks: %w", err)
	}
	return n, nil
}

// PluginTaskStats counts tasks per state and finds the oldest unfinished.
func (s *Store) PluginTaskStats(ctx context.Context) (store.PluginTaskStats, error) {
	var rows []struct {
		State string `gorm:"column:state"`
		N     int    `gorm:"column:n"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT state, COUNT(*) AS n FROM plugin_tasks GROUP BY state`, nil); err != nil {
		return store.PluginTaskStats{}, fmt.Errorf("gormstore: plugin task stats: %w", err)
	}
	st := store.PluginTaskStats{ByState: map[string]int{}}
	for _, r := range rows {
		st.ByState[r.State] = r.N
	}
	var oldest []struct {
		MS *int64 `gorm:"column:ms"`
	}
	if _, err := s.query(ctx, s.r, &oldest, `SELECT MIN(created_at_ms) AS ms FROM plugin_tasks WHERE state IN ('accepted', 'running')`, nil); err != nil {
		return store.PluginTaskStats{}, fmt.Errorf("gormstore: plugin task stats: %w", err)
	}
	if len(oldest) == 1 && oldest[0].MS != nil {
		st.OldestPending = msTime(*oldest[0].MS)
	}
	return st, nil
}

type pluginLoginRow struct {
	PluginID    string `gorm:"column:plugin_id"`
	OwnerKey    string `gorm:"column:owner_key"`
	UserID      string `gorm:"column:user_id"`
	CreatedAtMS int64  `gorm:"column:created_at_ms"`
	UpdatedAtMS int64  `gorm:"column:updated_at_ms"`
}

func (r *pluginLoginRow) decode() *store.PluginLogin {
	return &store.PluginLogin{PluginID: r.PluginID, OwnerKey: r.OwnerKey, UserID: r.UserID,
		CreatedAt: msTime(r.CreatedAtMS), UpdatedAt: msTime(r.UpdatedAtMS)}
}

// PutPluginLogin upserts the mapping and returns the previous user id.
func (s *Store) PutPluginLogin(ctx context.Context, pluginID, ownerKey, userID string) (string, error) {
	if pluginID == "" || ownerKey == "" || userID == "" {
		return "", errors.New("gormstore: put plugin login: plugin, owner and user are required")
	}
	prev := ""
	if old, err := s.GetPluginLogin(ctx, pluginID, ownerKey); err == nil {
		prev = old.UserID
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	if _, err := s.exec(ctx, s.w, `INSERT INTO plugin_logins (plugin_id, owner_key, user_id, created_at_ms, updated_at_ms)
		VALUES (@plugin, @owner, @user, {now}, {now})
		ON CONFLICT (plugin_id, owner_key) DO UPDATE SET user_id = excluded.user_id, updated_at_ms = excluded.updated_at_ms`,
		args{"plugin": pluginID, "owner": ownerKey, "user": userID}); err != nil {
		return "", fmt.Errorf("gormstore: put plugin login: %w", err)
	}
	return prev, nil
}

// GetPluginLogin reads a mapping.
func (s *Store) GetPluginLogin(ctx context.Context, pluginID, ownerKey string) (*store.PluginLogin, error) {
	var rows []pluginLoginRow
	if _, err := s.query(ctx, s.w, &rows, `SELECT plugin_id, owner_key, user_id, created_at_ms, updated_at_ms FROM plugin_logins
		WHERE plugin_id = @plugin AND owner_key = @owner`, args{"plugin": pluginID, "owner": ownerKey}); err != nil {
		return nil, fmt.Errorf("gormstore: get plugin login: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: plugin login: %w", store.ErrNotFound)
	}
	return rows[0].decode(), nil
}

// DeletePluginLogin removes a mapping and returns it.
func (s *Store) DeletePluginLogin(ctx context.Context, pluginID, ownerKey string) (*store.PluginLogin, error) {
	var rows []pluginLoginRow
	if _, err := s.query(ctx, s.w, &rows, `DELETE FROM plugin_logins WHERE plugin_id = @plugin AND owner_key = @owner
		RETURNING plugin_id, owner_key, user_id, created_at_ms, updated_at_ms`, args{"plugin": pluginID, "owner": ownerKey}); err != nil {
		return nil, fmt.Errorf("gormstore: delete plugin login: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: plugin login: %w", store.ErrNotFound)
	}
	return rows[0].decode(), nil
}

// AddPluginInstall records a registration.
func (s *Store) AddPluginInstall(ctx context.Context, in *store.PluginInstall) error {
	if in == nil || in.PluginID == "" || in.Host.Kind == "" || in.Host.AccountID == "" || in.SessionID == "" {
		return errors.New("gormstore: add plugin install: plugin, host and session are required")
	}
	if in.ID == "" {
		in.ID = uuid.NewString()
	}
	if _, err := s.exec(ctx, s.w, `INSERT INTO plugin_installs (id, plugin_id, host_kind, host_account_id, host_user_id,
			bearer_session_id, created_at_ms)
		VALUES (@id, @plugin, @hk, @ha, @hu, @sid, {now})`, args{"id": in.ID, "plugin": in.PluginID,
		"hk": in.Host.Kind, "ha": in.Host.AccountID, "hu": in.Host.UserID, "sid": in.SessionID}); err != nil {
		return fmt.Errorf("gormstore: add plugin install: %w", err)
	}
	return nil
}

// ListPluginInstalls lists an account's registrations, oldest first.
func (s *Store) ListPluginInstalls(ctx context.Context, pluginID string, host store.HostIdentity) ([]store.PluginInstall, error) {
	var rows []struct {
		ID          string `gorm:"column:id"`
		PluginID    string `gorm:"column:plugin_id"`
		HostKind    string `gorm:"column:host_kind"`
		HostAccount string `gorm:"column:host_account_id"`
		HostUser    string `gorm:"column:host_user_id"`
		SessionID   string `gorm:"column:bearer_session_id"`
		CreatedAtMS int64  `gorm:"column:created_at_ms"`
	}
	if _, err := s.query(ctx, s.r, &rows, `SELECT id, plugin_id, host_kind, host_account_id, host_user_id, bearer_session_id, created_at_ms
		FROM plugin_installs WHERE plugin_id = @plugin AND host_kind = @hk AND host_account_id = @ha ORDER BY created_at_ms, id`,
		args{"plugin": pluginID, "hk": host.Kind, "ha": host.AccountID}); err != nil {
		return nil, fmt.Errorf("gormstore: list plugin installs: %w", err)
	}
	out := make([]store.PluginInstall, 0, len(rows))
	for _, r := range rows {
		out = append(out, store.PluginInstall{ID: r.ID, PluginID: r.PluginID,
			Host:      store.HostIdentity{Kind: r.HostKind, AccountID: r.HostAccount, UserID: r.HostUser},
			SessionID: r.SessionID, CreatedAt: msTime(r.CreatedAtMS)})
	}
	return out, nil
}

type licenseRow struct {
	PluginID     string `gorm:"column:plugin_id"`
	HostKind     string `gorm:"column:host_kind"`
	HostAccount  string `gorm:"column:host_account_id"`
	Valid        bool   `gorm:"column:valid"`
	Description  string `gorm:"column:description"`
	ErrorMessage string `gorm:"column:error_message"`
	ValidUntilMS *int64 `gorm:"column:valid_until_ms"`
	SetBy        string `gorm:"column:set_by"`
	UpdatedAtMS  int64  `gorm:"column:updated_at_ms"`
}

func (r *licenseRow) decode() store.License {
	return store.License{PluginID: r.PluginID, HostKind: r.HostKind, HostAccountID: r.HostAccount, Valid: r.Valid,
		Description: r.Description, ErrorMessage: r.ErrorMessage, ValidUntil: msTimePtr(r.ValidUntilMS),
		SetBy: r.SetBy, UpdatedAt: msTime(r.UpdatedAtMS)}
}

const licenseColumns = `plugin_id, host_kind, host_account_id, valid, description, error_message, valid_until_ms, set_by, updated_at_ms`

// PutLicense creates or replaces a licence.
func (s *Store) PutLicense(ctx context.Context, l *store.License) error {
	if l == nil || l.PluginID == "" || l.HostKind == "" || l.HostAccountID == "" {
		return errors.New("gormstore: put license: plugin, host kind and account are required")
	}
	if _, err := s.exec(ctx, s.w, `INSERT INTO licenses (`+licenseColumns+`)
		VALUES (@plugin, @hk, @ha, @valid, @desc, @errmsg, @until, @by, {now})
		ON CONFLICT (plugin_id, host_kind, host_account_id) DO UPDATE SET valid = excluded.valid,
			description = excluded.description, error_message = excluded.error_message,
			valid_until_ms = excluded.valid_until_ms, set_by = excluded.set_by, updated_at_ms = excluded.updated_at_ms`,
		args{"plugin": l.PluginID, "hk": l.HostKind, "ha": l.HostAccountID, "valid": l.Valid, "desc": l.Description,
			"errmsg": l.ErrorMessage, "until": msPtr(l.ValidUntil), "by": l.SetBy}); err != nil {
		return fmt.Errorf("gormstore: put license: %w", err)
	}
	return nil
}

// GetLicense reads a licence.
func (s *Store) GetLicense(ctx context.Context, pluginID, hostKind, accountID string) (*store.License, error) {
	var rows []licenseRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+licenseColumns+` FROM licenses
		WHERE plugin_id = @plugin AND host_kind = @hk AND host_account_id = @ha`,
		args{"plugin": pluginID, "hk": hostKind, "ha": accountID}); err != nil {
		return nil, fmt.Errorf("gormstore: get license: %w", err)
	}
	if len(rows) == 0 {
		return nil, fmt.Errorf("gormstore: license: %w", store.ErrNotFound)
	}
	l := rows[0].decode()
	return &l, nil
}

// DeleteLicense removes a licence.
func (s *Store) DeleteLicense(ctx context.Context, pluginID, hostKind, accountID string) error {
	n, err := s.exec(ctx, s.w, `DELETE FROM licenses WHERE plugin_id = @plugin AND host_kind = @hk AND host_account_id = @ha`,
		args{"plugin": pluginID, "hk": hostKind, "ha": accountID})
	if err != nil {
		return fmt.Errorf("gormstore: delete license: %w", err)
	}
	if n == 0 {
		return fmt.Errorf("gormstore: license: %w", store.ErrNotFound)
	}
	return nil
}

// ListLicenses lists licences ordered by plugin and account.
func (s *Store) ListLicenses(ctx context.Context, pluginID string) ([]store.License, error) {
	var rows []licenseRow
	if _, err := s.query(ctx, s.r, &rows, `SELECT `+licenseColumns+` FROM licenses
		WHERE @plugin = '' OR plugin_id = @plugin ORDER BY plugin_id, host_kind, host_account_id`,
		args{"plugin": pluginID}); err != nil {
		return nil, fmt.Errorf("gormstore: list licenses: %w", err)
	}
	out := make([]store.License, 0, len(rows))
	for i := range rows {
		out = append(out, rows[i].decode())
	}
	return out, nil
}
