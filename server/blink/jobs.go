package blink

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/store"
)

// Job kinds of the Blink calls.
const (
	JobAddLink    = "blink_add_link"
	JobUpdateLink = "blink_update_link"
	JobDeleteLink = "blink_delete_link"
)

// Defaults for the per-app API settings (store.BlinkAPISettings) that
// Blink's reference leaves open. Paths are relative to the app's API URL;
// {user_id} and {linked_account_id} are path-escaped.
const (
	DefaultAddPath      = "/users/{user_id}/linked-accounts"
	DefaultDeletePath   = "/users/{user_id}/linked-accounts/{linked_account_id}"
	DefaultUpdatePath   = "/users/{user_id}/linked-accounts/{linked_account_id}"
	DefaultUpdateMethod = http.MethodPatch
	// UpdateNone disables update calls (an API without them): Blink then
	// learns of requires_reauth only when the user reconnects.
	UpdateNone = "none"
)

// maxBlinkBody caps what is read of Blink's answers.
const maxBlinkBody = 1 << 20

// RegisterJobs registers the Blink job handlers with r.
func (s *Surface) RegisterJobs(r *jobs.Runner) {
	r.Handle(JobAddLink, s.handleAdd)
	r.Handle(JobUpdateLink, s.handleUpdate)
	r.Handle(JobDeleteLink, s.handleDelete)
}

type linkPayload struct {
	LinkID string `json:"link_id"`
}

type deletePayload struct {
	LinkID               string `json:"link_id"`
	AppID                string `json:"app_id"`
	BlinkUserID          string `json:"blink_user_id"`
	BlinkLinkedAccountID string `json:"blink_linked_account_id"`
}

// requiresReauth is what Blink's requires_reauth says of a user record.
func requiresReauth(u *store.User) bool {
	return u.Status == store.StatusNeedsReauth || u.Status == store.StatusRevoked
}

func (s *Surface) enqueue(ctx context.Context, kind, key string, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return errorf("encode job: %w", err)
	}
	now := s.o.Clock.Now()
	if _, _, err := s.o.Store.EnqueueJob(ctx, &store.Job{
		Kind: kind, IdempotencyKey: key, Payload: b, NextAttemptAt: now, ExpiresAt: now.Add(s.o.JobLifetime),
	}); err != nil {
		return errorf("enqueue %s: %w", kind, err)
	}
	return nil
}

// enqueuePush queues what Blink must learn about link given the user
// record u: the Add call for a pending link, an update for a linked one
// whose pushed state is behind. Keys make it idempotent per record
// version and reauth state.
func (s *Surface) enqueuePush(ctx context.Context, link *store.BlinkLink, u *store.User) error {
	reauth := requiresReauth(u)
	suffix := ":" + strconv.FormatInt(u.Version, 10) + ":" + strconv.FormatBool(reauth)
	switch link.State {
	case store.BlinkLinkPending:
		return s.enqueue(ctx, JobAddLink, link.ID+suffix, linkPayload{LinkID: link.ID})
	case store.BlinkLinkLinked:
		return s.enqueue(ctx, JobUpdateLink, link.ID+suffix, linkPayload{LinkID: link.ID})
	}
	return nil
}

func (s *Surface) enqueueDelete(ctx context.Context, link *store.BlinkLink) error {
	if link.BlinkLinkedAccountID == "" {
		_, err := s.o.Store.DeleteBlinkLink(ctx, link.ID, store.BlinkLinkDeleting)
		return err
	}
	return s.enqueue(ctx, JobDeleteLink, link.ID+":"+link.BlinkLinkedAccountID, deletePayload{
		LinkID: link.ID, AppID: link.AppID, BlinkUserID: link.BlinkUserID, BlinkLinkedAccountID: link.BlinkLinkedAccountID,
	})
}

// linkBody is the linked account as Blink receives it. Tokens only when
// the app shares them, and then only the access token: a rotating
// refresh token in two places would be replayed by one of them.
func linkBody(app *store.BlinkApp, link *store.BlinkLink, u *store.User) map[string]any {
	body := map[string]any{
		"auth_id":             app.AuthID,
		"external_account_id": link.ExternalAccountID,
		"requires_reauth":     requiresReauth(u),
	}
	if u.DisplayName != "" {
		body["extra_info"] = u.DisplayName
	}
	if app.ShareTokens && !requiresReauth(u) && u.AccessToken != "" {
		body["access_token"] = u.AccessToken
		if u.TokenExpiry != nil {
			body["expires_at"] = u.TokenExpiry.UTC().Format(time.RFC3339)
		}
	}
	return body
}

// handleAdd: "Add User Linked Account" for a pending link.
func (s *Surface) handleAdd(ctx context.Context, j *store.Job) ([]byte, error) {
	var p linkPayload
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return nil, jobs.Permanent(errorf("add payload: %w", err))
	}
	link, app, u, err := s.load(ctx, p.LinkID)
	if err != nil || link == nil {
		return nil, err
	}
	switch link.State {
	case store.BlinkLinkDeleting:
		return []byte(`{"skipped":"deleting"}`), nil
	case store.BlinkLinkLinked:
		return s.update(ctx, "add", app, link, u)
	}
	path := expand(pathOr(app.API.AddPath, DefaultAddPath), link.BlinkUserID, "")
	status, body, err := s.call(ctx, app, "add", http.MethodPost, path, linkBody(app, link, u), j.IdempotencyKey)
	if err != nil {
		return nil, err
	}
	if err := classify(status, false); err != nil {
		return nil, err
	}
	bid := linkedAccountID(body)
	if bid == "" {
		// Retrying could create duplicates at Blink: fail visibly
		// (metrics, blink status) instead.
		s.metrics.api.WithLabelValues(app.Name, "add", "invalid").Inc()
		return nil, jobs.Permanent(errorf("Blink answered %d without a linked account id", status))
	}
	if err := s.o.Store.SetBlinkLinkLinked(ctx, link.ID, bid, u.Version, requiresReauth(u)); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Disconnected while we were adding: remove what we added.
			link.BlinkLinkedAccountID = bid
			return nil, s.enqueueDelete(ctx, link)
		}
		return nil, err
	}
	s.log.Info("blink linked account added", "app", app.Name, "link_id", link.ID)
	// The record may have changed meanwhile (refresh, needs_reauth).
	if cur, err := s.o.Store.GetUser(ctx, u.ID); err == nil && (cur.Version != u.Version || requiresReauth(cur) != requiresReauth(u)) {
		link.State = store.BlinkLinkLinked
		_ = s.enqueuePush(ctx, link, cur)
	}
	return json.Marshal(map[string]string{"blink_linked_account_id": bid})
}

// handleUpdate pushes requires_reauth (and a shared access token) of a
// linked link.
func (s *Surface) handleUpdate(ctx context.Context, j *store.Job) ([]byte, error) {
	var p linkPayload
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return nil, jobs.Permanent(errorf("update payload: %w", err))
	}
	link, app, u, err := s.load(ctx, p.LinkID)
	if err != nil || link == nil {
		return nil, err
	}
	if link.State != store.BlinkLinkLinked {
		// Pending: the Add call reads the current record; deleting:
		// nothing to update.
		return []byte(`{"skipped":"` + link.State + `"}`), nil
	}
	return s.update(ctx, "update", app, link, u)
}

func (s *Surface) update(ctx context.Context, op string, app *store.BlinkApp, link *store.BlinkLink, u *store.User) ([]byte, error) {
	if link.PushedReauth == requiresReauth(u) && (!app.ShareTokens || link.PushedVersion == u.Version) {
		return []byte(`{"skipped":"up to date"}`), nil
	}
	method := strings.ToUpper(pathOr(app.API.UpdateMethod, DefaultUpdateMethod))
	if method == strings.ToUpper(UpdateNone) {
		return []byte(`{"skipped":"updates disabled"}`), nil
	}
	path := expand(pathOr(app.API.UpdatePath, DefaultUpdatePath), link.BlinkUserID, link.BlinkLinkedAccountID)
	status, _, err := s.call(ctx, app, "update", method, path, linkBody(app, link, u), "")
	if err != nil {
		return nil, err
	}
	if err := classify(status, false); err != nil {
		return nil, err
	}
	if err := s.o.Store.SetBlinkLinkPushed(ctx, link.ID, u.Version, requiresReauth(u)); err != nil && !errors.Is(err, store.ErrConflict) {
		return nil, err
	}
	return []byte(`{"updated":true}`), nil
}

// handleDelete: "Delete User Linked Account", then our row.
func (s *Surface) handleDelete(ctx context.Context, j *store.Job) ([]byte, error) {
	var p deletePayload
	if err := json.Unmarshal(j.Payload, &p); err != nil || p.BlinkLinkedAccountID == "" {
		return nil, jobs.Permanent(errorf("delete payload unreadable"))
	}
	app, err := s.o.Store.GetBlinkApp(ctx, p.AppID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, jobs.Permanent(errorf("app %s no longer exists", p.AppID))
	}
	if err != nil {
		return nil, err
	}
	path := expand(pathOr(app.API.DeletePath, DefaultDeletePath), p.BlinkUserID, p.BlinkLinkedAccountID)
	status, _, err := s.call(ctx, app, "delete", http.MethodDelete, path, nil, "")
	if err != nil {
		return nil, err
	}
	if err := classify(status, true); err != nil {
		return nil, err
	}
	if _, err := s.o.Store.DeleteBlinkLink(ctx, p.LinkID, store.BlinkLinkDeleting); err != nil {
		return nil, err
	}
	s.log.Info("blink linked account deleted", "app", app.Name, "link_id", p.LinkID)
	return []byte(`{"deleted":true}`), nil
}

// load reads a job's link, app and user record. A vanished link is done
// (nil link, nil error).
func (s *Surface) load(ctx context.Context, linkID string) (*store.BlinkLink, *store.BlinkApp, *store.User, error) {
	link, err := s.o.Store.GetBlinkLink(ctx, linkID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, nil
	}
	if err != nil {
		return nil, nil, nil, err
	}
	app, err := s.o.Store.GetBlinkApp(ctx, link.AppID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, jobs.Permanent(errorf("app of link %s no longer exists", link.ID))
	}
	if err != nil {
		return nil, nil, nil, err
	}
	u, err := s.o.Store.GetUser(ctx, link.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil, nil, jobs.Permanent(errorf("user record of link %s no longer exists", link.ID))
	}
	if err != nil {
		return nil, nil, nil, err
	}
	return link, app, u, nil
}

// call sends one request to the app's Blink API. Network errors and a
// missing API token are retryable; the token is read from the
// environment at each call, never stored or logged.
func (s *Surface) call(ctx context.Context, app *store.BlinkApp, op, method, path string, body any, idempotencyKey string) (int, []byte, error) {
	token := s.o.Getenv(app.APITokenEnv)
	if token == "" {
		s.metrics.api.WithLabelValues(app.Name, op, "misconfigured").Inc()
		return 0, nil, errorf("app %s: the API token variable %s is not set", app.Name, app.APITokenEnv)
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, jobs.Permanent(errorf("encode body: %w", err))
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(app.APIURL, "/")+path, rd)
	if err != nil {
		return 0, nil, jobs.Permanent(errorf("app %s: bad API URL: %w", app.Name, err))
	}
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if idempotencyKey != "" {
		req.Header.Set("Idempotency-Key", idempotencyKey)
	}
	resp, err := s.o.HTTP.Do(req)
	if err != nil {
		s.metrics.api.WithLabelValues(app.Name, op, "unreachable").Inc()
		return 0, nil, errorf("app %s: %s: Blink unreachable: %w", app.Name, op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxBlinkBody))
	if err != nil {
		s.metrics.api.WithLabelValues(app.Name, op, "unreachable").Inc()
		return 0, nil, errorf("app %s: %s: reading Blink's answer: %w", app.Name, op, err)
	}
	s.metrics.api.WithLabelValues(app.Name, op, strconv.Itoa(resp.StatusCode/100)+"xx").Inc()
	return resp.StatusCode, data, nil
}

// classify turns Blink's status into the job outcome: 2xx done; 408, 425,
// 429 and 5xx retried; other 4xx permanent (a 404 on delete is done: the
// account is gone already).
func classify(status int, deleting bool) error {
	switch {
	case status >= 200 && status < 300:
		return nil
	case deleting && (status == http.StatusNotFound || status == http.StatusGone):
		return nil
	case status == http.StatusRequestTimeout, status == http.StatusTooEarly, status == http.StatusTooManyRequests, status >= 500:
		return errorf("Blink answered %d; will retry", status)
	default:
		return jobs.Permanent(errorf("Blink refused the call with %d", status))
	}
}

// linkedAccountID finds Blink's id in its answer: data.id,
// data.linked_account_id, id or linked_account_id (string or number).
func linkedAccountID(body []byte) string {
	var m map[string]any
	if json.Unmarshal(body, &m) != nil {
		return ""
	}
	pick := func(o map[string]any) string {
		for _, k := range []string{"id", "linked_account_id"} {
			switch v := o[k].(type) {
			case string:
				if idRe.MatchString(v) {
					return v
				}
			case float64:
				return strconv.FormatFloat(v, 'f', -1, 64)
			}
		}
		return ""
	}
	if d, ok := m["data"].(map[string]any); ok {
		if id := pick(d); id != "" {
			return id
		}
	}
	return pick(m)
}

func pathOr(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func expand(tmpl, userID, linkedID string) string {
	return strings.NewReplacer("{user_id}", url.PathEscape(userID), "{linked_account_id}", url.PathEscape(linkedID)).Replace(tmpl)
}

// Sync pushes every change Blink has not heard of: pending links whose
// Add is not queued (a failed enqueue), and linked links whose user
// record's version or reauth state moved since the last push (for apps
// that do not share tokens only reauth changes matter). It is what a
// refresh hook would do per user, done as a sweep; run it periodically
// (RunSync) until the hook exists. Returns how many pushes it queued.
func (s *Surface) Sync(ctx context.Context) (int, error) {
	apps, err := s.o.Store.ListBlinkApps(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	for i := range apps {
		app := &apps[i]
		after := ""
		for {
			links, err := s.o.Store.ListBlinkLinks(ctx, store.BlinkLinkQuery{AppID: app.ID, AfterID: after, Limit: 500})
			if err != nil {
				return n, err
			}
			for k := range links {
				l := &links[k]
				after = l.ID
				queued, err := s.syncLink(ctx, app, l)
				if err != nil {
					return n, err
				}
				if queued {
					n++
				}
			}
			if len(links) < 500 {
				break
			}
		}
	}
	return n, nil
}

// UserChanged is the per-user form of Sync, for a hook called when a
// user record's credentials or status change (after a refresh, after
// needs_reauth). Records of other host kinds are ignored cheaply.
func (s *Surface) UserChanged(ctx context.Context, u *store.User) error {
	if u == nil || u.Host.Kind != HostKind {
		return nil
	}
	app, err := s.o.Store.GetBlinkApp(ctx, u.Host.AccountID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	links, err := s.o.Store.ListBlinkLinks(ctx, store.BlinkLinkQuery{AppID: app.ID, UserID: u.ID})
	if err != nil {
		return err
	}
	for k := range links {
		if _, err := s.syncLink(ctx, app, &links[k]); err != nil {
			return err
		}
	}
	return nil
}

func (s *Surface) syncLink(ctx context.Context, app *store.BlinkApp, l *store.BlinkLink) (bool, error) {
	if l.State == store.BlinkLinkDeleting {
		// Re-queue is idempotent: same key as the original job.
		return false, s.enqueueDelete(ctx, l)
	}
	u, err := s.o.Store.GetUser(ctx, l.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if l.State == store.BlinkLinkLinked {
		reauthMoved := l.PushedReauth != requiresReauth(u)
		tokenMoved := app.ShareTokens && l.PushedVersion != u.Version
		if !reauthMoved && !tokenMoved {
			return false, nil
		}
	}
	if err := s.enqueuePush(ctx, l, u); err != nil {
		return false, err
	}
	return true, nil
}

// RunSync runs Sync now and then every interval until ctx ends; errors
// are logged and retried at the next tick. Every replica may run it: the
// jobs it queues are idempotent.
func (s *Surface) RunSync(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = time.Minute
	}
	for {
		if n, err := s.Sync(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("blink sync failed", "error", err)
		} else if n > 0 {
			s.log.Debug("blink sync queued pushes", "count", n)
		}
		t := time.NewTimer(every)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}
