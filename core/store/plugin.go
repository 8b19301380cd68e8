package store

import (
	"context"
	"time"
)

// Plugin task states (accepted -> running -> delivered | failed | expired).
const (
	TaskAccepted  = "accepted"
	TaskRunning   = "running"
	TaskDelivered = "delivered"
	TaskFailed    = "failed"
	TaskExpired   = "expired"
)

// TaskTerminal reports whether a task state is final.
func TaskTerminal(state string) bool {
	return state == TaskDelivered || state == TaskFailed || state == TaskExpired
}

// PluginTask is one asynchronous plugin call. Its id is connectd's; TaskKey
// is the asyncTaskId App Connect knows it by (App Connect's own under
// contract B, the id under contract A), unique per (plugin, owner).
type PluginTask struct {
	ID       string
	PluginID string
	// OwnerKey names who submitted it (see PluginLogin.OwnerKey); results
	// are readable only by the same owner.
	OwnerKey string
	TaskKey  string
	// UserID is the owner's plugin login at submission (may be empty).
	UserID      string
	Host        HostIdentity
	Payload     []byte // sealed: the call's {data, config}
	CallbackURL string
	// Contract is "a" or "b" (shapes the callback body).
	Contract string
	State    string
	// Processed is true once the plugin's outcome is stored (Successful,
	// Message, Result); later attempts only deliver it.
	Processed  bool
	Successful bool
	Message    string
	Result     []byte // sealed: the outcome (JSON)
	Attempts   int    // delivery attempts
	LastError  string
	ExpiresAt  time.Time
	CreatedAt  time.Time
	UpdatedAt  time.Time
	DoneAt     *time.Time
}

// PluginTaskStats summarises the task table for metrics.
type PluginTaskStats struct {
	// ByState counts tasks per state.
	ByState map[string]int
	// OldestPending is the creation time of the oldest accepted or running
	// task (zero when none).
	OldestPending time.Time
}

// PluginTasks stores asynchronous plugin tasks. The work itself runs on the
// jobs mechanism (lease, retries, expiry); this table is the task's
// lifecycle and result.
type PluginTasks interface {
	// CreatePluginTask stores t in state accepted, or returns the task with
	// the same (plugin, owner, task key) and created=false.
	CreatePluginTask(ctx context.Context, t *PluginTask) (stored *PluginTask, created bool, err error)
	// GetPluginTask returns ErrNotFound for unknown ids.
	GetPluginTask(ctx context.Context, id string) (*PluginTask, error)
	// MarkPluginTaskRunning moves an accepted task to running (no-op when
	// already running); ErrConflict when the task is final.
	MarkPluginTaskRunning(ctx context.Context, id string) error
	// SavePluginTaskOutcome stores the plugin's outcome once: a task
	// already processed keeps its first outcome and is returned as is.
	SavePluginTaskOutcome(ctx context.Context, id string, successful bool, message string, result []byte) (*PluginTask, error)
	// NotePluginTaskAttempt counts a delivery (or processing) attempt and
	// its error.
	NotePluginTaskAttempt(ctx context.Context, id, lastError string) error
	// FinishPluginTask sets a final state (delivered or failed) on a task
	// that is not final yet; ErrConflict otherwise.
	FinishPluginTask(ctx context.Context, id, state, lastError string) error
	// ExpirePluginTasks marks every unfinished task past its expiry
	// expired (database clock) and returns how many.
	ExpirePluginTasks(ctx context.Context) (int64, error)
	// PluginTaskStats counts tasks by state.
	PluginTaskStats(ctx context.Context) (PluginTaskStats, error)
}

// PluginLogin maps who connected a plugin to the stored login (a User
// record of the plugin's platform). OwnerKey is the authenticated caller:
// an App Connect session's user, an external App Connect user, or a plugin
// bearer's session - never a header hint such as hashedExtensionId.
type PluginLogin struct {
	PluginID  string
	OwnerKey  string
	UserID    string
	CreatedAt time.Time
	UpdatedAt time.Time
}

// PluginLogins stores plugin logins.
type PluginLogins interface {
	// PutPluginLogin points (plugin, owner) at userID and returns the user
	// id it pointed at before ("" when new).
	PutPluginLogin(ctx context.Context, pluginID, ownerKey, userID string) (previous string, err error)
	// GetPluginLogin returns ErrNotFound when the owner is not connected.
	GetPluginLogin(ctx context.Context, pluginID, ownerKey string) (*PluginLogin, error)
	// DeletePluginLogin removes the mapping and returns it; ErrNotFound
	// when absent.
	DeletePluginLogin(ctx context.Context, pluginID, ownerKey string) (*PluginLogin, error)
}

// PluginInstall is one contract-B registration: a plugin bearer issued to
// a host account. Several may exist per account; each is its own session.
type PluginInstall struct {
	ID        string
	PluginID  string
	Host      HostIdentity
	SessionID string
	CreatedAt time.Time
}

// PluginInstalls records registrations.
type PluginInstalls interface {
	AddPluginInstall(ctx context.Context, in *PluginInstall) error
	// ListPluginInstalls lists a host account's registrations of a plugin.
	ListPluginInstalls(ctx context.Context, pluginID string, host HostIdentity) ([]PluginInstall, error)
}

// License is an operator-managed licence of a plugin for a host account.
type License struct {
	PluginID      string
	HostKind      string
	HostAccountID string
	Valid         bool
	Description   string
	ErrorMessage  string
	ValidUntil    *time.Time // nil: no end
	SetBy         string
	UpdatedAt     time.Time
}

// Licenses stores operator-managed licences.
type Licenses interface {
	// PutLicense creates or replaces the licence of (plugin, host kind,
	// account).
	PutLicense(ctx context.Context, l *License) error
	// GetLicense returns ErrNotFound when the account has no row.
	GetLicense(ctx context.Context, pluginID, hostKind, accountID string) (*License, error)
	// DeleteLicense returns ErrNotFound when absent.
	DeleteLicense(ctx context.Context, pluginID, hostKind, accountID string) error
	// ListLicenses lists a plugin's licences ("" = every plugin).
	ListLicenses(ctx context.Context, pluginID string) ([]License, error)
}

// PluginStore is everything the plugin server stores.
type PluginStore interface {
	PluginTasks
	PluginLogins
	PluginInstalls
	Licenses
}
