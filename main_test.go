package main

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
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

// Any interval Open WebUI accepts, 0 to an hour, in seconds or as a
// duration (issue 22); usage mode refuses all but 0 and names the fix.
func TestParseStatusUpdateInterval(t *testing.T) {
	cases := []struct {
		in      string
		mode    openwebui.Mode
		want    time.Duration
		wantErr string
	}{
		{"0", openwebui.ModeUsage, 0, ""},
		{"0s", openwebui.ModeUsage, 0, ""},
		{"300", openwebui.ModeAdmin, 300 * time.Second, ""}, // as in Open WebUI's env
		{"500", openwebui.ModeAdmin, 500 * time.Second, ""},
		{"2.5", openwebui.ModeAdmin, 2500 * time.Millisecond, ""}, // Open WebUI parses a float
		{"5m", openwebui.ModeAdmin, 5 * time.Minute, ""},
		{"240s", openwebui.ModeAdmin, 240 * time.Second, ""}, // refused before issue 22
		{"1h", openwebui.ModeAdmin, time.Hour, ""},
		{"3600", openwebui.ModeAdmin, time.Hour, ""},
		{"3601", openwebui.ModeAdmin, 0, "want 0 to 3600 seconds"},
		{"1h1s", openwebui.ModeAdmin, 0, "must be between 0 and 1h0m0s"},
		{"-1", openwebui.ModeAdmin, 0, "want 0 to 3600 seconds"},
		{"-5s", openwebui.ModeAdmin, 0, "must be between 0 and 1h0m0s"},
		{"NaN", openwebui.ModeAdmin, 0, "want 0 to 3600 seconds"},
		{"five minutes", openwebui.ModeAdmin, 0, "want seconds (300) or a duration (5m)"},
		{"", openwebui.ModeAdmin, 0, "want seconds"},
		{"300", openwebui.ModeUsage, 0, "use --openwebui.count-mode=admin"},
		{"60", openwebui.ModeUsage, 0, "use --openwebui.count-mode=admin"},
	}
	for _, tc := range cases {
		got, err := parseStatusUpdateInterval(tc.in, tc.mode)
		if tc.wantErr == "" && (err != nil || got != tc.want) {
			t.Errorf("%q in %s mode: got (%s, %v), want %s", tc.in, tc.mode, got, err, tc.want)
		}
		if tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%q in %s mode: got (%s, %v), want the error %q", tc.in, tc.mode, got, err, tc.wantErr)
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

// TestParseBaseURLNeverShowsThePassword: a password with an unencoded '/',
// '?', '#' or '%' lands in the host, path, query or fragment, or makes the
// URL unparsable; url.Parse's errors quote such parts. No error may show
// any 3 characters of the password.
func TestParseBaseURLNeverShowsThePassword(t *testing.T) {
	const password = "Zq7/Wx#Kp9?Vb%Yt2"
	cases := []string{
		"http://admin:" + password + "@open-webui:8080",
		"http://admin:Zq7/Wx@open-webui:8080",
		"http://admin:Zq7#Wx@open-webui:8080",
		"http://admin:Zq7?Wx@open-webui:8080",
		"http://admin:Zq7%Wx@open-webui:8080",
		"http://admin:Zq7Wx:Kp9@open-webui:8080/api",
		"http://admin:12/Zq7Wx@open-webui:8080", // parses: host "admin:12", path "/Zq7Wx@open-webui:8080"
		"ftp://admin:Zq7Wx@open-webui",
	}
	for _, raw := range cases {
		_, err := parseBaseURL(raw)
		if err == nil {
			t.Errorf("parseBaseURL(%q): want an error", raw)
			continue
		}
		for _, piece := range []string{"Zq7", "Wx", "Kp9", "Vb", "Yt2"} {
			if strings.Contains(err.Error(), piece) {
				t.Errorf("parseBaseURL(%q): error %q shows %q of the password", raw, err, piece)
			}
		}
		if !strings.Contains(err.Error(), "percent-encode") && !strings.Contains(err.Error(), "without /api") && !strings.Contains(err.Error(), "with a host") {
			t.Errorf("parseBaseURL(%q): error %q does not say what to fix", raw, err)
		}
	}
}

// TestTelemetryPath: http.ServeMux panics on some patterns; the flag is
// checked first, and the error names it.
func TestTelemetryPath(t *testing.T) {
	for _, ok := range []string{"/metrics", "/custom/metrics", "/metrics/", "/m-1_2.3~x"} {
		if err := checkTelemetryPath(ok); err != nil {
			t.Errorf("checkTelemetryPath(%q): %v", ok, err)
		}
	}
	cases := []struct{ path, want string }{
		{"/a b", "must be a plain URL path"},
		{"/{", "must be a plain URL path"},
		{"/{x}", "must be a plain URL path"},
		{"/metrics/{$}", "must be a plain URL path"},
		{"GET /metrics", "must start with /"},
		{"metrics", "must start with /"},
		{"", "must start with /"},
		{"/a\tb", "must be a plain URL path"},
		{"/métriques", "must be a plain URL path"},
		{"/a?b", "must be a plain URL path"},
		{"/a#b", "must be a plain URL path"},
		{"/a%20b", "must be a plain URL path"},
		{"/a//b", "must not contain //"},
		{"/a/../b", "must not contain . or .."},
		{"/healthz", "must not be one of the exporter's other paths"},
		{"/", "must not be one of the exporter's other paths"},
	}
	for _, tc := range cases {
		err := checkTelemetryPath(tc.path)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("checkTelemetryPath(%q) = %v, want %q", tc.path, err, tc.want)
		}
	}
	// The paths do panic the mux, and accepted ones do not.
	for _, bad := range []string{"/a b", "/{"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("http.ServeMux accepted %q: the check is stricter than needed", bad)
				}
			}()
			http.NewServeMux().Handle(bad, http.NotFoundHandler())
		}()
	}
	cache := snapshot.New(snapshot.Config{})
	for _, ok := range []string{"/metrics", "/custom/metrics", "/metrics/", "/m-1_2.3~x"} {
		if _, err := newHandler(cache, nil, ok, log.NewNopLogger()); err != nil {
			t.Errorf("newHandler(%q): %v", ok, err)
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
		src, err := tokenSource(file, log.NewNopLogger())
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
	// A Secret can be mounted a moment after the container starts: a missing
	// file is not fatal; the token is read once it is there.
	t.Run("file appears later", func(t *testing.T) {
		t.Setenv("TOKEN", "")
		os.Unsetenv("TOKEN")
		late := filepath.Join(t.TempDir(), "token")
		src, err := tokenSource(late, log.NewNopLogger())
		if err != nil {
			t.Fatalf("a missing token file stops start-up: %v", err)
		}
		if _, err := src(); err == nil || !strings.Contains(err.Error(), "--openwebui.token-file: open "+late+": no such file") {
			t.Errorf("before the file exists: err = %v, want one naming the flag and the file", err)
		}
		if err := os.WriteFile(late, []byte("sk-0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if tok, err := src(); err != nil || tok != "sk-0123456789abcdef0123456789abcdef" {
			t.Errorf("once the file exists: %q, %v", tok, err)
		}
	})
	t.Run("env", func(t *testing.T) {
		t.Setenv("TOKEN", "eyJhbGciOiJIUzI1NiJ9.e30.sig")
		if _, err := tokenSource("", log.NewNopLogger()); err != nil {
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
	}
	for _, tc := range errCases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setEnv {
				t.Setenv("TOKEN", tc.env)
			} else {
				t.Setenv("TOKEN", "")
				os.Unsetenv("TOKEN")
			}
			_, err := tokenSource(tc.file, log.NewNopLogger())
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
		{5 * time.Second, openwebui.ModeAdmin, true, ""},
		// Under 5 s the clock tolerance (a quarter, at least 2 s) would be
		// most of the timeout (issue 19, item 6).
		{time.Second, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 5s and 24h, got 1s"},
		{15 * time.Minute, openwebui.ModeUsage, false, "--activity.idle-timeout needs --openwebui.count-mode=admin"},
		{500 * time.Millisecond, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 5s and 24h, got 500ms"},
		{-time.Minute, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 5s and 24h"},
		{25 * time.Hour, openwebui.ModeAdmin, false, "--activity.idle-timeout must be 0 (off) or between 5s and 24h"},
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
