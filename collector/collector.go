// Package collector exposes Open WebUI's active users as Prometheus metrics.
package collector

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/model"

	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

const namespace = "openwebui"

// Source is where the collector gets its numbers: the shared snapshot cache.
type Source interface {
	Get(context.Context) snapshot.Snapshot
	TTL() time.Duration
	// Timeout bounds one fetch; Collect waits no longer than it (plus a
	// second) for the count.
	Timeout() time.Duration
}

// Collector is a prometheus.Collector that builds const metrics from the
// current snapshot on every Collect.
type Collector struct {
	source Source

	up             *prometheus.Desc
	activeUsers    *prometheus.Desc
	engagedUsers   *prometheus.Desc
	users          *prometheus.Desc
	scrapeDuration *prometheus.Desc
	versionInfo    *prometheus.Desc
	lastSuccess    *prometheus.Desc
	skippedRows    *prometheus.Desc
	writeInterval  *prometheus.Desc
}

// New returns a Collector reading from source.
func New(source Source) *Collector {
	cached := " Cached for up to " + model.Duration(source.TTL()).String() + "."
	return &Collector{
		source: source,
		up: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "up"),
			"1 if the latest fetch from Open WebUI succeeded, else 0."+cached, nil, nil),
		activeUsers: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "active_users"),
			"Users active in Open WebUI within the last 180 s, not counting the exporter's own account. Absent while the count is unknown; may be up to --cache.max-stale old while Open WebUI fails (see openwebui_last_success_timestamp_seconds)."+cached, nil, nil),
		engagedUsers: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "engaged_users"),
			"Active users who arrived or wrote a chat message within --activity.idle-timeout, not counting the exporter's own account; what KEDA scales by. Only with the idle-tab policy on; absent while the count is unknown."+cached, nil, nil),
		users: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "users"),
			"Registered Open WebUI users (admin counting mode only)."+cached, nil, nil),
		scrapeDuration: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "scrape_duration_seconds"),
			"How long the latest fetch from Open WebUI took."+cached, nil, nil),
		versionInfo: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "version_info"),
			"Open WebUI's version, from /api/version; always 1."+cached, []string{"version"}, nil),
		lastSuccess: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "last_success_timestamp_seconds"),
			"When the count now served was fetched from Open WebUI, in seconds since the epoch; alert on time() minus this.", nil, nil),
		skippedRows: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "skipped_rows_total"),
			"Rows of Open WebUI's answers skipped as unreadable (a chat's updated_at in milliseconds, an analytics entry of the wrong shape), by reason; one user's bad row does not fail the count. Only with the idle-tab policy.", []string{"reason"}, nil),
		writeInterval: prometheus.NewDesc(prometheus.BuildFQName(namespace, "", "activity_write_interval_seconds"),
			"The interval of Open WebUI's activity-write throttle (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL) the count assumed: --openwebui.status-update-interval, or what the exporter saw of its own writes if longer (3600 while it sees the throttle but cannot measure it). Admin mode counts users written within 180 s plus this; usage mode, only once it saw a throttle, answers its largest count of the last 180 s plus this."+cached, nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.activeUsers
	ch <- c.engagedUsers
	ch <- c.users
	ch <- c.scrapeDuration
	ch <- c.versionInfo
	ch <- c.lastSuccess
	ch <- c.skippedRows
	ch <- c.writeInterval
}

// Collect implements prometheus.Collector. The count is left out, never sent
// as 0, when it is unknown: 0 would tell KEDA to turn the GPUs off.
// Label values come from Open WebUI: a metric client_golang refuses (say,
// a label that is not UTF-8) is left out, never a panic, so that /metrics
// always answers 200.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	// promhttp gives Collect no context: bound the wait here, so that a
	// scrape never waits on a context that never ends.
	ctx, cancel := context.WithTimeout(context.Background(), c.source.Timeout()+time.Second)
	defer cancel()
	s := c.source.Get(ctx)
	up := 0.0
	if s.FetchErr == nil && !s.FetchedAt.IsZero() {
		up = 1
	}
	send := func(desc *prometheus.Desc, kind prometheus.ValueType, v float64, labels ...string) {
		if m, err := prometheus.NewConstMetric(desc, kind, v, labels...); err == nil {
			ch <- m
		}
	}
	send(c.up, prometheus.GaugeValue, up)
	if !s.FetchedAt.IsZero() {
		send(c.scrapeDuration, prometheus.GaugeValue, s.Duration.Seconds())
	}
	if !s.LastSuccess.IsZero() {
		send(c.lastSuccess, prometheus.GaugeValue, float64(s.LastSuccess.UnixNano())/1e9)
	}
	if s.Err != nil {
		return
	}
	send(c.activeUsers, prometheus.GaugeValue, float64(s.ActiveUsers))
	if s.IdlePolicy {
		send(c.engagedUsers, prometheus.GaugeValue, float64(s.EngagedUsers))
		for reason, n := range s.SkippedRows {
			send(c.skippedRows, prometheus.CounterValue, float64(n), reason)
		}
	}
	if s.TotalUsers >= 0 {
		send(c.users, prometheus.GaugeValue, float64(s.TotalUsers))
	}
	if s.TotalUsers >= 0 || s.WriteInterval > 0 {
		send(c.writeInterval, prometheus.GaugeValue, s.WriteInterval.Seconds())
	}
	if s.Version != "" {
		send(c.versionInfo, prometheus.GaugeValue, 1, s.Version)
	}
}
