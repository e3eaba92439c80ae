//go:build !linux

package gate

import "syscall"

// setUserTimeout: TCP_USER_TIMEOUT is Linux's; elsewhere a silent backend
// connection is bounded by TCP keepalive alone.
func setUserTimeout(_, _ string, _ syscall.RawConn) error { return nil }
