package cluster

import (
	"bytes"
	"errors"
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

// proc is a process this suite started. It runs in its own process group
// (so its children go with it), dies with the test binary (Pdeathsig), and is
// stopped by pid: SIGTERM to the group, SIGKILL after a bounded wait.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	once sync.Once
}

// startProc starts bin; its output is kept (and written to logDir/name.log
// when the suite ends, for a failed run's post-mortem).
func startProc(name, bin string, env []string, args ...string) (*proc, error) {
	p := &proc{name: name, cmd: exec.Command(bin, args...), out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s (%s): %w", name, bin, err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	return p, nil
}

// startT starts a process that belongs to one test: stopped in its cleanup,
// its output logged if the test failed.
func startT(t *testing.T, name, bin string, env []string, args ...string) *proc {
	t.Helper()
	p, err := startProc(name, bin, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("started %s (pid %d): %s %s", name, p.cmd.Process.Pid, filepath.Base(bin), strings.Join(args, " "))
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("output of %s:\n%s", name, p.tail(6000))
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

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
		pgid := p.pid()
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			select {
			case <-p.done:
			case <-time.After(5 * time.Second):
				fmt.Fprintf(os.Stderr, "cluster: %s (pid %d) did not exit after SIGKILL\n", p.name, pgid)
			}
		}
	})
}

// kill ends the process at once (SIGKILL, no chance to clean up): how a
// crashed or OOM-killed exporter looks from the outside.
func (p *proc) kill() {
	p.once.Do(func() {
		_ = syscall.Kill(-p.pid(), syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
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

// Every address this suite gives a server, its own or a third party's
// (etcd, kube-apiserver, KEDA, Prometheus, the exporter, the stand-ins), is
// held from the moment it is chosen until the suite ends: a socket bound to
// it with SO_REUSEADDR that never listens. Connections to it are refused
// until the server listens; the kernel gives the port to no other listener
// (port 0) and no outgoing connection; and the server, which asks for
// exactly that address with SO_REUSEADDR as every Go server does, binds it,
// and binds it again after a restart (the stand-in Ollama at each 0 -> 1).
// Choosing a free port and closing it let another listener take it first
// (issue 23: the gate found a stranger on the stand-in Ollama's port and
// called it up). internal/heldport is the same for the main module, which
// this module does not import.

// heldPort holds a loopback port for the rest of the suite.
func heldPort() int { return heldPortOn("127.0.0.1") }

// heldPortOn holds the same port on every one of the loopback addresses
// hosts (127.0.0.0/8 is all loopback on Linux) for the rest of the suite.
func heldPortOn(hosts ...string) int {
	for range 100 {
		fds, port, err := holdOn(hosts)
		if err == nil {
			return port
		}
		for _, fd := range fds {
			syscall.Close(fd)
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			panic(fmt.Sprintf("holding a port on %v: %v", hosts, err))
		}
	}
	panic(fmt.Sprintf("no port free on all of %v in 100 tries", hosts))
}

// holdOn holds a port the kernel chooses on hosts[0], then the same port on
// the others; an error lists the sockets to close.
func holdOn(hosts []string) (fds []int, port int, err error) {
	for _, h := range hosts {
		fd, got, err := holdPort(h, port)
		if err != nil {
			return fds, 0, fmt.Errorf("%s: %w", net.JoinHostPort(h, strconv.Itoa(port)), err)
		}
		fds, port = append(fds, fd), got
	}
	return fds, port, nil
}

// holdPort binds a socket to host:port (0: the kernel chooses) with
// SO_REUSEADDR, without listening.
func holdPort(host string, port int) (fd, bound int, err error) {
	ip := net.ParseIP(host).To4()
	if ip == nil {
		return -1, 0, fmt.Errorf("%q is not an IPv4 address", host)
	}
	fd, err = syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, 0, err
	}
	if err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err == nil {
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte(ip), Port: port})
	}
	var sa syscall.Sockaddr
	if err == nil {
		sa, err = syscall.Getsockname(fd)
	}
	if err != nil {
		syscall.Close(fd)
		return -1, 0, err
	}
	return fd, sa.(*syscall.SockaddrInet4).Port, nil
}

// heldAddr is heldPort as host:port.
func heldAddr() string { return heldAddrOn("127.0.0.1") }

func heldAddrOn(host string) string { return net.JoinHostPort(host, strconv.Itoa(heldPortOn(host))) }

// waitListening waits until addr accepts TCP connections or p exits.
func waitListening(p *proc, addr string, timeout time.Duration) error {
	return poll(timeout, 20*time.Millisecond, func() (bool, error) {
		if p != nil && p.exited() {
			return false, fmt.Errorf("%s exited before listening on %s:\n%s", p.name, addr, p.tail(3000))
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil, nil
	})
}

// poll calls check every interval until it returns true or an error, for at
// most timeout.
func poll(timeout, interval time.Duration, check func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := check()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("timed out after %s", timeout)
		}
		time.Sleep(interval)
	}
}

// run runs a short command and returns its stdout; the error carries stderr.
func run(env []string, stdin []byte, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return stdout.String(), fmt.Errorf("%s %s: %w\n%s", filepath.Base(name), strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
		}
		return stdout.String(), fmt.Errorf("%s: %w", name, err)
	}
	return stdout.String(), nil
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
