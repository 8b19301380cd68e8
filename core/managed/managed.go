// Package managed owns admin-managed credentials: API-key field values an
// admin of a host account sets for the whole account or for one of its
// users, OAuth apps an admin submits for the account (pending until a
// successful login of that account promotes them in place), the
// managed-login failure marks that make the client fall back to the manual
// form, and the audit log of every admin change (field names, never
// values).
//
// It implements the engine's auth.ManagedFields (Fields) and auth.OAuthApps
// (Apps, which also resolves the issuing app of a stored login for
// core/refresh, so refreshes keep using the managed app - App Connect
// forgets it). Reads never return a stored secret: views say
// {hasValue: true} instead, unless the manifest marks a field non-secret.
package managed

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/hashicorp/go-hclog"

	"github.com/connectd/connectd/core/auth"
	"github.com/connectd/connectd/core/clock"
	"github.com/connectd/connectd/core/connector"
	"github.com/connectd/connectd/core/failure"
	"github.com/connectd/connectd/core/manifest"
	"github.com/connectd/connectd/core/registry"
	"github.com/connectd/connectd/core/store"
)

// Limits on admin-submitted values.
const (
	MaxValueLen    = 4096
	MaxFieldsPerOp = 64
	MaxNameLen     = 256
	MaxScopes      = 64
)

// DefaultPendingTTL is how long an unpromoted OAuth app submission is used
// for logins of its account.
const DefaultPendingTTL = 7 * 24 * time.Hour

// Audit actions.
const (
	ActionValuesChanged  = "managed_values.changed"
	ActionPendingSet     = "oauth_app.pending_set"
	ActionPendingDeleted = "oauth_app.pending_deleted"
	ActionAccountDeleted = "oauth_app.account_deleted"
	ActionPromoted       = "oauth_app.promoted"
)

// AppResolver says which OAuth app issued a stored login (core/refresh's
// interface of the same name).
type AppResolver interface {
	AppFor(ctx context.Context, u *store.User) (connector.OAuthInfo, error)
}

// Options configures a Service.
type Options struct {
	// Store holds the managed rows. Required.
	Store store.Managed
	// Registry finds platforms (manifests) and connectors. Required.
	Registry *registry.Registry
	// Fallback answers logins of accounts without a managed app
	// (default auth.ConnectorApps{Registry}).
	Fallback auth.OAuthApps
	// ConnectorApps resolves stored logins issued by the connector's own
	// app (OAuthAppRef ""); default asks the connector's OAuthInfo. Pass
	// core/refresh's ConnectorApps to share its checks.
	ConnectorApps AppResolver
	// HTTP is handed to connectors asked for dynamic field options (the
	// outbound client with the SSRF guard). Default http.DefaultClient is
	// only for tests: always pass the outbound client.
	HTTP *http.Client
	// AllowPrivate lets admin-submitted URLs name loopback/private hosts
	// and use http (CONNECTD_ALLOW_PRIVATE_URLS).
	AllowPrivate bool
	// PendingTTL bounds a pending OAuth app (default DefaultPendingTTL).
	PendingTTL time.Duration
	Clock      clock.Clock
	Logger     hclog.Logger
}

// Service is the managed-credentials service. Safe for concurrent use.
type Service struct {
	o Options
}

// New returns a Service.
func New(o Options) (*Service, error) {
	if o.Store == nil || o.Registry == nil {
		return nil, errors.New("managed: Store and Registry are required")
	}
	if o.Fallback == nil {
		o.Fallback = auth.ConnectorApps{Registry: o.Registry}
	}
	if o.HTTP == nil {
		o.HTTP = http.DefaultClient
	}
	if o.PendingTTL <= 0 {
		o.PendingTTL = DefaultPendingTTL
	}
	if o.Clock == nil {
		o.Clock = clock.Real{}
	}
	if o.Logger == nil {
		o.Logger = hclog.NewNullLogger()
	}
	return &Service{o: o}, nil
}

// Actor is the verified caller of an admin operation.
type Actor struct {
	Host      store.HostIdentity
	Admin     bool
	RequestID string
}

func (a Actor) check() error {
	if a.Host.Kind == "" || a.Host.AccountID == "" {
		return failure.Newf(failure.Unauthenticated, "A host identity is required.")
	}
	if !a.Admin {
		return failure.Newf(failure.Forbidden, "Only an administrator of the account can manage its credentials.")
	}
	return nil
}

// platform returns the manifest of name (also for connectors that are
// configured without their own OAuth client: managed apps may be all they
// use).
func (s *Service) platform(name string) (*manifest.Platform, error) {
	if name == "" {
		return nil, failure.Newf(failure.InvalidRequest, "platform is required.")
	}
	ent, err := s.o.Registry.Get(name)
	if ent.Platform == nil {
		if err == nil {
			err = failure.Newf(failure.NotFound, "Platform not found.")
		}
		return nil, err
	}
	return ent.Platform, nil
}

// managedFields returns the managed fields of p, in manifest order.
func managedFields(p *manifest.Platform) []manifest.Field {
	var out []manifest.Field
	for _, f := range p.APIKeyFields() {
		if f.Managed {
			out = append(out, f)
		}
	}
	return out
}

func scopeOf(f manifest.Field) string {
	if f.ManagedScope == manifest.ScopeUser {
		return store.ManagedScopeUser
	}
	return store.ManagedScopeAccount
}

// --- API-key field resolution (auth.ManagedFields) ---

// Fields implements auth.ManagedFields on a Service.
type Fields struct{ s *Service }

// Fields returns the engine's view of managed API-key fields.
func (s *Service) Fields() *Fields { return &Fields{s: s} }

var _ auth.ManagedFields = (*Fields)(nil)

// Resolve implements auth.ManagedFields: for each managed field the stored
// value (user scope from the user's row, account scope from the
// account's) wins over a submitted one, unless (account, user) is in
// fallback after a failed managed login, when a submitted value wins;
// required fields still empty are returned as missing, in manifest order.
func (f *Fields) Resolve(ctx context.Context, p *manifest.Platform, host *store.HostIdentity, submitted map[string]string) (map[string]string, []string, error) {
	values := make(map[string]string, len(submitted)+4)
	for k, v := range submitted {
		values[k] = v
	}
	mf := managedFields(p)
	if host != nil && host.Kind != "" && host.AccountID != "" && len(mf) > 0 {
		stored, err := f.s.o.Store.ManagedValuesFor(ctx, host.Kind, host.AccountID, p.Key, host.UserID)
		if err != nil {
			return nil, nil, storeFailure(err)
		}
		fallback, err := f.s.o.Store.HasManagedLoginFailure(ctx, *host, p.Key)
		if err != nil {
			return nil, nil, storeFailure(err)
		}
		acct, user := split(stored)
		for _, fd := range mf {
			v := acct[fd.Const]
			if scopeOf(fd) == store.ManagedScopeUser {
				v = user[fd.Const]
			}
			if v == "" {
				continue
			}
			if fallback && strings.TrimSpace(submitted[fd.Const]) != "" {
				continue
			}
			values[fd.Const] = v
		}
	}
	var missing []string
	for _, fd := range p.APIKeyFields() {
		if fd.Required && strings.TrimSpace(values[fd.Const]) == "" {
			missing = append(missing, fd.Const)
		}
	}
	return values, missing, nil
}

// LoginFailed implements auth.ManagedFields (only platforms with managed
// fields are marked).
func (f *Fields) LoginFailed(ctx context.Context, platform string, host store.HostIdentity) error {
	p, err := f.s.platform(platform)
	if err != nil || len(managedFields(p)) == 0 {
		return err
	}
	if err := f.s.o.Store.MarkManagedLoginFailure(ctx, host, platform); err != nil {
		return storeFailure(err)
	}
	return nil
}

// LoginSucceeded implements auth.ManagedFields.
func (f *Fields) LoginSucceeded(ctx context.Context, platform string, host store.HostIdentity) error {
	if err := f.s.o.Store.ClearManagedLoginFailure(ctx, host, platform); err != nil {
		return storeFailure(err)
	}
	return nil
}

func split(vals []store.ManagedValue) (acct, user map[string]string) {
	acct, user = map[string]string{}, map[string]string{}
	for _, v := range vals {
		if v.Key.Scope == store.ManagedScopeUser {
			user[v.Field] = v.Value
		} else {
			acct[v.Field] = v.Value
		}
	}
	return acct, user
}

// APIKeyState is GET /apiKeyManagedAuthState's answer.
type APIKeyState struct {
	HasManagedAuth             bool     `json:"hasManagedAuth"`
	AllRequiredFieldsSatisfied bool     `json:"allRequiredFieldsSatisfied"`
	VisibleFieldConsts         []string `json:"visibleFieldConsts"` // null: show the full form
	MissingRequiredFieldConsts []string `json:"missingRequiredFieldConsts"`
	FallbackToManualAuth       bool     `json:"fallbackToManualAuth"`
}

// APIKeyState tells the client which form to show host's user: whether
// managed values exist, which fields the user still sees, which required
// managed fields no admin has set, and whether a failed managed login put
// (account, user) in fallback.
func (s *Service) APIKeyState(ctx context.Context, platform string, host store.HostIdentity) (*APIKeyState, error) {
	p, err := s.platform(platform)
	if err != nil {
		return nil, err
	}
	st := &APIKeyState{MissingRequiredFieldConsts: []string{}}
	mf := managedFields(p)
	if len(mf) == 0 {
		return st, nil
	}
	stored, err := s.o.Store.ManagedValuesFor(ctx, host.Kind, host.AccountID, platform, host.UserID)
	if err != nil {
		return nil, storeFailure(err)
	}
	if st.FallbackToManualAuth, err = s.o.Store.HasManagedLoginFailure(ctx, host, platform); err != nil {
		return nil, storeFailure(err)
	}
	acct, user := split(stored)
	has := func(fd manifest.Field) bool {
		if !fd.Managed {
			return false
		}
		if scopeOf(fd) == store.ManagedScopeUser {
			return user[fd.Const] != ""
		}
		return acct[fd.Const] != ""
	}
	st.AllRequiredFieldsSatisfied = true
	var visible []string
	for _, fd := range p.APIKeyFields() {
		if has(fd) {
			st.HasManagedAuth = true
			continue
		}
		if fd.Required {
			st.AllRequiredFieldsSatisfied = false
			if fd.Managed {
				st.MissingRequiredFieldConsts = append(st.MissingRequiredFieldConsts, fd.Const)
			}
		}
		if !fd.Hidden {
			visible = append(visible, fd.Const)
		}
	}
	if st.HasManagedAuth && !st.FallbackToManualAuth {
		if visible == nil {
			visible = []string{}
		}
		st.VisibleFieldConsts = visible
	}
	return st, nil
}

// --- Admin view and edits of managed fields ---

// FieldView describes a managed field to the admin page.
type FieldView struct {
	Const            string `json:"const"`
	Title            string `json:"title"`
	Type             string `json:"type"`
	Required         bool   `json:"required"`
	Description      string `json:"description,omitempty"`
	ManagedScope     string `json:"managedScope"`
	ManagedFieldType string `json:"managedFieldType"`
	Hidden           bool   `json:"hidden"`
	Secret           bool   `json:"secret"`
}

// ValueView is a stored value as admins see it: only whether it is set,
// plus the value itself for fields the manifest marks non-secret.
type ValueView struct {
	HasValue bool   `json:"hasValue"`
	Value    string `json:"value,omitempty"`
}

// UserValues are one host user's user-scope values.
type UserValues struct {
	RCExtensionID string               `json:"rcExtensionId"`
	RCUserName    string               `json:"rcUserName"`
	Fields        map[string]ValueView `json:"fields"`
}

// View is GET /admin/managedAuth's answer.
type View struct {
	Platform       string               `json:"platform"`
	HasManagedAuth bool                 `json:"hasManagedAuth"`
	Fields         []FieldView          `json:"fields"`
	OrgFields      []FieldView          `json:"orgFields"`
	UserFields     []FieldView          `json:"userFields"`
	OrgValues      map[string]ValueView `json:"orgValues"`
	UserValues     []UserValues         `json:"userValues"`
}

// AdminView returns the managed fields of platform and, for the actor's
// account, which are set (values only for non-secret fields).
func (s *Service) AdminView(ctx context.Context, a Actor, platform string) (*View, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	p, err := s.platform(platform)
	if err != nil {
		return nil, err
	}
	v := &View{Platform: platform, Fields: []FieldView{}, OrgFields: []FieldView{}, UserFields: []FieldView{},
		OrgValues: map[string]ValueView{}, UserValues: []UserValues{}}
	byConst := map[string]manifest.Field{}
	for _, fd := range managedFields(p) {
		byConst[fd.Const] = fd
		fv := FieldView{Const: fd.Const, Title: fd.Title, Type: fd.Type, Required: fd.Required, Description: fd.Description,
			ManagedScope: scopeOf(fd), ManagedFieldType: fd.ManagedFieldType, Hidden: fd.Hidden, Secret: fd.Secret}
		if fv.ManagedFieldType == "" {
			fv.ManagedFieldType = "input"
		}
		v.Fields = append(v.Fields, fv)
		if fv.ManagedScope == store.ManagedScopeUser {
			v.UserFields = append(v.UserFields, fv)
		} else {
			v.OrgFields = append(v.OrgFields, fv)
		}
	}
	stored, err := s.o.Store.ListManagedValues(ctx, a.Host.Kind, a.Host.AccountID, platform)
	if err != nil {
		return nil, storeFailure(err)
	}
	users := map[string]*UserValues{}
	var order []string
	for _, sv := range stored {
		fd, ok := byConst[sv.Field]
		if !ok || scopeOf(fd) != sv.Key.Scope {
			continue // the manifest no longer manages it this way
		}
		vv := ValueView{HasValue: true}
		if !fd.Secret {
			vv.Value = sv.Value
		}
		v.HasManagedAuth = true
		if sv.Key.Scope == store.ManagedScopeAccount {
			v.OrgValues[sv.Field] = vv
			continue
		}
		u, ok := users[sv.Key.UserID]
		if !ok {
			u = &UserValues{RCExtensionID: sv.Key.UserID, Fields: map[string]ValueView{}}
			users[sv.Key.UserID] = u
			order = append(order, sv.Key.UserID)
		}
		if sv.UserName != "" {
			u.RCUserName = sv.UserName
		}
		u.Fields[sv.Field] = vv
	}
	sort.Strings(order)
	for _, id := range order {
		v.UserValues = append(v.UserValues, *users[id])
	}
	return v, nil
}

// Edit is POST /admin/managedAuth's body, decoded.
type Edit struct {
	// Scope is "account" (App Connect: "org") or "user".
	Scope    string
	UserID   string // rcExtensionId, user scope
	UserName string // rcUserName, user scope
	// Values sets fields (an empty value is ignored: clear with Remove).
	Values map[string]string
	Remove []string
}

// ApplyEdit sets and clears managed values of the actor's account (or of
// one of its users) and records the change in the audit log. Every field
// must be a managed field of platform with the edit's scope; values are
// bounded and free of control characters. It returns the names of the
// fields set and cleared.
func (s *Service) ApplyEdit(ctx context.Context, a Actor, platform string, e Edit) (set, cleared []string, err error) {
	if err := a.check(); err != nil {
		return nil, nil, err
	}
	p, err := s.platform(platform)
	if err != nil {
		return nil, nil, err
	}
	scope := e.Scope
	switch scope {
	case "org", "", store.ManagedScopeAccount:
		scope = store.ManagedScopeAccount
		if e.UserID != "" {
			return nil, nil, failure.Newf(failure.InvalidRequest, "rcExtensionId is only for scope user.")
		}
	case store.ManagedScopeUser:
		if err := checkID("rcExtensionId", e.UserID); err != nil {
			return nil, nil, err
		}
		if err := checkText("rcUserName", e.UserName, MaxNameLen); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, failure.Newf(failure.InvalidRequest, "scope must be org, account or user.")
	}
	if len(e.Values)+len(e.Remove) > MaxFieldsPerOp {
		return nil, nil, failure.Newf(failure.InvalidRequest, "Too many fields in one change.")
	}
	fieldOK := func(name string) error {
		fd, ok := p.Field(name)
		if !ok || !fd.Managed {
			return failure.Newf(failure.InvalidRequest, "%s is not a managed field of %s.", truncate(name, 64), platform)
		}
		if scopeOf(fd) != scope {
			return failure.Newf(failure.InvalidRequest, "%s is managed per %s, not per %s.", fd.Const, scopeOf(fd), scope)
		}
		return nil
	}
	setVals := map[string]string{}
	for k, v := range e.Values {
		if err := fieldOK(k); err != nil {
			return nil, nil, err
		}
		if v == "" {
			continue
		}
		if err := checkText(k, v, MaxValueLen); err != nil {
			return nil, nil, err
		}
		setVals[k] = v
		set = append(set, k)
	}
	seen := map[string]bool{}
	for _, k := range e.Remove {
		if err := fieldOK(k); err != nil {
			return nil, nil, err
		}
		if _, dup := setVals[k]; dup {
			return nil, nil, failure.Newf(failure.InvalidRequest, "%s is both set and removed.", k)
		}
		if !seen[k] {
			seen[k] = true
			cleared = append(cleared, k)
		}
	}
	sort.Strings(set)
	sort.Strings(cleared)
	if len(set)+len(cleared) == 0 {
		return nil, nil, failure.Newf(failure.InvalidRequest, "Nothing to change: give values or fieldsToRemove.")
	}
	key := store.ManagedKey{HostKind: a.Host.Kind, AccountID: a.Host.AccountID, Platform: platform, Scope: scope}
	target := store.ManagedScopeAccount
	if scope == store.ManagedScopeUser {
		key.UserID = e.UserID
		target = "user:" + e.UserID
	}
	var names []string
	for _, n := range set {
		names = append(names, "set:"+n)
	}
	for _, n := range cleared {
		names = append(names, "cleared:"+n)
	}
	err = s.o.Store.ApplyManagedChange(ctx, store.ManagedChange{
		Key: key, UserName: e.UserName, Set: setVals, Clear: cleared, SetBy: a.Host.UserID,
		Audit: s.audit(a, ActionValuesChanged, platform, target, names),
	})
	if err != nil {
		return nil, nil, storeFailure(err)
	}
	return set, cleared, nil
}

// Options returns the choices of a dynamic managed field from the
// connector's managed-auth-options capability, given the account's stored
// values (server-side only; never echoed).
func (s *Service) Options(ctx context.Context, a Actor, platform, fieldConst string) ([]connector.Option, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	p, err := s.platform(platform)
	if err != nil {
		return nil, err
	}
	fd, ok := p.Field(fieldConst)
	if !ok || !fd.Managed || fd.ManagedFieldType != "dynamic" {
		return nil, failure.Newf(failure.InvalidRequest, "%s is not a dynamic managed field of %s.", truncate(fieldConst, 64), platform)
	}
	ent, err := s.o.Registry.Get(platform)
	if err != nil {
		return nil, err
	}
	op, ok := ent.Connector.(connector.ManagedAuthOptioner)
	if !ok {
		return nil, failure.Newf(failure.InvalidRequest, "%s offers no options for managed fields.", platform)
	}
	stored, err := s.o.Store.ManagedValuesFor(ctx, a.Host.Kind, a.Host.AccountID, platform, "")
	if err != nil {
		return nil, storeFailure(err)
	}
	acct, _ := split(stored)
	opts, err := op.ManagedAuthOptions(ctx, connector.ManagedAuthOptionsRequest{HTTPClient: s.o.HTTP, FieldConst: fieldConst, AccountValues: acct})
	if err != nil {
		return nil, failure.New(failure.UpstreamUnavailable, "The options could not be loaded. Please try again.", err)
	}
	if opts == nil {
		opts = []connector.Option{}
	}
	return opts, nil
}

// AuditLog returns the actor's account's audit events, newest first.
func (s *Service) AuditLog(ctx context.Context, a Actor, platform string, limit int, before *time.Time) ([]store.AuditEvent, error) {
	if err := a.check(); err != nil {
		return nil, err
	}
	evs, err := s.o.Store.ListAudit(ctx, store.AuditQuery{HostKind: a.Host.Kind, AccountID: a.Host.AccountID, Platform: platform, Limit: limit, Before: before})
	if err != nil {
		return nil, storeFailure(err)
	}
	return evs, nil
}

func (s *Service) audit(a Actor, action, platform, target string, fields []string) *store.AuditEvent {
	return &store.AuditEvent{Actor: a.Host, Action: action, Platform: platform, Target: target, Fields: fields, RequestID: a.RequestID}
}

// --- validation helpers ---

// checkText bounds an admin-submitted value: valid UTF-8, at most max
// bytes, no control characters.
func checkText(name, v string, max int) error {
	if len(v) > max {
		return failure.Newf(failure.InvalidRequest, "The value of %s is too long (at most %d bytes).", truncate(name, 64), max)
	}
	if !utf8.ValidString(v) {
		return failure.Newf(failure.InvalidRequest, "The value of %s is not valid UTF-8.", truncate(name, 64))
	}
	if strings.ContainsFunc(v, unicode.IsControl) {
		return failure.Newf(failure.InvalidRequest, "The value of %s contains control characters.", truncate(name, 64))
	}
	return nil
}

func checkID(name, v string) error {
	if v == "" {
		return failure.Newf(failure.InvalidRequest, "%s is required.", name)
	}
	if len(v) > 128 || strings.ContainsFunc(v, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '/' }) {
		return failure.Newf(failure.InvalidRequest, "%s is not a valid id.", name)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// checkRedirectURI accepts an absolute https URL (http too when private
// URLs are allowed) without user info or fragment. It is where the CRM
// sends the browser back, not something connectd calls.
func checkRedirectURI(raw string, allowPrivate bool) error {
	if err := checkText("redirectUri", raw, 2048); err != nil {
		return err
	}
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.User != nil || u.Fragment != "" {
		return failure.Newf(failure.InvalidRequest, "redirectUri must be an absolute https URL.")
	}
	if u.Scheme != "https" && !(allowPrivate && u.Scheme == "http") {
		return failure.Newf(failure.InvalidRequest, "redirectUri must use https.")
	}
	return nil
}

// storeFailure maps a storage error to an engine error.
func storeFailure(err error) error {
	var fe *failure.Error
	switch {
	case errors.As(err, &fe):
		return err
	case errors.Is(err, store.ErrNotFound):
		return failure.New(failure.NotFound, "Not found.", err)
	case errors.Is(err, store.ErrConflict):
		return failure.New(failure.Conflict, "A concurrent change conflicted. Please retry.", err)
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return failure.New(failure.Unavailable, "The service is temporarily unavailable. Please retry.", err)
	}
	return failure.New(failure.Internal, "Internal error.", fmt.Errorf("managed: %w", err))
}
