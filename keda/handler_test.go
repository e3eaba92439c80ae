package keda

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/go-kit/log"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

type staticSource snapshot.Snapshot

func (s staticSource) Get(context.Context) snapshot.Snapshot { return snapshot.Snapshot(s) }
func (s staticSource) Refresh(context.Context, time.Duration) snapshot.Snapshot {
	return snapshot.Snapshot(s)
}

// decider is what the handler reads: the demand rules over a fixed count.
func (s staticSource) decider() *demand.Decider { return demand.New(s, nil) }

func TestActiveUsersHandler(t *testing.T) {
	known := staticSource{Count: openwebui.Count{ActiveUsers: 3}}
	zero := staticSource{Count: openwebui.Count{ActiveUsers: 0}}
	unknown := staticSource{Err: errors.New(`GET /api/usage: HTTP 403 "Access denied.": see Admin Settings > General`)}
	cases := []struct {
		name       string
		source     staticSource
		method     string
		wantStatus int
		wantBody   string
		wantAllow  string
	}{
		{"count", known, http.MethodGet, 200, `{"active_users":3}`, ""},
		{"nobody", zero, http.MethodGet, 200, `{"active_users":0}`, ""},
		{"head", known, http.MethodHead, 200, ``, ""},
		{"unknown count is 503, never 0", unknown, http.MethodGet, 503,
			`{"error":"active user count unknown: GET /api/usage: HTTP 403 \"Access denied.\": see Admin Settings > General"}`, ""},
		{"post", known, http.MethodPost, 405, `{"error":"method POST not allowed; use GET"}`, "GET, HEAD"},
		{"delete", known, http.MethodDelete, 405, `{"error":"method DELETE not allowed; use GET"}`, "GET, HEAD"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			ActiveUsersHandler(tc.source.decider(), log.NewNopLogger()).ServeHTTP(rec, httptest.NewRequest(tc.method, "/active_users", nil))
			if rec.Code != tc.wantStatus {
				t.Errorf("status = %d, want %d", rec.Code, tc.wantStatus)
			}
			if got := rec.Body.String(); got != tc.wantBody {
				t.Errorf("body = %s, want %s", got, tc.wantBody)
			}
			if got := rec.Header().Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", got)
			}
			if got := rec.Header().Get("Allow"); got != tc.wantAllow {
				t.Errorf("Allow = %q, want %q", got, tc.wantAllow)
			}
		})
	}
}
