//go:build !unix

package api

import "time"

// processCPU is not measured on this system: -1.
func processCPU() time.Duration { return -1 }
