package openwebui_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

func newClient(t *testing.T, h http.Handler, clock *fakeopenwebui.Clock, mode openwebui.Mode, token func() string) *openwebui.Client {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	base, _ := url.Parse(srv.URL)
	return openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: mode, Now: clock.Now,
		Token: func() (string, error) { return token(), nil }})
}

// A JWT whose stamp cannot be confirmed must not be subtracted on trust on
// the next fetch either. Under Open WebUI's write throttle that is what a
// stamp dropped looks like: not a 503 (issue 22), an overcount by one.
func TestUnconfirmedStampIsCheckedAgain(t *testing.T) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now})
	jwt := fake.IssueJWT(fake.AddUser("exporter", "user"))
	fake.Touch(fake.AddUser("alice", "user"))
	neverActive := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/active") {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"active":false}`)
			return
		}
		fake.ServeHTTP(w, r)
	})
	client := newClient(t, neverActive, clock, openwebui.ModeUsage, func() string { return jwt })
	for i := range 3 {
		n, err := client.Count(context.Background())
		if err != nil || n.ActiveUsers != 2 {
			t.Fatalf("fetch %d: got (%d, %v), want 2 (alice and the exporter, not subtracted on trust)", i+1, n.ActiveUsers, err)
		}
		clock.Advance(5 * time.Second)
	}
}

// A token rotated to another account is a new identity at once.
func TestRotatedTokenRelearnsTheAccount(t *testing.T) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.6.30", Now: clock.Now})
	a := fake.AddUser("exporter-a", "user")
	keyA, keyB := fake.IssueAPIKey(a), fake.IssueAPIKey(fake.AddUser("exporter-b", "user"))
	fake.Touch(a) // account A also has a browser tab open
	fake.Touch(fake.AddUser("alice", "user"))
	token := keyA
	client := newClient(t, fake, clock, openwebui.ModeUsage, func() string { return token })
	for _, step := range []struct {
		token string
		want  int
	}{{keyA, 1}, {keyB, 2}} { // with B's token, A is somebody else
		token = step.token
		if n, err := client.Count(context.Background()); err != nil || n.ActiveUsers != step.want {
			t.Fatalf("got (%d, %v), want %d", n.ActiveUsers, err, step.want)
		}
	}
}

// In admin mode, a user who becomes active while later pages are read moves
// to the top of page 1: the count must still include them.
func TestAdminModeCatchesWhoMovesUpWhilePaging(t *testing.T) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Now: clock.Now})
	key := fake.IssueAPIKey(fake.AddUser("exporter", "admin"))
	var humans []string
	for i := range 40 {
		id := fake.AddUser(fmt.Sprintf("h%02d", i), "user")
		humans = append(humans, id)
	}
	for i, id := range humans[:35] { // 35 active, spread over the window
		fake.SetLastActive(id, clock.Now().Add(-time.Duration(100+i)*time.Second))
	}
	late := humans[36] // inactive; becomes active while page 2 is read
	arrives := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/users/" && r.URL.Query().Get("page") == "2" {
			fake.Touch(late)
		}
		fake.ServeHTTP(w, r)
	})
	client := newClient(t, arrives, clock, openwebui.ModeAdmin, func() string { return key })
	if n, err := client.Count(context.Background()); err != nil || n.ActiveUsers != 36 {
		t.Fatalf("got (%d, %v), want 36 (35 + the one who arrived while paging)", n.ActiveUsers, err)
	}
}

// Server text is scrubbed of the token before it is shortened, so no prefix
// of the token survives a cut.
func TestTokenScrubbedBeforeTruncation(t *testing.T) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	const key = "sk-0123456789abcdef0123456789abcdef"
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/version" {
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"version":"0.11.0"}`)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"detail":"%s%s"}`, strings.Repeat("x", 290), key)
	})
	client := newClient(t, echo, clock, openwebui.ModeUsage, func() string { return key })
	_, err := client.Count(context.Background())
	if err == nil || strings.Contains(err.Error(), key[:8]) {
		t.Fatalf("error %v shows a prefix of the token", err)
	}
}

// Errors name routes, not paths: the exporter's own user id appears in no
// log line and no 503 body.
func TestErrorsDoNotShowTheOwnUserID(t *testing.T) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now})
	self := fake.AddUser("exporter", "user")
	jwt := fake.IssueJWT(self)
	failing := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/active") {
			if !strings.Contains(r.URL.Path, self) {
				t.Errorf("asked %s, want the own id in the path", r.URL.Path)
			}
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		fake.ServeHTTP(w, r)
	})
	client := newClient(t, failing, clock, openwebui.ModeUsage, func() string { return jwt })
	_, err := client.Count(context.Background())
	if err == nil || !strings.Contains(err.Error(), "GET /api/v1/users/{id}/active: HTTP 502") || strings.Contains(err.Error(), self) {
		t.Fatalf("error = %v, want the route with {id} and not the id %s", err, self)
	}
}

// The least-privilege key the docs give (a user account, restricted to
// API_KEYS_ALLOWED_ENDPOINTS=/api/usage,/api/v1/auths,/api/v1/users) counts
// in both modes' versions; without /api/v1/users, usage mode on 0.6.41+
// (which asks /api/v1/users/{id}/active about its own account) fails with
// an error that names the path to add, never a count.
func TestLeastPrivilegeKey(t *testing.T) {
	for _, tc := range []struct {
		version string
		allowed []string
		wantErr string
	}{
		{"0.11.0", []string{"/api/usage", "/api/v1/auths", "/api/v1/users"}, ""},
		{"0.6.36", []string{"/api/usage", "/api/v1/auths", "/api/v1/users"}, ""},
		{"0.8.0", []string{"/api/usage", "/api/v1/auths"}, "/api/usage,/api/v1/auths,/api/v1/users"},
		{"0.11.0", []string{"/api/usage", "/api/v1/auths"}, "/api/usage,/api/v1/auths,/api/v1/users"},
	} {
		t.Run(fmt.Sprintf("%s/%s", tc.version, strings.Join(tc.allowed, ",")), func(t *testing.T) {
			clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
			fake := fakeopenwebui.New(fakeopenwebui.Config{Version: tc.version, Now: clock.Now, APIKeyAllowedEndpoints: tc.allowed})
			key := fake.IssueAPIKey(fake.AddUser("exporter", "user"))
			fake.Touch(fake.AddUser("alice", "user"))
			client := newClient(t, fake, clock, openwebui.ModeUsage, func() string { return key })
			n, err := client.Count(context.Background())
			switch {
			case tc.wantErr == "" && (err != nil || n.ActiveUsers != 1):
				t.Errorf("got (%d, %v), want alice", n.ActiveUsers, err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("got (%d, %v), want an error naming %s", n.ActiveUsers, err, tc.wantErr)
			}
		})
	}
}
