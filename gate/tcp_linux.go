package gate

import (
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// backendUserTimeout bounds how long bytes the gate sent to a backend may go
// unacknowledged before the kernel drops the connection (TCP_USER_TIMEOUT).
// A pod whose node vanished leaves the gate's pooled connections open but
// silent: without it, a request written on one of them waits for ever
// (Ollama sends no response header until its model is loaded, so the gate
// sets no response-header timeout). With it, that request fails after this
// long instead. A stream the backend is sending is not affected: the gate
// has nothing unacknowledged on it.
const backendUserTimeout = 30 * time.Second

// setUserTimeout sets TCP_USER_TIMEOUT on a backend connection's socket.
func setUserTimeout(_, _ string, c syscall.RawConn) error {
	var sockErr error
	err := c.Control(func(fd uintptr) {
		sockErr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(backendUserTimeout/time.Millisecond))
	})
	if err != nil {
		return err
	}
	return sockErr
}
