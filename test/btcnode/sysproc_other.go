//go:build !linux

package btcnode

import "syscall"

// sysProcAttr: outside Linux there is no parent-death signal; t.Cleanup kills btcd.
func sysProcAttr() *syscall.SysProcAttr { return nil }
