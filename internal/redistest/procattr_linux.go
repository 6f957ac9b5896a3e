package redistest

import (
	"os/exec"
	"syscall"
)

// setParentDeath makes the kernel kill the server when the test process dies
// without running its cleanups (a panic, a timeout, SIGKILL).
func setParentDeath(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
