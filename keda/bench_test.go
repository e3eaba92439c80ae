package keda

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-kit/log"

	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

func BenchmarkActiveUsersHandler(b *testing.B) {
	h := ActiveUsersHandler(staticSource{Count: openwebui.Count{ActiveUsers: 3}}.decider(), log.NewNopLogger())
	req := httptest.NewRequest(http.MethodGet, "/active_users", nil)
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if rec.Code != 200 {
			b.Fatal(rec.Code)
		}
	}
}
