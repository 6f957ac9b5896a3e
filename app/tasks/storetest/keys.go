package storetest

import (
	"bytes"
	"errors"
	"reflect"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
)

// hash returns a 32-byte key hash made of b.
func hash(b byte) []byte { return bytes.Repeat([]byte{b}, 32) }

func (s *suite) createKey(user string, h []byte) {
	s.t.Helper()
	if err := s.s.CreateAPIKey(s.ctx, user, h); err != nil {
		s.t.Fatalf("CreateAPIKey(%s): %v", user, err)
	}
}

func (s *suite) listKeys(user string) []tasks.APIKey {
	s.t.Helper()
	ks, err := s.s.ListAPIKeys(s.ctx, user)
	if err != nil {
		s.t.Fatalf("ListAPIKeys(%q): %v", user, err)
	}
	if ks == nil {
		s.t.Errorf("ListAPIKeys(%q) = nil, want a slice", user)
	}
	return ks
}

// keyWorks reports whether UserByAPIKey finds the key of h for user, and
// fails the test on an error other than ErrNotFound.
func (s *suite) keyWorks(h []byte, user string) bool {
	s.t.Helper()
	got, err := s.s.UserByAPIKey(s.ctx, h)
	switch {
	case errors.Is(err, tasks.ErrNotFound):
		return false
	case err != nil:
		s.t.Fatalf("UserByAPIKey: %v", err)
	case got != user:
		s.t.Fatalf("UserByAPIKey = %q, want %q", got, user)
	}
	return true
}

func keyIDs(ks []tasks.APIKey) []string {
	out := make([]string, len(ks))
	for i, k := range ks {
		out[i] = k.ID
	}
	return out
}

func testAPIKeyList(s *suite) {
	if ks := s.listKeys(""); len(ks) != 0 {
		s.t.Fatalf("ListAPIKeys of an empty store = %v", ks)
	}
	s.createKey("bob", hash(3))
	t1 := s.now()
	s.clock.Advance(time.Second)
	s.createKey("alice", hash(2))
	t2 := s.now()
	s.clock.Advance(time.Second)
	s.createKey("alice", hash(1))
	t3 := s.now()

	all := s.listKeys("")
	want := []tasks.APIKey{
		{ID: tasks.APIKeyID(hash(2)), UserID: "alice", CreatedAt: t2},
		{ID: tasks.APIKeyID(hash(1)), UserID: "alice", CreatedAt: t3},
		{ID: tasks.APIKeyID(hash(3)), UserID: "bob", CreatedAt: t1},
	}
	if !reflect.DeepEqual(all, want) {
		s.t.Errorf("ListAPIKeys(\"\") =\n%+v\nwant (by user, then creation)\n%+v", all, want)
	}
	if got := s.listKeys("alice"); !reflect.DeepEqual(got, want[:2]) {
		s.t.Errorf("ListAPIKeys(alice) = %+v, want %+v", got, want[:2])
	}
	if got := s.listKeys("nobody"); len(got) != 0 {
		s.t.Errorf("ListAPIKeys(nobody) = %+v, want none", got)
	}
	for _, k := range all {
		if !tasks.ValidAPIKeyID(k.ID) {
			s.t.Errorf("key id %q is not of the form of APIKeyID", k.ID)
		}
	}
}

func testAPIKeyTouch(s *suite) {
	s.createKey("alice", hash(1))
	s.createKey("bob", hash(2))
	if err := s.s.TouchAPIKeys(s.ctx, nil); err != nil {
		s.t.Fatalf("TouchAPIKeys(nil): %v", err)
	}
	t1 := s.now().Add(time.Minute)
	if err := s.s.TouchAPIKeys(s.ctx, []tasks.APIKeyUse{{KeyHash: hash(1), At: t1}, {KeyHash: hash(9), At: t1}}); err != nil {
		s.t.Fatalf("TouchAPIKeys: %v", err)
	}
	ks := s.listKeys("")
	if ks[0].LastUsedAt == nil || !ks[0].LastUsedAt.Equal(t1) || ks[1].LastUsedAt != nil {
		s.t.Fatalf("after a use of alice's key: %+v; want alice's used at %v, bob's never", ks, t1)
	}
	// An older use (from a process whose batch came late) does not move
	// the time back; a newer one moves it on.
	if err := s.s.TouchAPIKeys(s.ctx, []tasks.APIKeyUse{{KeyHash: hash(1), At: t1.Add(-time.Second)}}); err != nil {
		s.t.Fatal(err)
	}
	if got := s.listKeys("alice")[0].LastUsedAt; !got.Equal(t1) {
		s.t.Errorf("after an older use, last use = %v, want %v", got, t1)
	}
	t2 := t1.Add(time.Hour)
	if err := s.s.TouchAPIKeys(s.ctx, []tasks.APIKeyUse{{KeyHash: hash(1), At: t2}, {KeyHash: hash(2), At: t2}}); err != nil {
		s.t.Fatal(err)
	}
	for _, k := range s.listKeys("") {
		if k.LastUsedAt == nil || !k.LastUsedAt.Equal(t2) {
			s.t.Errorf("key of %s last used %v, want %v", k.UserID, k.LastUsedAt, t2)
		}
	}
}

func testAPIKeyRevoke(s *suite) {
	s.createKey("alice", hash(1))
	s.createKey("alice", hash(2))
	s.createKey("bob", hash(3))
	id := tasks.APIKeyID(hash(1))
	k, err := s.s.RevokeAPIKey(s.ctx, id)
	if err != nil || k.ID != id || k.UserID != "alice" || !k.CreatedAt.Equal(s.now()) {
		s.t.Fatalf("RevokeAPIKey = %+v, %v; want alice's key %s", k, err, id)
	}
	if s.keyWorks(hash(1), "alice") {
		s.t.Errorf("a revoked key still works")
	}
	if !s.keyWorks(hash(2), "alice") || !s.keyWorks(hash(3), "bob") {
		s.t.Errorf("revoking one key stopped another")
	}
	if _, err := s.s.RevokeAPIKey(s.ctx, id); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("RevokeAPIKey again: %v, want ErrNotFound", err)
	}
	s.createKey("alice", hash(4))
	ks, err := s.s.RevokeUserAPIKeys(s.ctx, "alice")
	if want := []string{tasks.APIKeyID(hash(2)), tasks.APIKeyID(hash(4))}; err != nil || !reflect.DeepEqual(keyIDs(ks), want) {
		s.t.Fatalf("RevokeUserAPIKeys(alice) = %v, %v; want %v", keyIDs(ks), err, want)
	}
	if s.keyWorks(hash(2), "alice") || s.keyWorks(hash(4), "alice") {
		s.t.Errorf("a key of alice works after RevokeUserAPIKeys")
	}
	if !s.keyWorks(hash(3), "bob") {
		s.t.Errorf("RevokeUserAPIKeys(alice) stopped bob's key")
	}
	if ks, err := s.s.RevokeUserAPIKeys(s.ctx, "alice"); err != nil || len(ks) != 0 {
		s.t.Errorf("RevokeUserAPIKeys of a user without keys = %v, %v; want none", keyIDs(ks), err)
	}
	if got := keyIDs(s.listKeys("")); !reflect.DeepEqual(got, []string{tasks.APIKeyID(hash(3))}) {
		s.t.Errorf("keys left = %v, want bob's", got)
	}
}

func testAPIKeyRotate(s *suite) {
	s.createKey("alice", hash(1))
	s.createKey("bob", hash(9))
	if _, _, err := s.s.RotateAPIKeys(s.ctx, "carol", hash(5), time.Hour); !errors.Is(err, tasks.ErrNotFound) {
		s.t.Errorf("RotateAPIKeys of a user without keys: %v, want ErrNotFound", err)
	}
	if _, _, err := s.s.RotateAPIKeys(s.ctx, "alice", hash(5), -time.Second); err == nil {
		s.t.Errorf("RotateAPIKeys with a negative grace: no error")
	}
	// A rotation that cannot store its new key changes nothing.
	if _, _, err := s.s.RotateAPIKeys(s.ctx, "alice", hash(9), time.Hour); err == nil {
		s.t.Errorf("RotateAPIKeys to an existing hash: no error")
	}
	if k := s.listKeys("alice")[0]; k.ExpiresAt != nil {
		s.t.Errorf("after a failed rotation alice's key expires at %v", k.ExpiresAt)
	}

	s.clock.Advance(time.Second)
	const grace = 24 * time.Hour
	end := s.now().Add(grace)
	nk, old, err := s.s.RotateAPIKeys(s.ctx, "alice", hash(2), grace)
	if err != nil {
		s.t.Fatalf("RotateAPIKeys: %v", err)
	}
	if want := (tasks.APIKey{ID: tasks.APIKeyID(hash(2)), UserID: "alice", CreatedAt: s.now()}); !reflect.DeepEqual(nk, want) {
		s.t.Errorf("new key = %+v, want %+v", nk, want)
	}
	if len(old) != 1 || old[0].ID != tasks.APIKeyID(hash(1)) || old[0].ExpiresAt == nil || !old[0].ExpiresAt.Equal(end) {
		s.t.Errorf("old keys = %+v; want alice's first key, expiring at %v", old, end)
	}
	if ks := s.listKeys("alice"); len(ks) != 2 || ks[0].ExpiresAt == nil || !ks[0].ExpiresAt.Equal(end) || ks[1].ExpiresAt != nil {
		s.t.Errorf("ListAPIKeys(alice) after rotation = %+v; want the old key expiring at %v, the new one not", ks, end)
	}
	if k := s.listKeys("bob")[0]; k.ExpiresAt != nil {
		s.t.Errorf("rotating alice's keys set bob's to expire at %v", k.ExpiresAt)
	}
	s.clock.Advance(grace - time.Microsecond)
	if !s.keyWorks(hash(1), "alice") || !s.keyWorks(hash(2), "alice") {
		s.t.Fatalf("within the grace period both keys must work")
	}
	s.clock.Advance(time.Microsecond)
	if s.keyWorks(hash(1), "alice") {
		s.t.Errorf("the old key works after its grace period")
	}
	if !s.keyWorks(hash(2), "alice") {
		s.t.Errorf("the new key stopped at the end of the old one's grace period")
	}
	if ks := s.listKeys("alice"); len(ks) != 2 || !ks[0].Expired(s.now()) {
		s.t.Errorf("an expired key is still listed, as expired: %+v", ks)
	}

	// A second rotation with a longer grace keeps an earlier expiry; grace
	// 0 ends the old keys at once.
	s.createKey("alice", hash(3))
	if _, _, err := s.s.RotateAPIKeys(s.ctx, "alice", hash(4), time.Hour); err != nil {
		s.t.Fatal(err)
	}
	soon := s.now().Add(time.Hour)
	_, old, err = s.s.RotateAPIKeys(s.ctx, "alice", hash(5), 2*time.Hour)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, k := range old[:2] {
		if k.ExpiresAt == nil || !k.ExpiresAt.Equal(soon) {
			s.t.Errorf("key %s expires at %v after a rotation with a longer grace; want its earlier %v", k.ID, k.ExpiresAt, soon)
		}
	}
	for _, k := range s.listKeys("alice")[1:3] {
		if k.ExpiresAt == nil || !k.ExpiresAt.Equal(soon) {
			s.t.Errorf("stored key %s expires at %v; want %v", k.ID, k.ExpiresAt, soon)
		}
	}
	_, old, err = s.s.RotateAPIKeys(s.ctx, "alice", hash(6), 0)
	if err != nil {
		s.t.Fatal(err)
	}
	if want := []string{tasks.APIKeyID(hash(2)), tasks.APIKeyID(hash(3)), tasks.APIKeyID(hash(4)), tasks.APIKeyID(hash(5))}; !reflect.DeepEqual(keyIDs(old), want) {
		s.t.Errorf("old keys of the grace-0 rotation = %v, want %v (the unexpired ones)", keyIDs(old), want)
	}
	for _, h := range [][]byte{hash(1), hash(2), hash(3), hash(4), hash(5)} {
		if s.keyWorks(h, "alice") {
			s.t.Errorf("key %s works after a rotation with grace 0", tasks.APIKeyID(h))
		}
	}
	if !s.keyWorks(hash(6), "alice") {
		s.t.Errorf("the newest key does not work")
	}
}
