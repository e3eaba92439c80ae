package main

import (
	"strings"
	"testing"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

func TestKEDAFlags(t *testing.T) {
	cache := snapshot.New(snapshot.Config{})
	for _, tc := range []struct {
		args []string
		want string // "" = no error
		on   bool
	}{
		{nil, "", false},
		{[]string{"--keda.listen-address=127.0.0.1:0"}, "", true},
		{[]string{"--keda.listen-address=127.0.0.1:0", "--keda.push-interval=100ms"}, "--keda.push-interval must be at least 200ms", false},
		{[]string{"--keda.tls.cert-file=x"}, "need --keda.listen-address", false},
		{[]string{"--keda.listen-address=127.0.0.1:0", "--keda.tls.cert-file=x"}, "must be set together", false},
		{[]string{"--keda.listen-address=127.0.0.1:0", "--keda.tls.cert-file=/nonexistent", "--keda.tls.key-file=/nonexistent"}, "--keda.tls.cert-file", false},
		{[]string{"--keda.listen-address=256.0.0.1:1"}, "--keda.listen-address", false},
	} {
		app := kingpin.New("test", "")
		f := addKEDAFlags(app)
		if _, err := app.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		server, err := listenKEDA(f, demand.New(cache, nil), log.NewNopLogger())
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%v: %v; want error %q", tc.args, err, tc.want)
		}
		if (server != nil) != tc.on {
			t.Errorf("%v: server %v, want on=%v", tc.args, server, tc.on)
		}
		if server != nil {
			server.Shutdown(t.Context())
		}
	}
}
