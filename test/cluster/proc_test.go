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

// freePort returns a loopback port that was free a moment ago.
func freePort() int { return freePortOn("127.0.0.1") }

// freePortOn returns a port that was free a moment ago on every one of the
// loopback addresses hosts (127.0.0.0/8 is all loopback on Linux).
func freePortOn(hosts ...string) int {
	for range 100 {
		ln, err := net.Listen("tcp", net.JoinHostPort(hosts[0], "0"))
		if err != nil {
			panic(fmt.Sprintf("no free port on %s: %v", hosts[0], err))
		}
		port := ln.Addr().(*net.TCPAddr).Port
		free := true
		for _, h := range hosts[1:] {
			other, err := net.Listen("tcp", net.JoinHostPort(h, strconv.Itoa(port)))
			if err != nil {
				free = false
				break
			}
			other.Close()
		}
		ln.Close()
		if free {
			return port
		}
	}
	panic(fmt.Sprintf("no port free on all of %v", hosts))
}

func freeAddr() string { return freeAddrOn("127.0.0.1") }

func freeAddrOn(host string) string { return net.JoinHostPort(host, strconv.Itoa(freePortOn(host))) }

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
