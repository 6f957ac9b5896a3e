package storetest

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/allowancehq/allowance/app/tasks"
	"pgregory.net/rapid"
)

// modelTask is what the model knows of a task.
type modelTask struct {
	id       string
	user     string
	seq      int // creation order
	status   tasks.Status
	owner    string
	expires  time.Time
	attempts int
}

// model is a plain description of a store's task life cycle, to compare a
// real store with.
type model struct {
	tasks []*modelTask // creation order
}

func (m *model) active(user string) *modelTask {
	for _, t := range m.tasks {
		if t.user == user && t.status.Active() {
			return t
		}
	}
	return nil
}

func (m *model) oldestQueued() *modelTask {
	for _, t := range m.tasks {
		if t.status == tasks.StatusQueued {
			return t
		}
	}
	return nil
}

const modelLease = time.Minute
const modelMaxAttempts = 2

// testModel runs random sequences of operations against the store and a
// model, and checks after each step that the store answers as the model
// says: one active task per user, oldest-first claims, leases that only
// their owner may use, reaping after expiry.
func testModel(s *suite) {
	iteration := 0
	rapid.Check(s.t, func(rt *rapid.T) {
		iteration++
		m := &model{}
		users := []string{}
		for i := range 3 {
			users = append(users, fmt.Sprintf("m%d-u%d", iteration, i))
		}
		owners := []string{"w0", "w1"}
		pickTask := func(label string) *modelTask {
			if len(m.tasks) == 0 {
				return nil
			}
			return m.tasks[rapid.IntRange(0, len(m.tasks)-1).Draw(rt, label)]
		}
		// check compares every user's tasks with the model.
		check := func(rt *rapid.T) {
			for _, user := range users {
				list, err := s.s.List(s.ctx, user, tasks.ListOptions{Limit: tasks.MaxListLimit})
				if err != nil {
					rt.Fatalf("List: %v", err)
				}
				var want []*modelTask
				for _, t := range m.tasks {
					if t.user == user {
						want = append(want, t)
					}
				}
				if len(list) != len(want) {
					rt.Fatalf("%s has %d tasks, want %d", user, len(list), len(want))
				}
				for i, got := range list {
					w := want[len(want)-1-i] // newest first
					if got.ID != w.id || got.Status != w.status || got.LeaseOwner != w.owner || got.Attempts != w.attempts {
						rt.Fatalf("task %s = %s owner %q attempts %d; want %s %s owner %q attempts %d",
							got.ID, got.Status, got.LeaseOwner, got.Attempts, w.id, w.status, w.owner, w.attempts)
					}
				}
			}
		}
		steps := map[string]func(*rapid.T){
			"Create": func(rt *rapid.T) {
				user := rapid.SampledFrom(users).Draw(rt, "user")
				got, err := s.s.Create(s.ctx, tasks.Task{UserID: user, Kind: "echo"})
				if a := m.active(user); a != nil {
					var ae *tasks.ActiveTaskError
					if !errors.As(err, &ae) || ae.ActiveID != a.id {
						rt.Fatalf("Create for %s with active %s: %v", user, a.id, err)
					}
					return
				}
				if err != nil {
					rt.Fatalf("Create for %s: %v", user, err)
				}
				m.tasks = append(m.tasks, &modelTask{id: got.ID, user: user, seq: len(m.tasks), status: tasks.StatusQueued})
			},
			"Cancel": func(rt *rapid.T) {
				t := pickTask("task")
				if t == nil {
					rt.Skip("no task")
				}
				_, err := s.s.Cancel(s.ctx, t.user, t.id)
				if t.status.Active() {
					if err != nil {
						rt.Fatalf("Cancel of %s task: %v", t.status, err)
					}
					t.status, t.owner = tasks.StatusCanceled, ""
				} else if !errors.Is(err, tasks.ErrNotActive) {
					rt.Fatalf("Cancel of %s task: %v, want ErrNotActive", t.status, err)
				}
			},
			"Claim": func(rt *rapid.T) {
				owner := rapid.SampledFrom(owners).Draw(rt, "owner")
				got, ok, err := s.s.Claim(s.ctx, owner, modelLease)
				if err != nil {
					rt.Fatalf("Claim: %v", err)
				}
				want := m.oldestQueued()
				if want == nil {
					if ok {
						rt.Fatalf("Claim with nothing queued got %s", got.ID)
					}
					return
				}
				if !ok || got.ID != want.id {
					rt.Fatalf("Claim = %s, %v; want %s", got.ID, ok, want.id)
				}
				want.status, want.owner, want.expires = tasks.StatusRunning, owner, s.clock.Now().Add(modelLease)
				want.attempts++
			},
			"Heartbeat": func(rt *rapid.T) {
				t := pickTask("task")
				if t == nil {
					rt.Skip("no task")
				}
				owner := rapid.SampledFrom(owners).Draw(rt, "owner")
				err := s.s.Heartbeat(s.ctx, t.id, owner, modelLease)
				if t.status == tasks.StatusRunning && t.owner == owner {
					if err != nil {
						rt.Fatalf("Heartbeat by the owner: %v", err)
					}
					t.expires = s.clock.Now().Add(modelLease)
				} else if !errors.Is(err, tasks.ErrLeaseLost) {
					rt.Fatalf("Heartbeat of a %s task owned by %q by %s: %v, want ErrLeaseLost", t.status, t.owner, owner, err)
				}
			},
			"Finish": func(rt *rapid.T) {
				t := pickTask("task")
				if t == nil {
					rt.Skip("no task")
				}
				owner := rapid.SampledFrom(owners).Draw(rt, "owner")
				st := rapid.SampledFrom([]tasks.Status{tasks.StatusSucceeded, tasks.StatusFailed}).Draw(rt, "status")
				_, err := s.s.Finish(s.ctx, t.id, owner, st, nil, "")
				if t.status == tasks.StatusRunning && t.owner == owner {
					if err != nil {
						rt.Fatalf("Finish by the owner: %v", err)
					}
					t.status, t.owner = st, ""
				} else if !errors.Is(err, tasks.ErrLeaseLost) {
					rt.Fatalf("Finish of a %s task owned by %q by %s: %v, want ErrLeaseLost", t.status, t.owner, owner, err)
				}
			},
			"Advance": func(rt *rapid.T) {
				s.clock.Advance(time.Duration(rapid.IntRange(1, 90).Draw(rt, "seconds")) * time.Second)
			},
			"Reap": func(rt *rapid.T) {
				reaped, err := s.s.Reap(s.ctx, modelMaxAttempts)
				if err != nil {
					rt.Fatalf("Reap: %v", err)
				}
				var want []string
				now := s.clock.Now()
				for _, t := range m.tasks {
					if t.status == tasks.StatusRunning && t.expires.Before(now) {
						want = append(want, t.id)
						t.owner = ""
						t.status = tasks.StatusQueued
						if t.attempts >= modelMaxAttempts {
							t.status = tasks.StatusStuck
						}
					}
				}
				got := ids(reaped)
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					rt.Fatalf("Reap = %v, want %v", got, want)
				}
			},
		}
		rt.Repeat(steps)
		// Each step checked its own answers; now the whole state.
		check(rt)
		// Leave nothing queued or running for the next iteration's claims.
		for _, t := range m.tasks {
			if t.status.Active() {
				if _, err := s.s.Cancel(s.ctx, t.user, t.id); err != nil {
					rt.Fatalf("cleanup Cancel: %v", err)
				}
			}
		}
	})
}
