package tasks

import "time"

// Clock is the time source of the background loops of this package
// (Purger, KeyUseRecorder). Tests replace it to run a loop's waits without
// waiting; storetest.Clock is one.
type Clock interface {
	Now() time.Time
	// After returns a channel that receives once d has passed.
	After(d time.Duration) <-chan time.Time
}

// systemClock is the Clock of time.Now and time.After.
type systemClock struct{}

func (systemClock) Now() time.Time                         { return time.Now() }
func (systemClock) After(d time.Duration) <-chan time.Time { return time.After(d) }
