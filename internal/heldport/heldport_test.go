//go:build linux

package heldport_test

import (
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"syscall"
	"testing"

	"github.com/openwebui-exporter/openwebui_exporter/internal/heldport"
)

// chooseAndClose is the helper every suite had before (harness.FreeAddr,
// test/cluster's freeAddr, fakeollama.NewServer with port 0): a port that
// was free a moment ago.
func chooseAndClose(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// bindExclusive binds addr without SO_REUSEADDR, as the kernel's own test
// of "is this port free": nil means any listener, one that asked the kernel
// for port 0 included, could have been given it.
func bindExclusive(t *testing.T, addr string) error {
	t.Helper()
	ap, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	return syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte(ap.IP.To4()), Port: ap.Port})
}

// The race of issue 23's CI failure, and the hold that closes it: between
// "choose" and "bind", another listener takes the port and the stand-in
// cannot start (or, worse, the test talks to the stranger).
func TestAStrangerCannotTakeAHeldPort(t *testing.T) {
	t.Run("chosen and closed: the port is free for anyone, a stranger takes it, the stand-in cannot bind", func(t *testing.T) {
		addr := chooseAndClose(t)
		if err := bindExclusive(t, addr); err != nil {
			t.Fatalf("a port chosen and closed is not free to the kernel (%v): the old helper's window is not what this test says", err)
		}
		stranger, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the stranger could not take %s: %v", addr, err)
		}
		defer stranger.Close()
		if ln, err := net.Listen("tcp", addr); err == nil {
			ln.Close()
			t.Fatalf("the stand-in bound %s although a stranger listens there", addr)
		} else if !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("the stand-in's bind: %v, want address in use", err)
		}
	})

	t.Run("held: not free to the kernel, no port-0 listener or outgoing connection gets it, the stand-in binds it", func(t *testing.T) {
		p, err := heldport.Hold("127.0.0.1", 0)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		if err := bindExclusive(t, p.Addr()); !errors.Is(err, syscall.EADDRINUSE) {
			t.Fatalf("a bind without SO_REUSEADDR to the held %s: %v, want address in use", p.Addr(), err)
		}
		// Listeners that let the kernel choose, all open at once, so each
		// gets a different port.
		for range 1000 {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			if got := ln.Addr().(*net.TCPAddr).Port; got == p.Port() {
				t.Fatalf("the kernel gave the held port %d to a listener on port 0", got)
			}
		}
		// Outgoing connections' local ports are the kernel's choice too.
		target := httptest.NewServer(http.NotFoundHandler())
		defer target.Close()
		for range 500 {
			c, err := net.Dial("tcp", target.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if got := c.LocalAddr().(*net.TCPAddr).Port; got == p.Port() {
				t.Fatalf("the kernel gave the held port %d to an outgoing connection", got)
			}
		}
		if ln, err := net.Listen("tcp", p.Addr()); err != nil {
			t.Fatalf("the stand-in could not bind its held %s: %v", p.Addr(), err)
		} else {
			ln.Close()
		}
	})
}

// A held port behaves like a server that comes and goes: refused while no
// server is there, served while one is, and one listener at a time.
func TestAHeldPortServesAndStopsLikeAPod(t *testing.T) {
	p, err := heldport.Hold("127.0.0.1", 0)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	refused := func(when string) {
		t.Helper()
		c, err := net.Dial("tcp", p.Addr())
		if err == nil {
			c.Close()
			t.Fatalf("%s: a connection to %s was accepted, want refused", when, p.Addr())
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s: dialing %s: %v, want connection refused", when, p.Addr(), err)
		}
	}
	refused("held, no server")
	for run := range 3 {
		ln, err := net.Listen("tcp", p.Addr())
		if err != nil {
			t.Fatalf("run %d: binding the held %s: %v", run, p.Addr(), err)
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("run " + strconv.Itoa(run))) }))
		srv.Listener.Close()
		srv.Listener = ln
		srv.Start()
		if second, err := net.Listen("tcp", p.Addr()); err == nil {
			second.Close()
			t.Fatalf("run %d: a second listener bound %s while the first serves", run, p.Addr())
		}
		resp, err := http.Get(srv.URL)
		if err != nil {
			t.Fatalf("run %d: %v", run, err)
		}
		resp.Body.Close()
		srv.Close()
		refused("after run " + strconv.Itoa(run))
	}
}

func TestHoldRejectsBadInput(t *testing.T) {
	for _, tc := range []struct {
		host string
		port int
	}{{"localhost", 0}, {"::1", 0}, {"127.0.0.1", -1}, {"127.0.0.1", 65536}} {
		if p, err := heldport.Hold(tc.host, tc.port); err == nil {
			p.Close()
			t.Errorf("Hold(%q, %d) = nil error, want one", tc.host, tc.port)
		}
	}
}
