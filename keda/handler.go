// Package keda serves what KEDA's scalers read: GET /active_users for the
// metrics-api trigger.
package keda

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
)

// Source is where the handler gets what KEDA gets: demand.Decider.
type Source interface {
	// Value is the value for backend ("" when the trigger names none).
	Value(ctx context.Context, backend string) (int, error)
	// Check says whether backend may be asked for (trigger metadata is
	// checked with it before any value is read).
	Check(backend string) error
}

// ActiveUsersHandler answers GET /active_users with {"active_users":N},
// byte for byte what the earlier single-file scaler sent, so a metrics-api
// trigger with valueLocation "active_users" keeps working.
//
// When the count is unknown it answers 503 with {"error":"..."}: KEDA counts
// that as a failure and applies its fallback. It never answers 0 then, since
// 0 would scale Ollama to zero under its users.
//
// ?backend=NAME answers for one of the gate's backends (see package
// demand); a name the gate does not serve is a 400 that lists the names.
// Other query parameters are ignored, as the old scaler ignored them.
func ActiveUsersHandler(source Source, logger log.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, r, http.StatusMethodNotAllowed, errorBody("method "+r.Method+" not allowed; use GET"))
			return
		}
		backends := r.URL.Query()["backend"]
		if len(backends) > 1 {
			writeJSON(w, r, http.StatusBadRequest, errorBody("the backend parameter is given "+strconv.Itoa(len(backends))+" times; give it once"))
			return
		}
		var backend string
		if len(backends) == 1 {
			backend = backends[0]
		}
		n, err := source.Value(r.Context(), backend)
		if errors.Is(err, demand.ErrNoSuchBackend) {
			writeJSON(w, r, http.StatusBadRequest, errorBody(err.Error()))
			return
		}
		if err != nil {
			level.Debug(logger).Log("msg", "answering /active_users with 503", "backend", backend, "err", err)
			writeJSON(w, r, http.StatusServiceUnavailable, errorBody(err.Error()))
			return
		}
		// With the idle-tab policy on, KEDA gets the engaged users.
		writeJSON(w, r, http.StatusOK, []byte(`{"active_users":`+strconv.Itoa(n)+`}`))
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
