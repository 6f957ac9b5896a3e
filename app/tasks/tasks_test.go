package tasks_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/allowancehq/allowance/app/tasks"
	"pgregory.net/rapid"
)

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := tasks.NewID()
		if len(id) != 28 || !tasks.ValidID(id) {
			t.Fatalf("NewID() = %q: want \"t_\" and 26 base32 characters", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func TestValidID(t *testing.T) {
	for _, s := range []string{"", "t_", "x_aaaaaaaaaaaaaaaaaaaaaaaaaa", "t_aaaaaaaaaaaaaaaaaaaaaaaaa", "t_aaaaaaaaaaaaaaaaaaaaaaaaaaa",
		"t_AAAAAAAAAAAAAAAAAAAAAAAAAA", "t_aaaaaaaaaaaaaaaaaaaaaaaaa1", "t_aaaaaaaaaaaaaaaaaaaaaaaaab"} {
		if tasks.ValidID(s) {
			t.Errorf("ValidID(%q) = true", s)
		}
	}
}

func TestPageLimit(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(-1000, 1000).Draw(t, "limit")
		got := tasks.ListOptions{Limit: n}.PageLimit()
		switch {
		case n <= 0 && got != tasks.DefaultListLimit,
			n > tasks.MaxListLimit && got != tasks.MaxListLimit,
			n > 0 && n <= tasks.MaxListLimit && got != n:
			t.Fatalf("PageLimit(%d) = %d", n, got)
		}
	})
}

func TestStatus(t *testing.T) {
	for _, tc := range []struct {
		s             tasks.Status
		active, final bool
	}{
		{tasks.StatusQueued, true, false},
		{tasks.StatusRunning, true, false},
		{tasks.StatusSucceeded, false, true},
		{tasks.StatusFailed, false, true},
		{tasks.StatusCanceled, false, true},
		{tasks.StatusStuck, false, true},
		{"done", false, false},
	} {
		if tc.s.Active() != tc.active || tc.s.Final() != tc.final {
			t.Errorf("%q: Active %v Final %v, want %v %v", tc.s, tc.s.Active(), tc.s.Final(), tc.active, tc.final)
		}
		got, err := tasks.ParseStatus(string(tc.s))
		if (err == nil) != (tc.active || tc.final) || (err == nil && got != tc.s) {
			t.Errorf("ParseStatus(%q) = %q, %v", tc.s, got, err)
		}
	}
}

func TestActiveTaskError(t *testing.T) {
	err := fmt.Errorf("create: %w", &tasks.ActiveTaskError{ActiveID: "t_x"})
	var ae *tasks.ActiveTaskError
	if !errors.Is(err, tasks.ErrActiveTask) || !errors.As(err, &ae) || ae.ActiveID != "t_x" {
		t.Errorf("wrapped ActiveTaskError: Is %v, As %v", errors.Is(err, tasks.ErrActiveTask), errors.As(err, &ae))
	}
	if errors.Is(err, tasks.ErrNotFound) {
		t.Error("ActiveTaskError is ErrNotFound")
	}
}
