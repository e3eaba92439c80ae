package collector_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/openwebui-exporter/openwebui_exporter/collector"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

type warmSource struct{ s snapshot.Snapshot }

func (w warmSource) Get(context.Context) snapshot.Snapshot { return w.s }
func (w warmSource) TTL() time.Duration                    { return time.Minute }
func (w warmSource) Timeout() time.Duration                { return time.Second }

// BenchmarkCollect is one scrape of the collector from a warm cache,
// gathered and encoded by a registry as promhttp would.
func BenchmarkCollect(b *testing.B) {
	now := time.Now()
	src := warmSource{snapshot.Snapshot{Count: openwebui.Count{ActiveUsers: 3, TotalUsers: 40, Version: "0.11.0"},
		LastSuccess: now, FetchedAt: now, Duration: 3 * time.Millisecond}}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collector.New(src))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
