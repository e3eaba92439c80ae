package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

func TestParseTTL(t *testing.T) {
	cases := []struct {
		in      string
		want    time.Duration
		wantErr bool
	}{
		{"60", time.Minute, false}, // the old scaler's CACHE_TIMEOUT
		{"60s", time.Minute, false},
		{"1m", time.Minute, false},
		{"0", 0, false},
		{"0.5", 500 * time.Millisecond, false},
		{" 30 ", 30 * time.Second, false},
		{"-1", 0, true},
		{"-5s", 0, true},
		{"abc", 0, true},
		{"", 0, true},
		{"100000", 0, true},
		{"NaN", 0, true},
		{"Inf", 0, true},
	}
	for _, tc := range cases {
		got, err := parseTTL(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("parseTTL(%q) = %s, %v; want %s, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestParseBaseURL(t *testing.T) {
	for _, ok := range []string{"http://open-webui:8080", "https://chat.example.com/", "http://127.0.0.1:3000/prefix"} {
		if _, err := parseBaseURL(ok); err != nil {
			t.Errorf("parseBaseURL(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "open-webui:8080", "ftp://x", "http://", "http://x/api", "http://x/api/", "http://x/?a=b", "http://x/#f", "http://user:secret@x:8080/api"} {
		_, err := parseBaseURL(bad)
		if err == nil {
			t.Errorf("parseBaseURL(%q): want an error", bad)
		} else if strings.Contains(err.Error(), "secret") {
			t.Errorf("parseBaseURL(%q): error %q shows the password", bad, err)
		}
	}
}

func TestListenAddressFromPORT(t *testing.T) {
	cases := []struct {
		port    string
		set     bool
		want    string
		wantErr bool
	}{
		{"", false, ":8080", false},
		{"9000", true, ":9000", false},
		{"0", true, ":8080", true},
		{"70000", true, ":8080", true},
		{"http", true, ":8080", true},
	}
	for _, tc := range cases {
		if tc.set {
			t.Setenv("PORT", tc.port)
		} else {
			t.Setenv("PORT", "")
			os.Unsetenv("PORT")
		}
		_, err := listenPort()
		if got := defaultListenAddress(); got != tc.want || (err != nil) != tc.wantErr {
			t.Errorf("PORT=%q: address %q, error %v; want %q, error %v", tc.port, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestTokenSource(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "token")
	if err := os.WriteFile(file, []byte("sk-0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Run("file", func(t *testing.T) {
		t.Setenv("TOKEN", "")
		os.Unsetenv("TOKEN")
		src, err := tokenSource(file)
		if err != nil {
			t.Fatal(err)
		}
		if tok, _ := src(); tok != "sk-0123456789abcdef0123456789abcdef" {
			t.Errorf("token = %q", tok)
		}
		// A rotated Secret is read on the next fetch.
		if err := os.WriteFile(file, []byte("sk-ffffffffffffffffffffffffffffffff"), 0o600); err != nil {
			t.Fatal(err)
		}
		if tok, _ := src(); tok != "sk-ffffffffffffffffffffffffffffffff" {
			t.Errorf("after rotation: token = %q", tok)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv("TOKEN", "eyJhbGciOiJIUzI1NiJ9.e30.sig")
		if _, err := tokenSource(""); err != nil {
			t.Error(err)
		}
	})
	errCases := []struct {
		name, env, file, want string
		setEnv                bool
	}{
		{"none", "", "", "no Open WebUI token: set env TOKEN or --openwebui.token-file", false},
		{"both", "sk-x", file, "both env TOKEN and --openwebui.token-file are set", true},
		{"empty env", "", "", "env TOKEN: the token is empty", true},
		{"missing file", "", filepath.Join(dir, "nope"), "--openwebui.token-file: open", false},
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setEnv {
				t.Setenv("TOKEN", tc.env)
			} else {
				t.Setenv("TOKEN", "")
				os.Unsetenv("TOKEN")
			}
			_, err := tokenSource(tc.file)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestIdleTimeoutFlag(t *testing.T) {
	cases := []struct {
		timeout time.Duration
		mode    openwebui.Mode
		on      bool
		wantErr string
	}{
		{0, openwebui.ModeUsage, false, ""}, // the default: off, changes nothing
		{0, openwebui.ModeAdmin, false, ""},
		{15 * time.Minute, openwebui.ModeAdmin, true, ""},
		{time.Second, openwebui.ModeAdmin, true, ""},
		{15 * time.Minute, openwebui.ModeUsage, false, "--activity.idle-timeout needs --openwebui.count-mode=admin"},
		{500 * time.Millisecond, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 1s and 24h, got 500ms"},
		{-time.Minute, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 1s and 24h"},
		{25 * time.Hour, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 1s and 24h"},
	}
	for _, tc := range cases {
		p, err := idlePolicy(tc.timeout, tc.mode)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%s %s: got %v, want an error containing %q", tc.timeout, tc.mode, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("%s %s: %v", tc.timeout, tc.mode, err)
		case (p != nil) != tc.on || (p != nil && p.Timeout() != tc.timeout):
			t.Errorf("%s %s: policy %v, want on=%v", tc.timeout, tc.mode, p, tc.on)
		}
	}
}
