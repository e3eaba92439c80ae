package fakeollama

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/heldport"
)

// Server runs a Handler on one fixed address that can go away and come
// back, like a pod scaled to 0 and to 1:
//   - stopped: connections are refused;
//   - started with a delay: the port accepts TCP at once, but HTTP is served
//     only after the delay (requests wait in the listen backlog), as `ollama
//     serve` opens its port before it serves;
//   - ready: it serves.
type Server struct {
	addr    string
	handler http.Handler

	mu      sync.Mutex
	srv     *http.Server
	readyAt time.Time
	ready   chan struct{}
	serving chan struct{} // closed when the current run's Serve has returned
}

// NewServer returns a stopped Server for addr. Port 0 on an IPv4 address
// picks a port now and holds it (internal/heldport) for the life of the
// process, so that while the Server is stopped its port refuses
// connections and no other listener can take it before the next Start.
func NewServer(addr string, h http.Handler) (*Server, error) {
	if host, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		held, err := heldport.Hold(host, 0)
		if err != nil {
			return nil, fmt.Errorf("picking a port: %w", err)
		}
		addr = held.Addr()
	}
	return &Server{addr: addr, handler: h}, nil
}

// Addr is the address it listens on while started.
func (s *Server) Addr() string { return s.addr }

// URL is its base URL.
func (s *Server) URL() string { return "http://" + s.addr }

// Start opens the port now and serves HTTP after delay. It is an error to
// start a started Server.
func (s *Server) Start(delay time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return errors.New("already started")
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.addr, err)
	}
	srv := &http.Server{Handler: s.handler, ReadHeaderTimeout: 10 * time.Second}
	ready, serving, stopped := make(chan struct{}), make(chan struct{}), make(chan struct{})
	srv.RegisterOnShutdown(func() { close(stopped) })
	s.srv, s.ready, s.serving, s.readyAt = srv, ready, serving, time.Time{}
	go func() {
		defer close(serving)
		t := time.NewTimer(delay)
		defer t.Stop()
		select {
		case <-t.C:
		case <-stopped:
			ln.Close()
			return
		}
		s.mu.Lock()
		s.readyAt = time.Now()
		s.mu.Unlock()
		close(ready)
		_ = srv.Serve(ln) // ErrServerClosed once stopped
	}()
	return nil
}

// Ready is closed once the current run serves HTTP; nil while stopped.
func (s *Server) Ready() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// ReadyAt is when the current run started serving HTTP; zero before.
func (s *Server) ReadyAt() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.readyAt
}

// Running says whether it is started (serving, or about to).
func (s *Server) Running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// Stop closes the port and every connection, streams included, as a pod
// that is scaled in; a stopped Server refuses connections.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, serving := s.srv, s.serving
	s.srv, s.ready = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // no grace: close at once, like SIGKILL after the grace period
	_ = srv.Shutdown(ctx)
	_ = srv.Close()
	<-serving
}
