package tasks_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/allowancehq/allowance/app/tasks"
	"github.com/allowancehq/allowance/app/tasks/taskdb"
)

// A store from a DSN, a task, and a pool of workers that runs it.
func ExamplePool() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "tasks-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := taskdb.Open(ctx, "sqlite:"+filepath.Join(dir, "tasks.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	input := json.RawMessage(`{"greeting": "hello"}`)
	if err := tasks.ValidateInput("echo", input); err != nil {
		log.Fatal(err) // a 400 in an API
	}
	task, err := store.Create(ctx, tasks.Task{UserID: "alice", Kind: "echo", Input: input})
	if err != nil {
		log.Fatal(err)
	}
	// One active task per user: a second submit names the first.
	_, err = store.Create(ctx, tasks.Task{UserID: "alice", Kind: "echo"})
	var active *tasks.ActiveTaskError
	fmt.Println(errors.As(err, &active) && active.ActiveID == task.ID)

	done := make(chan tasks.Task, 1)
	pool := tasks.NewPool(store, tasks.Kinds(), 2, nil,
		tasks.WithOnFinish(func(_ context.Context, t tasks.Task) { done <- t }))
	runCtx, stop := context.WithCancel(ctx)
	stopped := make(chan error, 1)
	go func() { stopped <- pool.Run(runCtx) }()
	pool.Notify()
	finished := <-done
	stop()
	if err := <-stopped; err != nil {
		log.Fatal(err)
	}
	fmt.Println(finished.Status, string(finished.Output))
	// Output:
	// true
	// succeeded {"greeting": "hello"}
}
