package gate

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// Open WebUI builds every call as f"{url}/api/...", so a base URL with a
// trailing slash doubles it; a named backend is asked for the plain path.
func TestNamedPrefixToleratesOpenWebUIsDoubleSlash(t *testing.T) {
	var got []string
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = append(got, r.URL.RequestURI())
		io.WriteString(w, `{"models":[]}`)
	}))
	defer backend.Close()
	u, _ := url.Parse(backend.URL)
	g, err := New(Config{Backends: []BackendConfig{{Name: "big", URL: u, Wake: WakeArrival}}, HoldTimeout: 1e9, MaxHeld: 1, MaxHeldBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	g.mu.Lock()
	g.setState(g.byName["big"], StateUp, "")
	g.mu.Unlock()
	front := httptest.NewServer(g)
	defer front.Close()
	for _, path := range []string{"/big/api/tags", "/big//api/tags", "/big//api/tags?x=1"} {
		resp, err := http.Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}
	want := []string{"/api/tags", "/api/tags", "/api/tags?x=1"}
	if len(got) != len(want) {
		t.Fatalf("backend saw %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d reached the backend as %q, want %q", i, got[i], want[i])
		}
	}
}

func TestUnknownPrefixListsThePrefixes(t *testing.T) {
	g, err := New(Config{Backends: []BackendConfig{backendURL(t, "small=http://127.0.0.1:1"), backendURL(t, "big=http://127.0.0.1:1")}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path   string
		openai bool
	}{{"/api/tags", false}, {"/", false}, {"/huge/api/chat", false}, {"/v1/models", true}} {
		w := httptest.NewRecorder()
		g.ServeHTTP(w, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if w.Code != http.StatusNotFound {
			t.Errorf("%s: %d, want 404", tc.path, w.Code)
		}
		if msg := errorMessage(t, w.Body.String(), tc.openai); !strings.Contains(msg, "/small/, /big/") {
			t.Errorf("%s: %q does not list the prefixes", tc.path, msg)
		}
	}
}
