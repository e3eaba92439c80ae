// Package wiring holds the wiring the exporter's main and the demo
// (cmd/demo) share: the logger and the HTTP endpoints.
package wiring

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"

	"github.com/openwebui-exporter/openwebui_exporter/collector"
	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// Name is the exporter's name in its build info metric and start-up line.
const Name = "openwebui_exporter"

// NewHandler serves every HTTP endpoint from the one shared cache and the
// one decision of what KEDA gets (decider); g is the wake gate, nil when it
// is off.
func NewHandler(cache *snapshot.Cache, decider *demand.Decider, g *gate.Gate, token func() (string, error), telemetryPath string, logger log.Logger) (http.Handler, error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collector.New(cache),
		versioncollector.NewCollector(Name),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	if g != nil {
		registry.MustRegister(collector.NewGate(g, decider, cache.Timeout()), collector.NewGateReplicas(g))
	}
	mux := http.NewServeMux()
	mux.Handle(telemetryPath, promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: stdLogger{logger}}))
	mux.Handle("/active_users", keda.ActiveUsersHandler(decider, logger))
	// Liveness and readiness say whether the exporter can answer, not whether
	// Open WebUI can: an outage must reach KEDA and Prometheus as a 503 and
	// openwebui_up 0, not as a restarted or unreachable exporter.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		// token waits for the file at most openwebui.TokenReadTimeout, and
		// not at all while an earlier read is overdue.
		if _, err := token(); err != nil {
			http.Error(w, "cannot read the Open WebUI token: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "Open WebUI Exporter",
		Description: "Active users of Open WebUI, for Prometheus and KEDA",
		Version:     version.Info(),
		Links: []web.LandingLinks{
			{Address: telemetryPath, Text: "Metrics"},
			{Address: "/active_users", Text: "Active users", Description: "for KEDA's metrics-api trigger"},
			{Address: "/healthz", Text: "Liveness"},
			{Address: "/readyz", Text: "Readiness"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("building the landing page: %w", err)
	}
	mux.Handle("/", landing)
	return mux, nil
}

// stdLogger adapts the go-kit logger for promhttp's error log.
type stdLogger struct{ l log.Logger }

func (s stdLogger) Println(v ...any) {
	msg := fmt.Sprint(v...)
	if strings.HasPrefix(msg, "error encoding and sending metric family") {
		// The client went away mid-answer: its business, not an exporter error.
		level.Debug(s.l).Log("msg", msg)
		return
	}
	level.Error(s.l).Log("msg", msg)
}
