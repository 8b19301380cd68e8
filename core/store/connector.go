package store

import "github.com/connectd/connectd/core/connector"

// ConnectorUser is how connectors see a stored login: the one conversion
// every engine service and surface uses (secrets as connector.Secret, which
// never prints itself).
func (u *User) ConnectorUser() connector.User {
	cu := connector.User{
		ID:             u.ID,
		AppConnectID:   u.AppConnectID,
		Platform:       u.Platform,
		CRMUserID:      u.CRMUserID,
		Hostname:       u.Hostname,
		Name:           u.DisplayName,
		TimezoneName:   u.TimezoneName,
		TimezoneOffset: u.TimezoneOffset,
		AccessToken:    connector.Secret(u.AccessToken),
		RefreshToken:   connector.Secret(u.RefreshToken),
		APIKey:         connector.Secret(u.APIKey),
		AdditionalInfo: u.AdditionalInfo,
		HostKind:       u.Host.Kind,
		HostAccountID:  u.Host.AccountID,
		HostUserID:     u.Host.UserID,
	}
	if u.TokenExpiry != nil {
		cu.TokenExpiry = *u.TokenExpiry
	}
	if len(u.Secrets) > 0 {
		cu.Secrets = make(map[string]connector.Secret, len(u.Secrets))
		for k, v := range u.Secrets {
			cu.Secrets[k] = connector.Secret(v)
		}
	}
	return cu
}
