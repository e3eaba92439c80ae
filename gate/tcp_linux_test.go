package gate

import (
	"context"
	"net"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBackendConnectionsEndWhenSilent: a backend connection carries
// TCP_USER_TIMEOUT and a short keepalive, so a pooled connection to a pod
// whose node vanished ends instead of holding a request for ever.
func TestBackendConnectionsEndWhenSilent(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := NewTransport().DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct{ level, opt, value int }{
		"TCP_USER_TIMEOUT (ms)": {unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, int(backendUserTimeout / time.Millisecond)},
		"SO_KEEPALIVE":          {unix.SOL_SOCKET, unix.SO_KEEPALIVE, 1},
		"TCP_KEEPIDLE (s)":      {unix.IPPROTO_TCP, unix.TCP_KEEPIDLE, 15},
		"TCP_KEEPINTVL (s)":     {unix.IPPROTO_TCP, unix.TCP_KEEPINTVL, 5},
		"TCP_KEEPCNT":           {unix.IPPROTO_TCP, unix.TCP_KEEPCNT, 3},
	}
	for name, w := range want {
		var got int
		var sockErr error
		if err := raw.Control(func(fd uintptr) { got, sockErr = unix.GetsockoptInt(int(fd), w.level, w.opt) }); err != nil {
			t.Fatal(err)
		}
		if sockErr != nil {
			t.Errorf("%s: %v", name, sockErr)
		} else if got != w.value {
			t.Errorf("%s = %d, want %d", name, got, w.value)
		}
	}
}
