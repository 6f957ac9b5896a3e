package config

import (
	"strings"
	"testing"
	"time"
)

func TestRetention(t *testing.T) {
	if got := Default().Server.Retention; got != 30*24*time.Hour {
		t.Errorf("default retention = %v, want 30 days", got)
	}
	for _, tc := range []struct {
		yaml string
		want time.Duration
		err  string // a part of the error; "" for none
	}{
		{"server:\n  lease: 30s\n", DefaultRetention, ""},
		{"server:\n  retention: 30d\n", 30 * 24 * time.Hour, ""},
		{"server:\n  retention: 36h\n", 36 * time.Hour, ""},
		{"server:\n  retention: 1h\n", time.Hour, ""},
		// Keeping tasks forever is an explicit choice.
		{"server:\n  retention: off\n", 0, ""},
		{"server:\n  retention: 0\n", 0, ""},
		{"server:\n  retention: \"\"\n", 0, "server.retention"},
		{"server:\n  retention: 30\n", 0, `"30": expected a duration of at least 1h`},
		{"server:\n  retention: 59m\n", 0, "at least 1h"},
		{"server:\n  retention: -24h\n", 0, "at least 1h"},
		{"server:\n  retention: -1d\n", 0, "at least 1h"},
		{"server:\n  retention: 1.5d\n", 0, "such as 30d or 720h"},
		{"server:\n  retention: forever\n", 0, "or off to keep finished tasks forever"},
	} {
		cfg, err := Parse("taskd.yaml", []byte(tc.yaml))
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%q: %v", tc.yaml, err)
		case tc.err == "" && cfg.Server.Retention != tc.want:
			t.Errorf("%q: retention %v, want %v", tc.yaml, cfg.Server.Retention, tc.want)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%q: error %v, want one containing %q", tc.yaml, err, tc.err)
		case tc.err != "" && !strings.Contains(err.Error(), "taskd.yaml:2"):
			t.Errorf("%q: error %v does not say where", tc.yaml, err)
		}
	}
}
