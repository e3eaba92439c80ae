package keda

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
)

// TLSFiles are the PEM files of the gRPC server's TLS. All empty: plaintext.
type TLSFiles struct {
	CertFile, KeyFile string // the server's certificate and key; both or neither
	// ClientCAFile, when set, makes the server require a client certificate
	// signed by this CA (mutual TLS: KEDA's tlsClientCert/tlsClientKey).
	ClientCAFile string
}

// ServerTLSConfig checks and loads the files and returns the server's TLS
// config, or nil when no file is set. The files are read again for every
// new connection, so renewed certificates (cert-manager) need no restart.
func ServerTLSConfig(f TLSFiles) (*tls.Config, error) {
	switch {
	case f.CertFile == "" && f.KeyFile == "" && f.ClientCAFile == "":
		return nil, nil
	case f.CertFile == "" || f.KeyFile == "":
		return nil, errors.New("the certificate and the key file must be set together")
	}
	load := func() (*tls.Config, error) {
		cert, err := tls.LoadX509KeyPair(f.CertFile, f.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("loading the server certificate: %w", err)
		}
		c := &tls.Config{
			MinVersion:   tls.VersionTLS12,
			Certificates: []tls.Certificate{cert},
			NextProtos:   []string{"h2"}, // gRPC clients insist on ALPN h2
		}
		if f.ClientCAFile != "" {
			pem, err := os.ReadFile(f.ClientCAFile)
			if err != nil {
				return nil, fmt.Errorf("reading the client CA: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("no PEM certificate in the client CA file %s", f.ClientCAFile)
			}
			c.ClientCAs = pool
			c.ClientAuth = tls.RequireAndVerifyClientCert
		}
		return c, nil
	}
	base, err := load()
	if err != nil {
		return nil, err
	}
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) { return load() }
	return base, nil
}

// GRPCServer serves the external scaler on one listener.
type GRPCServer struct {
	scaler *Scaler
	server *grpc.Server
	ln     net.Listener
}

// ListenGRPC listens on addr (host:port) for KEDA; tlsConfig nil means
// plaintext. Call Serve, then Shutdown.
func ListenGRPC(addr string, scaler *Scaler, tlsConfig *tls.Config) (*GRPCServer, error) {
	opts := []grpc.ServerOption{
		// Stop waits for every handler, so no stream outlives the server.
		grpc.WaitForHandlers(true),
		// Notice a KEDA that vanished without closing its connection, so its
		// stream does not keep the push loop polling Open WebUI.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
	}
	if tlsConfig != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(tlsConfig)))
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	server := grpc.NewServer(opts...)
	externalscaler.RegisterExternalScalerServer(server, scaler)
	return &GRPCServer{scaler: scaler, server: server, ln: ln}, nil
}

// Addr is the address the server listens on.
func (g *GRPCServer) Addr() net.Addr { return g.ln.Addr() }

// Serve serves until Shutdown; it returns nil after Shutdown.
func (g *GRPCServer) Serve() error {
	err := g.server.Serve(g.ln)
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Shutdown ends the streams, lets the unary calls in flight finish until ctx
// is done, then closes every connection. When it returns, every handler and
// the push loop have returned.
func (g *GRPCServer) Shutdown(ctx context.Context) {
	g.scaler.Close()
	stopped := make(chan struct{})
	go func() {
		g.server.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-ctx.Done():
		g.server.Stop()
		<-stopped
	}
}
