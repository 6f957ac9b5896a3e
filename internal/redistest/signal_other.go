//go:build !unix

package redistest

import "os"

// Without SIGSTOP there is no pause; redis-server runs only on Unix anyway.
var pauseSignal, resumeSignal os.Signal = os.Kill, os.Kill
