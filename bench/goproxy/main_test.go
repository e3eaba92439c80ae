package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// Each request goes to the next backend in turn, with its path, query and
// body unchanged, and the backend's answer comes back unchanged.
func TestRoundRobin(t *testing.T) {
	var targets []*url.URL
	for _, name := range []string{"a", "b", "c"} {
		s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			_, _ = io.WriteString(w, name+" "+r.URL.RequestURI()+" "+string(body))
		}))
		defer s.Close()
		u, _ := url.Parse(s.URL)
		targets = append(targets, u)
	}
	proxy := httptest.NewServer(newProxy(targets))
	defer proxy.Close()
	var got []string
	for range 4 {
		res, err := http.Post(proxy.URL+"/api/chat?x=1", "application/json", strings.NewReader(`{"model":"m"}`))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		got = append(got, string(body))
	}
	want := []string{`a /api/chat?x=1 {"model":"m"}`, `b /api/chat?x=1 {"model":"m"}`, `c /api/chat?x=1 {"model":"m"}`, `a /api/chat?x=1 {"model":"m"}`}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("answers\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestBadArguments(t *testing.T) {
	for _, args := range [][]string{nil, {"not a url"}, {"http://"}} {
		if err := run("127.0.0.1:0", args); err == nil {
			t.Errorf("run(%q) gave no error", args)
		}
	}
}
