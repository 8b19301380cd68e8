package config

import (
	"strings"
	"testing"
	"time"
)

func TestRetentionSettings(t *testing.T) {
	c, err := FromMap(map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	if c.JanitorInterval != 5*time.Minute || c.JobRetention != 7*24*time.Hour || c.AuditRetention != 400*24*time.Hour {
		t.Fatalf("defaults: %v %v %v", c.JanitorInterval, c.JobRetention, c.AuditRetention)
	}
	c, err = FromMap(map[string]string{"CONNECTD_JANITOR_INTERVAL": "30s", "CONNECTD_JOB_RETENTION": "48h", "CONNECTD_AUDIT_RETENTION": "720h"})
	if err != nil || c.JanitorInterval != 30*time.Second || c.JobRetention != 48*time.Hour || c.AuditRetention != 720*time.Hour {
		t.Fatalf("set: %+v %v", c, err)
	}
	for _, tc := range []struct{ env, val string }{
		{"CONNECTD_JANITOR_INTERVAL", "1s"},
		{"CONNECTD_JOB_RETENTION", "10m"},
		{"CONNECTD_AUDIT_RETENTION", "a week"},
		{"CONNECTD_AUDIT_RETENTION", "-24h"},
	} {
		t.Run(tc.env+"="+tc.val, func(t *testing.T) {
			_, err := FromMap(map[string]string{tc.env: tc.val})
			if err == nil || !strings.HasPrefix(err.Error(), tc.env+": ") {
				t.Fatalf("err = %v", err)
			}
		})
	}
}
