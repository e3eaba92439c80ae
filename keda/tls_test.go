package keda_test

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
)

// ca is a test certificate authority.
type ca struct{ *harness.CA }

func newCA(t *testing.T, name string) *ca {
	t.Helper()
	c, err := harness.NewCA(name)
	if err != nil {
		t.Fatal(err)
	}
	return &ca{c}
}

// issue returns a PEM certificate and key; server certificates are for 127.0.0.1.
func (c *ca) issue(t *testing.T, name string, server bool) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := c.Issue(name, server)
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// clientTLS is what KEDA builds from caCert, tlsClientCert and tlsClientKey.
func clientTLS(t *testing.T, serverCA *ca, certPEM, keyPEM []byte) grpc.DialOption {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(serverCA.PEM)
	c := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	if certPEM != nil {
		pair, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return grpc.WithTransportCredentials(credentials.NewTLS(c))
}

// tlsServer serves the scaler with the given files on a loopback port.
func tlsServer(t *testing.T, files keda.TLSFiles) string {
	t.Helper()
	s := newGRPCSetup(t, grpcOptions{})
	return serve(t, s.scaler, &files).Addr().String()
}

func tryIsActive(t *testing.T, addr string, opt grpc.DialOption) error {
	t.Helper()
	_, err := pb.NewExternalScalerClient(dial(t, addr, opt)).IsActive(ctxFor(t, 10*time.Second), ref(nil))
	return err
}

func TestTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA := newCA(t, "server CA")
	certPEM, keyPEM := serverCA.issue(t, "openwebui-exporter", true)
	files := keda.TLSFiles{CertFile: writeFile(t, dir, "tls.crt", certPEM), KeyFile: writeFile(t, dir, "tls.key", keyPEM)}
	addr := tlsServer(t, files)

	// KEDA with enableTLS and caCert.
	if err := tryIsActive(t, addr, clientTLS(t, serverCA, nil, nil)); err != nil {
		t.Errorf("TLS client: %v", err)
	}
	// KEDA without enableTLS speaks plaintext: refused.
	if err := tryIsActive(t, addr, grpc.WithTransportCredentials(insecure.NewCredentials())); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext client on a TLS server: %v, want Unavailable", err)
	}
	// A client that does not trust the server's CA: refused.
	if err := tryIsActive(t, addr, clientTLS(t, newCA(t, "other CA"), nil, nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("client with another CA: %v, want Unavailable", err)
	}

	// The files are read for every connection: a renewed certificate from a
	// new CA is served without a restart.
	newServerCA := newCA(t, "renewed server CA")
	certPEM, keyPEM = newServerCA.issue(t, "openwebui-exporter", true)
	writeFile(t, dir, "tls.crt", certPEM)
	writeFile(t, dir, "tls.key", keyPEM)
	if err := tryIsActive(t, addr, clientTLS(t, newServerCA, nil, nil)); err != nil {
		t.Errorf("after renewal: %v", err)
	}
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, strangerCA := newCA(t, "server CA"), newCA(t, "client CA"), newCA(t, "stranger CA")
	certPEM, keyPEM := serverCA.issue(t, "openwebui-exporter", true)
	addr := tlsServer(t, keda.TLSFiles{
		CertFile:     writeFile(t, dir, "tls.crt", certPEM),
		KeyFile:      writeFile(t, dir, "tls.key", keyPEM),
		ClientCAFile: writeFile(t, dir, "client-ca.crt", clientCA.PEM),
	})

	kedaCert, kedaKey := clientCA.issue(t, "keda-operator", false)
	if err := tryIsActive(t, addr, clientTLS(t, serverCA, kedaCert, kedaKey)); err != nil {
		t.Errorf("client certificate from the client CA: %v", err)
	}
	if err := tryIsActive(t, addr, clientTLS(t, serverCA, nil, nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("no client certificate: %v, want Unavailable", err)
	}
	strangerCert, strangerKey := strangerCA.issue(t, "stranger", false)
	if err := tryIsActive(t, addr, clientTLS(t, serverCA, strangerCert, strangerKey)); status.Code(err) != codes.Unavailable {
		t.Errorf("client certificate from another CA: %v, want Unavailable", err)
	}
}

func TestServerTLSConfigErrors(t *testing.T) {
	dir := t.TempDir()
	serverCA := newCA(t, "server CA")
	certPEM, keyPEM := serverCA.issue(t, "openwebui-exporter", true)
	cert, key := writeFile(t, dir, "tls.crt", certPEM), writeFile(t, dir, "tls.key", keyPEM)
	notPEM := writeFile(t, dir, "not.pem", []byte("hello"))
	missing := filepath.Join(dir, "missing.pem")

	if c, err := keda.ServerTLSConfig(keda.TLSFiles{}); c != nil || err != nil {
		t.Errorf("no files: %v, %v; want plaintext", c, err)
	}
	for _, tc := range []struct {
		files keda.TLSFiles
		want  string
	}{
		{keda.TLSFiles{CertFile: cert}, "together"},
		{keda.TLSFiles{KeyFile: key}, "together"},
		{keda.TLSFiles{ClientCAFile: cert}, "together"},
		{keda.TLSFiles{CertFile: missing, KeyFile: key}, "missing.pem"},
		{keda.TLSFiles{CertFile: key, KeyFile: cert}, "certificate"},
		{keda.TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: missing}, "missing.pem"},
		{keda.TLSFiles{CertFile: cert, KeyFile: key, ClientCAFile: notPEM}, "no PEM certificate"},
	} {
		if _, err := keda.ServerTLSConfig(tc.files); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v; want an error about %q", tc.files, err, tc.want)
		}
	}
}
