// Package keda serves what KEDA's scalers read: GET /active_users for the
// metrics-api trigger.
package keda

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// Source is where the handler gets the count: the shared snapshot cache.
type Source interface {
	Get(context.Context) snapshot.Snapshot
}

// ActiveUsersHandler answers GET /active_users with {"active_users":N},
// byte for byte what the earlier single-file scaler sent, so a metrics-api
// trigger with valueLocation "active_users" keeps working.
//
// When the count is unknown it answers 503 with {"error":"..."}: KEDA counts
// that as a failure and applies its fallback. It never answers 0 then, since
// 0 would scale Ollama to zero under its users.
func ActiveUsersHandler(source Source, logger log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, r, http.StatusMethodNotAllowed, errorBody("method "+r.Method+" not allowed; use GET"))
			return
		}
		s := source.Get(r.Context())
		if s.Err != nil {
			level.Debug(logger).Log("msg", "answering /active_users with 503", "err", s.Err)
			writeJSON(w, r, http.StatusServiceUnavailable, errorBody("active user count unknown: "+s.Err.Error()))
			return
		}
		// With the idle-tab policy on, KEDA gets the engaged users.
		writeJSON(w, r, http.StatusOK, []byte(`{"active_users":`+strconv.Itoa(s.Scaling())+`}`))
	})
}

// errorBody is {"error":msg}, without HTML escaping: people read it in
// KEDA's events and logs, where "\u003e" would stand for ">".
func errorBody(msg string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(struct { // one string: encoding cannot fail
		Error string `json:"error"`
	}{msg})
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}

func writeJSON(w http.ResponseWriter, r *http.Request, status int, body []byte) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		w.Write(body)
	}
}
