package main

import (
	"strings"
	"testing"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
)

func TestGateFlags(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		wantOff bool
		wantErr string // substring; "" for none
	}{
		{name: "off by default", wantOff: true},
		{name: "one backend", args: []string{"--gate.listen-address=127.0.0.1:0", "--gate.backend=http://ollama:11434"}},
		{name: "a backend needs the listen address", args: []string{"--gate.backend=http://ollama:11434"}, wantErr: "need --gate.listen-address"},
		{name: "peers need the listen address", args: []string{"--gate.peers=gate:11434"}, wantErr: "need --gate.listen-address"},
		{name: "the listen address needs a backend", args: []string{"--gate.listen-address=:11434"}, wantErr: "needs --gate.backend"},
		{name: "hold timeout too short", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.hold-timeout=10ms"}, wantErr: "--gate.hold-timeout must be between 1s and 24h, got 10ms"},
		{name: "hold timeout too long", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.hold-timeout=25h"}, wantErr: "--gate.hold-timeout must be between 1s and 24h"},
		{name: "max held 0", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.max-held=0"}, wantErr: "--gate.max-held must be at least 1, got 0"},
		{name: "max held bytes tiny", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.max-held-bytes=10B"}, wantErr: "--gate.max-held-bytes must be at least 1KiB"},
		{name: "peers without a port", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.peers=gate-headless"}, wantErr: "--gate.peers: want HOST:PORT"},
		{name: "drain timeout needs the listen address", args: []string{"--gate.drain-timeout=1m"}, wantErr: "need --gate.listen-address"},
		{name: "drain timeout negative", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.drain-timeout=-1s"}, wantErr: "--gate.drain-timeout must be between 0 (--gate.hold-timeout plus 30s) and 25h, got -1s"},
		{name: "drain timeout too long", args: []string{"--gate.listen-address=:0", "--gate.backend=http://o:1", "--gate.drain-timeout=26h"}, wantErr: "--gate.drain-timeout must be between"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			app := kingpin.New("test", "")
			f := addGateFlags(app)
			if _, err := app.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			g, err := newGate(f, nil, log.NewNopLogger())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("newGate = %v; want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (g == nil) != tc.wantOff {
				t.Errorf("gate built = %v, want off = %v", g != nil, tc.wantOff)
			}
		})
	}
}

func TestGateFlagDefaults(t *testing.T) {
	app := kingpin.New("test", "")
	f := addGateFlags(app)
	if _, err := app.Parse(nil); err != nil {
		t.Fatal(err)
	}
	if got := f.holdTimeout.String(); got != "5m0s" {
		t.Errorf("--gate.hold-timeout default = %s, want 5m0s", got)
	}
	if *f.maxHeld != 1000 || int64(*f.maxHeldBytes) != 256<<20 {
		t.Errorf("bounds default = %d requests, %d bytes; want 1000, 256MiB", *f.maxHeld, int64(*f.maxHeldBytes))
	}
}

// The drain outlasts a whole hold by default: a request held just before
// SIGTERM can wait its hold timeout and still stream a short answer.
func TestGateDrainTimeout(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want time.Duration
	}{
		{nil, 5*time.Minute + 30*time.Second},
		{[]string{"--gate.hold-timeout=10m"}, 10*time.Minute + 30*time.Second},
		{[]string{"--gate.drain-timeout=350s"}, 350 * time.Second},
	} {
		app := kingpin.New("test", "")
		f := addGateFlags(app)
		if _, err := app.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		if got := f.drain(); got != tc.want {
			t.Errorf("%v: drain timeout %s, want %s", tc.args, got, tc.want)
		}
	}
}
