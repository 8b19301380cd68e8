// Package plugin is the engine side of connectd's App Connect plugin
// server: it runs a plugin's synchronous processing, accepts asynchronous
// calls as durable tasks on the jobs mechanism (accepted -> running ->
// delivered | failed | expired), delivers their outcome to App Connect's
// callback URL (allow-listed origins only, retried with backoff until
// acknowledged or the task expires) and answers licence status from its
// sources (per-account table, the plugin itself, static per plugin).
//
// Delivery is at least once: a worker killed after the callback was sent
// but before it was recorded sends it again, with the same asyncTaskId
// (and Idempotency-Key header) so the receiver can tell. The jobs lease
// keeps replicas from running one task at the same time.
package plugin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/google/uuid"
	"github.com/hashicorp/go-hclog"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/outbound"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
)

// JobKind is the jobs kind of asynchronous plugin tasks.
const JobKind = "plugin.task"

// Defaults.
const (
	// DefaultTaskTTL is how long a task is processed and its callback
	// retried: App Connect keeps tasks one week.
	DefaultTaskTTL = 7 * 24 * time.Hour
	// DefaultLicenseCacheTTL bounds how stale a licence answer may be.
	DefaultLicenseCacheTTL = 30 * time.Second
	// maxCallbackAnswer caps what is read of a callback's answer.
	maxCallbackAnswer = 64 << 10
)

// Contracts.
const (
	ContractA = "a" // the seed's routes (/plugin/:pluginId)
	ContractB = "b" // App Connect's manifest-URL protocol (/plugins/v2/...)
)

// Store is what the plugin service needs from storage.
type Store interface {
	store.PluginStore
	store.Jobs
	GetUser(ctx context.Context, id string) (*store.User, error)
}

// Credentials hands out HTTP clients that carry (and refresh) a stored
// login's credential: core/refresh.(*Service).HTTPClient.
type Credentials interface {
	HTTPClient(userID string) *http.Client
}

// Options configures a Service.
type Options struct {
	Store    Store
	Registry *registry.Registry
	// Credentials injects plugin logins' credentials (refresh.Service).
	Credentials Credentials
	// HTTP is the guarded outbound client for plugins without a login.
	HTTP *http.Client
	// Callback is the client that POSTs callbacks (default: a guarded
	// client that follows no redirects).
	Callback *http.Client
	// Origins are the allowed App Connect origins
	// (CONNECTD_APPCONNECT_ORIGINS); nil: DefaultOrigins.
	Origins []Origin
	// AllowPrivate (CONNECTD_ALLOW_PRIVATE_URLS) lets callbacks reach
	// loopback and private addresses, and plain http.
	AllowPrivate bool
	// StaticLicenses answer licence status per plugin when no per-account
	// row or plugin licenser decides.
	StaticLicenses map[string]connector.PluginLicenseStatus
	// TaskTTL (default 7 days), LicenseCacheTTL (default 30 s).
	TaskTTL         time.Duration
	LicenseCacheTTL time.Duration
	Clock           clock.Clock
	Logger          hclog.Logger
	// Registerer receives the metrics (nil: none).
	Registerer prometheus.Registerer
}

// Service runs plugins.
type Service struct {
	o       Options
	log     hclog.Logger
	metrics *metrics
	lic     *licenseCache
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Registry == nil {
		return nil, errors.New("plugin: a store and a registry are required")
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	if o.HTTP == nil {
		o.HTTP = outbound.NewClient(outbound.Options{AllowPrivate: o.AllowPrivate})
	}
	if o.Callback == nil {
		o.Callback = outbound.NewClient(outbound.Options{AllowPrivate: o.AllowPrivate, NoRedirects: true})
	}
	if o.Origins == nil {
		var err error
		if o.Origins, err = ParseOrigins(DefaultOrigins()); err != nil {
			return nil, err
		}
	}
	if o.TaskTTL <= 0 {
		o.TaskTTL = DefaultTaskTTL
	}
	if o.LicenseCacheTTL <= 0 {
		o.LicenseCacheTTL = DefaultLicenseCacheTTL
	}
	s := &Service{o: o, log: o.Logger, lic: newLicenseCache(o.LicenseCacheTTL, o.Clock)}
	m, err := newMetrics(o.Registerer, o.Store)
	if err != nil {
		return nil, err
	}
	s.metrics = m
	return s, nil
}

// RegisterJobs registers the task handler on r.
func (s *Service) RegisterJobs(r *jobs.Runner) { r.Handle(JobKind, s.handleTask) }

// Plugin is a registered plugin.
type Plugin struct {
	ID        string
	Platform  *manifest.Platform
	Connector connector.Connector
}

// NeedsLogin reports whether the plugin has a third-party login.
func (p *Plugin) NeedsLogin() bool { return p.Platform.AuthType() != "" }

// Async reports whether calls are processed asynchronously.
func (p *Plugin) Async() bool { return p.Platform.IsAsync }

// Lookup returns the plugin named id: failure.NotFound when there is no
// such plugin (a CRM platform is not a plugin).
func (s *Service) Lookup(id string) (*Plugin, error) {
	ent, err := s.o.Registry.Get(id)
	if err != nil {
		return nil, err
	}
	if ent.Platform.Kind() != manifest.KindPlugin {
		return nil, failure.Newf(failure.NotFound, "Plugin not found.")
	}
	p := &Plugin{ID: id, Platform: ent.Platform, Connector: ent.Connector}
	if p.Async() {
		if _, ok := ent.Connector.(connector.AsyncProcessor); !ok {
			return nil, failure.New(failure.Misconfigured, "This plugin is not available.", fmt.Errorf("plugin %s: manifest isAsync but the connector is not an AsyncProcessor", id))
		}
	} else if _, ok := ent.Connector.(connector.SyncProcessor); !ok {
		return nil, failure.New(failure.Misconfigured, "This plugin is not available.", fmt.Errorf("plugin %s: the connector is not a SyncProcessor", id))
	}
	return p, nil
}

// Call is one processing request.
type Call struct {
	PluginID string
	// OwnerKey is the authenticated caller (see store.PluginLogin).
	OwnerKey string
	Host     store.HostIdentity
	Contract string
	Data     json.RawMessage
	Config   json.RawMessage
	// TaskKey is App Connect's asyncTaskId (contract B); empty: generated.
	TaskKey     string
	CallbackURL string
}

// Login returns the owner's plugin login: the user record, or nil when
// not connected.
func (s *Service) Login(ctx context.Context, pluginID, ownerKey string) (*store.User, error) {
	pl, err := s.o.Store.GetPluginLogin(ctx, pluginID, ownerKey)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, failure.New(failure.Unavailable, "Plugin logins are temporarily unavailable.", err)
	}
	u, err := s.o.Store.GetUser(ctx, pl.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, failure.New(failure.Unavailable, "Plugin logins are temporarily unavailable.", err)
	}
	if u.Status == store.StatusRevoked || u.Status == store.StatusNeedsReauth {
		return nil, nil
	}
	return u, nil
}

func pluginLogin(u *store.User) *connector.PluginLogin {
	if u == nil {
		return nil
	}
	return &connector.PluginLogin{UserID: u.ID, ServiceUserID: u.CRMUserID, Name: u.DisplayName, AdditionalInfo: u.AdditionalInfo}
}

// request builds the plugin's request; a plugin with a login needs the
// caller connected.
func (s *Service) request(ctx context.Context, p *Plugin, ownerKey string, host store.HostIdentity) (connector.PluginRequest, error) {
	req := connector.PluginRequest{HTTPClient: s.o.HTTP, PluginID: p.ID, HostAccountID: host.AccountID}
	if !p.NeedsLogin() {
		return req, nil
	}
	u, err := s.Login(ctx, p.ID, ownerKey)
	if err != nil {
		return req, err
	}
	if u == nil {
		return req, failure.Newf(failure.Conflict, "Connect %s first (plugin settings).", displayName(p.Platform))
	}
	if s.o.Credentials == nil {
		return req, failure.New(failure.Misconfigured, "This plugin is not available.", errors.New("plugin: no credentials source configured"))
	}
	req.HTTPClient = s.o.Credentials.HTTPClient(u.ID)
	req.Login = pluginLogin(u)
	return req, nil
}

func displayName(p *manifest.Platform) string {
	if p.DisplayName != "" {
		return p.DisplayName
	}
	return p.Name
}

// CheckData rejects a payload that is not a JSON object.
func CheckData(data json.RawMessage) error {
	d := bytes.TrimSpace(data)
	if len(d) == 0 || string(d) == "null" {
		return failure.Newf(failure.InvalidRequest, "The request body must carry a \"data\" object.")
	}
	if d[0] != '{' {
		return failure.Newf(failure.InvalidRequest, "\"data\" must be a JSON object.")
	}
	return nil
}

// ProcessSync runs a synchronous plugin and returns the changed data.
func (s *Service) ProcessSync(ctx context.Context, p *Plugin, c Call) (json.RawMessage, error) {
	if err := CheckData(c.Data); err != nil {
		return nil, err
	}
	sp, ok := p.Connector.(connector.SyncProcessor)
	if !ok {
		return nil, failure.Newf(failure.InvalidRequest, "This plugin processes asynchronously.")
	}
	req, err := s.request(ctx, p, c.OwnerKey, c.Host)
	if err != nil {
		return nil, err
	}
	req.Data, req.Config = c.Data, c.Config
	out, err := sp.ProcessSync(ctx, req)
	switch {
	case errors.Is(err, connector.ErrInvalidPayload):
		s.metrics.outcome(p.ID, "invalid")
		return nil, failure.New(failure.InvalidRequest, err.Error(), err)
	case err != nil:
		s.metrics.outcome(p.ID, "error")
		if fe := (*failure.Error)(nil); errors.As(err, &fe) {
			return nil, err
		}
		return nil, failure.New(failure.UpstreamUnavailable, "The plugin could not process the content.", err)
	}
	if !json.Valid(out) {
		s.metrics.outcome(p.ID, "error")
		return nil, failure.New(failure.Internal, "The plugin answered something unusable.", errors.New("plugin: sync result is not JSON"))
	}
	s.metrics.outcome(p.ID, "processed")
	return out, nil
}

// taskPayload is what a task stores of its call (sealed).
type taskPayload struct {
	Data   json.RawMessage `json:"data"`
	Config json.RawMessage `json:"config,omitempty"`
}

// jobPayload names the task a job runs.
type jobPayload struct {
	TaskID string `json:"task"`
}

// Submit stores an asynchronous call as a task and queues it. Submitting
// the same (plugin, owner, task key) again returns the existing task.
func (s *Service) Submit(ctx context.Context, p *Plugin, c Call) (*store.PluginTask, error) {
	if err := CheckData(c.Data); err != nil {
		return nil, err
	}
	if _, ok := p.Connector.(connector.AsyncProcessor); !ok {
		return nil, failure.Newf(failure.InvalidRequest, "This plugin processes synchronously.")
	}
	if c.CallbackURL != "" {
		if _, err := CheckCallbackURL(c.CallbackURL, s.o.Origins, s.o.AllowPrivate); err != nil {
			return nil, err
		}
	}
	if len(c.TaskKey) > 200 {
		return nil, failure.Newf(failure.InvalidRequest, "asyncTaskId is longer than 200 characters.")
	}
	// The caller must be connected now, not when the worker runs.
	var userID string
	if p.NeedsLogin() {
		u, err := s.Login(ctx, p.ID, c.OwnerKey)
		if err != nil {
			return nil, err
		}
		if u == nil {
			return nil, failure.Newf(failure.Conflict, "Connect %s first (plugin settings).", displayName(p.Platform))
		}
		userID = u.ID
	}
	payload, err := json.Marshal(taskPayload{Data: c.Data, Config: c.Config})
	if err != nil {
		return nil, failure.New(failure.InvalidRequest, "The request body could not be stored.", err)
	}
	id := uuid.NewString()
	key := c.TaskKey
	if key == "" {
		key = id
	}
	t, created, err := s.o.Store.CreatePluginTask(ctx, &store.PluginTask{
		ID: id, PluginID: p.ID, OwnerKey: c.OwnerKey, TaskKey: key, UserID: userID, Host: c.Host,
		Payload: payload, CallbackURL: c.CallbackURL, Contract: c.Contract,
		ExpiresAt: s.o.Clock.Now().Add(s.o.TaskTTL),
	})
	if err != nil {
		return nil, failure.New(failure.Unavailable, "The task could not be stored; please retry.", err)
	}
	// Enqueue even when the task existed: a crash between the two writes
	// is healed by App Connect retrying the call (the job is idempotent
	// on the task id).
	jp, _ := json.Marshal(jobPayload{TaskID: t.ID})
	if _, _, err := s.o.Store.EnqueueJob(ctx, &store.Job{
		Kind: JobKind, IdempotencyKey: t.ID, Payload: jp, ExpiresAt: t.ExpiresAt,
	}); err != nil {
		return nil, failure.New(failure.Unavailable, "The task could not be queued; please retry.", err)
	}
	if created {
		s.metrics.outcome(p.ID, "accepted")
	}
	return t, nil
}

// Task returns an owner's task: NotFound for other owners' tasks.
func (s *Service) Task(ctx context.Context, pluginID, ownerKey, id string) (*store.PluginTask, error) {
	if _, err := uuid.Parse(id); err != nil {
		return nil, failure.Newf(failure.NotFound, "Task not found.")
	}
	t, err := s.o.Store.GetPluginTask(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, failure.Newf(failure.NotFound, "Task not found.")
	}
	if err != nil {
		return nil, failure.New(failure.Unavailable, "Tasks are temporarily unavailable.", err)
	}
	if t.PluginID != pluginID || t.OwnerKey != ownerKey {
		return nil, failure.Newf(failure.NotFound, "Task not found.")
	}
	if !store.TaskTerminal(t.State) && !s.o.Clock.Now().Before(t.ExpiresAt) {
		t.State = store.TaskExpired
	}
	return t, nil
}

// Outcome decodes a processed task's result.
func Outcome(t *store.PluginTask) connector.PluginResult {
	var r connector.PluginResult
	if len(t.Result) > 0 {
		_ = json.Unmarshal(t.Result, &r)
	}
	r.Successful = t.Successful
	r.Message = t.Message
	return r
}

// handleTask is the job: process once (outcome stored), then deliver.
func (s *Service) handleTask(ctx context.Context, job *store.Job) ([]byte, error) {
	var jp jobPayload
	if err := json.Unmarshal(job.Payload, &jp); err != nil || jp.TaskID == "" {
		return nil, jobs.Permanent(errors.New("plugin: job payload names no task"))
	}
	t, err := s.o.Store.GetPluginTask(ctx, jp.TaskID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, jobs.Permanent(fmt.Errorf("plugin: task %s: %w", jp.TaskID, err))
	}
	if err != nil {
		return nil, err
	}
	if store.TaskTerminal(t.State) {
		return nil, nil
	}
	log := s.log.With("task_id", t.ID, "plugin", t.PluginID, "attempt", job.Attempts)
	if !t.Processed {
		if err := s.o.Store.MarkPluginTaskRunning(ctx, t.ID); err != nil {
			if errors.Is(err, store.ErrConflict) {
				return nil, nil // finished meanwhile
			}
			return nil, err
		}
		res, perr := s.process(ctx, t)
		if perr != nil {
			_ = s.o.Store.NotePluginTaskAttempt(ctx, t.ID, perr.Error())
			s.metrics.outcome(t.PluginID, "retried")
			log.Info("plugin processing failed; will retry", "error", perr)
			return nil, perr
		}
		blob, err := json.Marshal(res)
		if err != nil {
			return nil, jobs.Permanent(err)
		}
		if t, err = s.o.Store.SavePluginTaskOutcome(ctx, t.ID, res.Successful, res.Message, blob); err != nil {
			return nil, err
		}
	}
	if t.CallbackURL == "" {
		return nil, s.finish(ctx, t, "")
	}
	derr := s.deliver(ctx, t)
	switch {
	case derr == nil:
		s.metrics.callback("acknowledged")
		return nil, s.finish(ctx, t, "")
	case jobs.IsPermanent(derr):
		s.metrics.callback("refused")
		log.Warn("callback refused; giving up", "error", derr)
		_ = s.o.Store.NotePluginTaskAttempt(ctx, t.ID, derr.Error())
		if err := s.o.Store.FinishPluginTask(ctx, t.ID, store.TaskFailed, "callback: "+derr.Error()); err != nil && !errors.Is(err, store.ErrConflict) {
			return nil, err
		}
		s.metrics.outcome(t.PluginID, store.TaskFailed)
		return nil, nil
	default:
		s.metrics.callback("error")
		_ = s.o.Store.NotePluginTaskAttempt(ctx, t.ID, derr.Error())
		log.Info("callback not acknowledged; will retry", "error", derr)
		return nil, derr
	}
}

func (s *Service) finish(ctx context.Context, t *store.PluginTask, lastError string) error {
	state := store.TaskDelivered
	if !t.Successful {
		state = store.TaskFailed
	}
	if err := s.o.Store.FinishPluginTask(ctx, t.ID, state, lastError); err != nil {
		if errors.Is(err, store.ErrConflict) {
			return nil
		}
		return err
	}
	s.metrics.outcome(t.PluginID, state)
	return nil
}

// process runs the plugin. A nil error means an outcome to store (which
// may be unsuccessful); an error means retry.
func (s *Service) process(ctx context.Context, t *store.PluginTask) (connector.PluginResult, error) {
	p, err := s.Lookup(t.PluginID)
	if err != nil {
		if failure.Is(err, failure.NotFound) || failure.Is(err, failure.Misconfigured) {
			return connector.PluginResult{Successful: false, Message: "The plugin is no longer available on this server."}, nil
		}
		return connector.PluginResult{}, err
	}
	ap, ok := p.Connector.(connector.AsyncProcessor)
	if !ok {
		return connector.PluginResult{Successful: false, Message: "The plugin no longer processes asynchronously."}, nil
	}
	var tp taskPayload
	if err := json.Unmarshal(t.Payload, &tp); err != nil {
		return connector.PluginResult{Successful: false, Message: "The task's content could not be read."}, nil
	}
	req, err := s.request(ctx, p, t.OwnerKey, t.Host)
	if err != nil {
		if failure.Is(err, failure.Conflict) {
			return connector.PluginResult{Successful: false, Message: failure.MessageOf(err)}, nil
		}
		return connector.PluginResult{}, err
	}
	req.Data, req.Config, req.TaskID = tp.Data, tp.Config, t.TaskKey
	res, err := ap.ProcessAsync(ctx, req)
	switch {
	case errors.Is(err, connector.ErrInvalidPayload):
		return connector.PluginResult{Successful: false, Message: err.Error()}, nil
	case failure.Is(err, failure.NeedsReauth):
		return connector.PluginResult{Successful: false, Message: failure.MessageOf(err)}, nil
	case err != nil:
		return connector.PluginResult{}, err
	}
	return res, nil
}

// callbackBody is what App Connect receives: contract B's {successful,
// message, note}, plus the asyncTaskId (and, under contract A, the data).
type callbackBody struct {
	AsyncTaskID string          `json:"asyncTaskId"`
	Successful  bool            `json:"successful"`
	Message     string          `json:"message"`
	Note        string          `json:"note,omitempty"`
	Data        json.RawMessage `json:"data,omitempty"`
}

// deliver POSTs the outcome to the callback URL. 2xx acknowledges; 4xx
// other than 408/425/429 is a refusal (permanent); anything else retries.
func (s *Service) deliver(ctx context.Context, t *store.PluginTask) error {
	if _, err := CheckCallbackURL(t.CallbackURL, s.o.Origins, s.o.AllowPrivate); err != nil {
		return jobs.Permanent(fmt.Errorf("callback URL no longer allowed: %s", failure.MessageOf(err)))
	}
	r := Outcome(t)
	body := callbackBody{AsyncTaskID: t.TaskKey, Successful: r.Successful, Message: r.Message, Note: r.Note}
	if t.Contract == ContractA {
		body.Data = r.Data
	}
	b, err := json.Marshal(body)
	if err != nil {
		return jobs.Permanent(err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.CallbackURL, bytes.NewReader(b))
	if err != nil {
		return jobs.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Idempotency-Key", t.TaskKey)
	req.Header.Set("X-Async-Task-Id", t.TaskKey)
	resp, err := s.o.Callback.Do(req)
	if err != nil {
		// url.Error repeats the URL, which may carry App Connect's own
		// token: keep only the cause in logs and last_error.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("callback: %w", err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxCallbackAnswer))
	_ = resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestTimeout, resp.StatusCode == http.StatusTooEarly, resp.StatusCode == http.StatusTooManyRequests:
		return fmt.Errorf("callback answered %d", resp.StatusCode)
	case resp.StatusCode >= 400 && resp.StatusCode < 500:
		return jobs.Permanent(fmt.Errorf("callback answered %d", resp.StatusCode))
	default:
		return fmt.Errorf("callback answered %d", resp.StatusCode)
	}
}

// Sweep marks expired tasks (their jobs expire on their own) and returns
// how many.
func (s *Service) Sweep(ctx context.Context) (int64, error) {
	n, err := s.o.Store.ExpirePluginTasks(ctx)
	if err != nil {
		return 0, err
	}
	if n > 0 {
		s.metrics.expired(n)
		s.log.Info("plugin tasks expired", "tasks", n)
	}
	return n, nil
}

// Run sweeps expired tasks every interval until ctx ends.
func (s *Service) Run(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Minute
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweeping plugin tasks failed", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
