package ollama

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proc is a process a test started. It runs in its own process group (so
// Ollama's runner goes with it), dies with the test binary (Pdeathsig), and is
// stopped by pid: SIGTERM to the group, SIGKILL after a bounded wait.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	once sync.Once
}

// start starts bin for the test t: stopped in t's cleanup at the latest, its
// output logged if t failed.
func start(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = env
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("starting %s (%s): %v", name, bin, err)
	}
	t.Logf("started %s (pid %d): %s %s", name, p.cmd.Process.Pid, filepath.Base(bin), strings.Join(args, " "))
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.tail(6000))
		}
	})
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop ends the process group: SIGTERM, then SIGKILL after 5 s, and waits
// (bounded) for the exit. Safe to call more than once.
func (p *proc) stop() {
	p.once.Do(func() {
		if p.exited() {
			return
		}
		pgid := p.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				fmt.Fprintf(os.Stderr, "ollama suite: %s (pid %d) did not exit after SIGKILL\n", p.name, pgid)
			}
		}
	})
}

func (p *proc) tail(n int) string {
	s := p.out.String()
	if len(s) > n {
		s = "...\n" + s[len(s)-n:]
	}
	return s
}

// heldAddr returns a loopback address held until t ends: a socket bound to
// it with SO_REUSEADDR that never listens. Connections to it are refused
// until a server listens; the kernel gives the port to no other listener
// (port 0) and no outgoing connection; and the server, real Ollama or the
// exporter, which asks for exactly that address with SO_REUSEADDR as every Go
// server does, binds it, and binds it again after a restart. A port chosen
// free and closed could be taken by another listener before the server bound
// it (issue 23). internal/heldport is the same for the main module, which
// this module does not import.
func heldAddr(t *testing.T) string {
	t.Helper()
	return heldAddrOn(t, [4]byte{127, 0, 0, 1})
}

// heldAddrOn is heldAddr on another loopback address (127.0.0.2: a second
// "pod" on this machine).
func heldAddrOn(t *testing.T, ip [4]byte) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatalf("holding a loopback port: %v", err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		t.Fatalf("holding a loopback port: %v", err)
	}
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: ip}); err != nil {
		t.Fatalf("holding a loopback port: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("holding a loopback port: %v", err)
	}
	return net.JoinHostPort(net.IP(ip[:]).String(), strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// eventually calls check every 50 ms until it returns true, for at most
// timeout; then the test fails with what check last saw.
func eventually(t *testing.T, timeout time.Duration, what string, check func() (bool, string)) {
	t.Helper()
	begin := time.Now()
	for {
		ok, seen := check()
		if ok {
			t.Logf("ok: %s (after %s)", what, time.Since(begin).Round(time.Millisecond))
			return
		}
		if time.Since(begin) > timeout {
			t.Fatalf("timed out after %s waiting for: %s; last seen: %s", timeout, what, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
