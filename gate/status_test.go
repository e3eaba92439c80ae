package gate

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestStatusEndpoint(t *testing.T) {
	sb := newSleepyBackend(t, nil)
	g := startGate(t, Config{Transport: sb.transport(), Backends: []BackendConfig{backendURL(t, "small="+sb.url())}, HoldTimeout: time.Minute})
	eventually(t, "asleep", func() bool { return stats(g.Gate, "small").State == StateAsleep })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sendAsync(ctx, http.DefaultClient, "POST", g.url+"/small/api/chat", strings.NewReader("{}"), nil)
	eventually(t, "held", func() bool { return queued(g.Gate, "small") == 1 })

	code, hdr, body := do(t, "GET", g.url+"/_gate/status", nil, nil)
	if code != 200 || hdr.Get("Content-Type") != "application/json; charset=utf-8" {
		t.Fatalf("status: %d %s", code, hdr.Get("Content-Type"))
	}
	var raw struct {
		Backends []map[string]any `json:"backends"`
	}
	if err := json.Unmarshal([]byte(body), &raw); err != nil || len(raw.Backends) != 1 {
		t.Fatalf("status %s: %v", body, err)
	}
	got := raw.Backends[0]
	for _, k := range []string{"name", "prefix", "state", "since", "waiting_seconds", "held", "in_flight", "hold_timeout_seconds", "models", "reason"} {
		if _, ok := got[k]; !ok {
			t.Errorf("status lacks %q: %s", k, body)
		}
	}
	if got["name"] != "small" || got["prefix"] != "/small/" || got["state"] != "asleep" || got["held"] != 1.0 ||
		got["hold_timeout_seconds"] != 60.0 || got["reason"] != "connection refused" || got["waiting_seconds"].(float64) <= 0 {
		t.Errorf("status: %s", body)
	}
	if _, err := time.Parse(time.RFC3339, got["since"].(string)); err != nil {
		t.Errorf("since: %v", err)
	}
	for _, tc := range []struct {
		method, path string
		want         int
	}{{"GET", "/_gate/nope", 404}, {"POST", "/_gate/status", 405}} {
		if code, _, _ := do(t, tc.method, g.url+tc.path, nil, nil); code != tc.want {
			t.Errorf("%s %s: %d, want %d", tc.method, tc.path, code, tc.want)
		}
	}
}
