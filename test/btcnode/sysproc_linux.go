package btcnode

import "syscall"

// sysProcAttr has the kernel kill btcd when the test process dies without running its
// cleanups (a test binary's timeout panic, a SIGKILL), so that no btcd outlives its test.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
