package refresh

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/jobs"
	"github.com/connectd/connectd/core/store"
)

// JobKindRevoke is the job kind of durable upstream revocations.
const JobKindRevoke = "upstream_revoke"

// revokeJobLifetime is how long a revocation is retried before the job
// gives up.
const revokeJobLifetime = 72 * time.Hour

// revokePayload is what a revocation job needs: the tokens to revoke and
// enough of the record to resolve the connector and OAuth app. The store
// seals job payloads.
type revokePayload struct {
	UserID         string             `json:"userId"`
	Version        int64              `json:"version"`
	Platform       string             `json:"platform"`
	OAuthAppRef    string             `json:"oauthAppRef,omitempty"`
	Hostname       string             `json:"hostname,omitempty"`
	AppConnectID   string             `json:"appConnectId,omitempty"`
	CRMUserID      string             `json:"crmUserId,omitempty"`
	Host           store.HostIdentity `json:"host"`
	AccessToken    string             `json:"accessToken,omitempty"`
	RefreshToken   string             `json:"refreshToken,omitempty"`
	APIKey         string             `json:"apiKey,omitempty"`
	AdditionalInfo map[string]any     `json:"additionalInfo,omitempty"`
}

// EnqueueRevoke schedules upstream revocation of u's credentials as a
// durable job (kind "upstream_revoke"), idempotent per (user id, version):
// enqueueing the same record twice is one job. Pass the record as it was
// before RevokeUser cleared it. A record holding no credential is a no-op.
func (s *Service) EnqueueRevoke(ctx context.Context, u *store.User) error {
	return s.enqueueRevoke(ctx, u, "")
}

func (s *Service) enqueueRevoke(ctx context.Context, u *store.User, keySuffix string) error {
	if u == nil || (u.AccessToken == "" && u.RefreshToken == "" && u.APIKey == "") {
		return nil
	}
	payload, err := json.Marshal(revokePayload{
		UserID: u.ID, Version: u.Version, Platform: u.Platform, OAuthAppRef: u.OAuthAppRef,
		Hostname: u.Hostname, AppConnectID: u.AppConnectID, CRMUserID: u.CRMUserID, Host: u.Host,
		AccessToken: u.AccessToken, RefreshToken: u.RefreshToken, APIKey: u.APIKey,
		AdditionalInfo: u.AdditionalInfo,
	})
	if err != nil {
		return fmt.Errorf("refresh: encode revocation: %w", err)
	}
	now := s.clock.Now()
	_, _, err = s.jobs.EnqueueJob(ctx, &store.Job{
		Kind:           JobKindRevoke,
		IdempotencyKey: u.ID + "/" + strconv.FormatInt(u.Version, 10) + keySuffix,
		Payload:        payload,
		NextAttemptAt:  now,
		ExpiresAt:      now.Add(revokeJobLifetime),
	})
	if err != nil {
		return storeFailure("enqueue revocation", err)
	}
	return nil
}

// HandleRevokeJob is the jobs handler of "upstream_revoke": it calls the
// connector's Unauthorizer with a connector.User holding the tokens to
// revoke (their client injects them; nothing is refreshed). An error is
// retried by the jobs runner; connectors without Unauthorizer, unreadable
// payloads and a connector reporting failure are jobs.Permanent.
func (s *Service) HandleRevokeJob(ctx context.Context, j *store.Job) ([]byte, error) {
	var p revokePayload
	if err := json.Unmarshal(j.Payload, &p); err != nil {
		return nil, jobs.Permanent(fmt.Errorf("refresh: revocation payload: %w", err))
	}
	conn, _, err := s.conns.Connector(p.Platform)
	if err != nil {
		return nil, fmt.Errorf("refresh: revocation for %s: %w", p.Platform, err)
	}
	un, ok := conn.(connector.Unauthorizer)
	if !ok {
		return nil, jobs.Permanent(fmt.Errorf("refresh: connector %s cannot revoke upstream (no Unauthorizer)", p.Platform))
	}
	u := &store.User{
		ID: p.UserID, Version: p.Version, Platform: p.Platform, OAuthAppRef: p.OAuthAppRef,
		Hostname: p.Hostname, AppConnectID: p.AppConnectID, CRMUserID: p.CRMUserID, Host: p.Host,
		AccessToken: p.AccessToken, RefreshToken: p.RefreshToken, APIKey: p.APIKey,
		AdditionalInfo: p.AdditionalInfo,
	}
	var app connector.OAuthInfo
	if _, isOAuth := conn.(connector.OAuthConnector); isOAuth && (p.AccessToken != "" || p.RefreshToken != "") {
		if app, err = s.apps.AppFor(ctx, u); err != nil {
			return nil, fmt.Errorf("refresh: revocation app: %w", err)
		}
	}
	value, _, err := headerFor(ctx, conn, u)
	if err != nil {
		value = "" // only a refresh token to revoke: the connector authenticates as the client
	}
	res, err := un.Unauthorize(ctx, connector.UserRequest{
		HTTPClient: s.authClient(staticCredential{value: value}),
		User:       u.ConnectorUser(),
		OAuth:      app,
	})
	if err != nil {
		s.log.Warn("upstream revocation failed; will retry", "user_id", p.UserID, "platform", p.Platform, "error", err)
		return nil, fmt.Errorf("refresh: unauthorize: %w", err)
	}
	if !res.Successful {
		return nil, jobs.Permanent(errors.New("refresh: the connector reported the revocation as unsuccessful"))
	}
	s.log.Info("upstream credentials revoked", "user_id", p.UserID, "platform", p.Platform)
	return []byte(`{"revoked":true}`), nil
}
