package manifest

import (
	"net/url"
	"strconv"
	"strings"

	"github.com/connectd/connectd/core/connector"
)

// checkPlatform adds the problems a JSON Schema cannot express. p was
// decoded leniently, so a value the schema rejected may be zero here; the
// checks only look at values that are present.
func checkPlatform(p *Platform, ps *problems) {
	at := func(segs ...string) string { return jsonPath(append([]string{"platforms", p.Key}, segs...)...) }

	if p.Name != "" && p.Name != p.Key {
		ps.add(at("name"), "must equal the platform's key %q (found %q)", p.Key, p.Name)
	}
	kind := p.Kind()
	if kind == KindCRM && p.Auth == nil {
		ps.add(at("auth"), "is required for a CRM platform (only connectd.kind \"plugin\" may omit it)")
	}
	if a := p.Auth; a != nil {
		switch a.Type {
		case connector.AuthOAuth:
			if a.OAuth == nil || a.OAuth.AuthURL == "" {
				ps.add(at("auth", "oauth", "authUrl"), "is required when auth.type is \"oauth\" (the client opens it; it may be connectd's /oauth/authorize)")
			}
		case connector.AuthAPIKey:
			if a.APIKey == nil {
				ps.add(at("auth", "apiKey"), "is required when auth.type is \"apiKey\" (the client renders its page)")
			}
		}
		if a.OAuth != nil && a.OAuth.RedirectURI != "" {
			checkRedirectURI(a.OAuth.RedirectURI, at("auth", "oauth", "redirectUri"), ps)
		}
		if a.APIKey != nil {
			seen := map[string]int{}
			for i, f := range a.APIKey.Page.Content {
				if f.Const == "" {
					continue
				}
				if j, dup := seen[f.Const]; dup {
					ps.add(at("auth", "apiKey", "page", "content", itoa(i), "const"), "duplicate const %q (also at content[%d])", f.Const, j)
					continue
				}
				seen[f.Const] = i
			}
		}
	}

	c := p.Connectd
	for i, h := range c.Hosts {
		if msg := checkHostPattern(h); msg != "" {
			ps.add(at("connectd", "hosts", itoa(i)), "%s", msg)
		}
	}
	for i, u := range c.RedirectURIs {
		checkRedirectURI(u, at("connectd", "redirectUris", itoa(i)), ps)
	}
	for k, fs := range c.Fields {
		f, ok := p.Field(k)
		switch {
		case !ok:
			ps.add(at("connectd", "fields", k), "names no field of auth.apiKey.page.content")
		case !f.Managed:
			ps.add(at("connectd", "fields", k), "only managed fields have stored values; set \"managed\": true on the field or remove this entry")
		case k == APIKeyConst && fs.Secret != nil && !*fs.Secret:
			ps.add(at("connectd", "fields", k, "secret"), "the apiKey field is always secret")
		}
	}
	if c.OAuth != nil && c.OAuth.PKCE != nil && p.AuthType() != connector.AuthOAuth {
		ps.add(at("connectd", "oauth", "pkce"), "applies only to auth.type \"oauth\"")
	}
	if d := c.Declarative; d != nil {
		checkDeclarative(p, d, at, ps)
	}

	// App Connect plugin protocol (contract B): App Connect calls
	// tokenSyncUrl before every asynchronous call.
	if p.EndpointURL != "" && p.IsAsync && p.TokenSyncURL == "" {
		ps.add(at("tokenSyncUrl"), "is required when isAsync is true (App Connect calls it before every asynchronous call)")
	}
}

func checkDeclarative(p *Platform, d *Declarative, at func(...string) string, ps *problems) {
	if p.Kind() == KindPlugin {
		ps.add(at("connectd", "declarative"), "a plugin cannot be declarative: plugins process content in Go")
	}
	switch {
	case d.OAuth != nil && d.APIKey != nil:
		ps.add(at("connectd", "declarative"), "set exactly one of \"oauth\" and \"apiKey\", not both")
	case d.OAuth == nil && d.APIKey == nil:
		ps.add(at("connectd", "declarative"), "set exactly one of \"oauth\" and \"apiKey\"")
	case p.AuthType() != connector.AuthOAuth && p.AuthType() != connector.AuthAPIKey && p.Auth != nil:
		// auth.type itself is wrong; the schema said so.
	case d.OAuth != nil && p.AuthType() != connector.AuthOAuth:
		ps.add(at("connectd", "declarative", "oauth"), "needs auth.type \"oauth\" (found %q)", p.AuthType())
	case d.APIKey != nil && p.AuthType() != connector.AuthAPIKey:
		ps.add(at("connectd", "declarative", "apiKey"), "needs auth.type \"apiKey\" (found %q)", p.AuthType())
	}
	if o := d.OAuth; o != nil {
		checkEnvName(o.ClientIDEnv, at("connectd", "declarative", "oauth", "clientIdEnv"), ps)
		checkEnvName(o.ClientSecretEnv, at("connectd", "declarative", "oauth", "clientSecretEnv"), ps)
		if o.ClientIDEnv != "" && o.ClientIDEnv == o.ClientSecretEnv {
			ps.add(at("connectd", "declarative", "oauth", "clientSecretEnv"), "must differ from clientIdEnv")
		}
		checkTemplateURL(p, o.AuthorizationURL, at("connectd", "declarative", "oauth", "authorizationUrl"), ps)
		checkTemplateURL(p, o.TokenURL, at("connectd", "declarative", "oauth", "tokenUrl"), ps)
		if o.RevocationURL != "" {
			checkTemplateURL(p, o.RevocationURL, at("connectd", "declarative", "oauth", "revocationUrl"), ps)
		}
		if o.PKCE != nil && p.Connectd.OAuth != nil && p.Connectd.OAuth.PKCE != nil && *o.PKCE != *p.Connectd.OAuth.PKCE {
			ps.add(at("connectd", "declarative", "oauth", "pkce"), "disagrees with connectd.oauth.pkce; set one of them")
		}
	}
	if a := d.APIKey; a != nil && a.Scheme == "Basic" && a.HeaderName() != "Authorization" {
		ps.add(at("connectd", "declarative", "apiKey", "scheme"), "\"Basic\" is sent in the Authorization header only")
	}
	checkTemplateURL(p, d.UserInfo.URL, at("connectd", "declarative", "userInfo", "url"), ps)
	for name, v := range map[string]string{"idPath": d.UserInfo.IDPath, "namePath": d.UserInfo.NamePath, "timezonePath": d.UserInfo.TimezonePath} {
		if v == "" {
			continue
		}
		for seg := range strings.SplitSeq(v, ".") {
			if seg == "" {
				ps.add(at("connectd", "declarative", "userInfo", name), "%q is not a dot path (empty segment)", v)
				break
			}
		}
	}
}

// checkEnvName rejects environment variable names that would let a
// manifest read connectd's own settings (keys, database URL).
func checkEnvName(name, path string, ps *problems) {
	if strings.HasPrefix(strings.ToUpper(name), "CONNECTD_") {
		ps.add(path, "%q: names starting with CONNECTD_ are reserved for connectd's own settings", name)
	}
}

// checkTemplateURL checks an absolute http(s) URL that may contain
// {{hostname}}; with the placeholder, connectd.hosts must say which hosts
// it may take.
func checkTemplateURL(p *Platform, raw, path string, ps *problems) {
	if raw == "" {
		return
	}
	s := raw
	if hasHostTemplate(s) {
		if len(p.Connectd.Hosts) == 0 {
			ps.add(path, "uses {{hostname}} but connectd.hosts is empty (say which hosts it may take)")
		}
		s = strings.ReplaceAll(s, hostnamePlaceholder, "host.example")
	}
	if strings.Contains(s, "{{") || strings.Contains(s, "}}") {
		ps.add(path, "%q: the only placeholder is {{hostname}}", raw)
		return
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Fragment != "" {
		ps.add(path, "%q is not an absolute http(s) URL without user info or fragment", raw)
	}
}

func checkRedirectURI(raw, path string, ps *problems) {
	u, err := url.Parse(raw)
	if err != nil || !u.IsAbs() || u.Host == "" || u.Fragment != "" || u.User != nil {
		ps.add(path, "%q is not an absolute URL without user info or fragment", raw)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
