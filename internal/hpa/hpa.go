// Package hpa is a model of how the HorizontalPodAutoscaler that KEDA
// creates sizes a Deployment from one external metric (KEDA's metrics-api,
// external-push and prometheus triggers are AverageValue targets), for the
// busy-hour simulation and benchmark (gate/balance, bench/busyhour). It is
// what Kubernetes' replica calculator and its default behavior do
// (pkg/controller/podautoscaler: GetExternalPerPodMetricReplicas,
// stabilizeRecommendationWithBehaviors, the default scaleUp and scaleDown
// policies), not a controller: the caller asks it at each sync period.
package hpa

import (
	"fmt"
	"math"
	"time"
)

// Defaults of Kubernetes (kube-controller-manager and autoscaling/v2) that
// the chart's ScaledObject keeps: it sets no advanced.horizontalPodAutoscalerConfig.
const (
	DefaultSyncPeriod      = 15 * time.Second // --horizontal-pod-autoscaler-sync-period: how often the HPA reads the metric
	DefaultTolerance       = 0.1              // --horizontal-pod-autoscaler-tolerance
	DefaultScaleDownWindow = 5 * time.Minute  // behavior.scaleDown.stabilizationWindowSeconds: 300
)

// Config is one ScaledObject's sizing.
type Config struct {
	Min, Max        int           // minReplicaCount (at least 1 here: KEDA owns 0↔1), maxReplicaCount
	Target          float64       // the trigger's targetValue (AverageValue per replica)
	Tolerance       float64       // 0: DefaultTolerance
	ScaleDownWindow time.Duration // 0: DefaultScaleDownWindow; negative: none
}

// HPA keeps the recommendations of the scale-down window.
type HPA struct {
	cfg  Config
	recs []rec
}

type rec struct {
	at       time.Duration
	replicas int
}

// New checks cfg and returns an HPA.
func New(cfg Config) (*HPA, error) {
	switch {
	case cfg.Min < 1 || cfg.Max < cfg.Min:
		return nil, fmt.Errorf("hpa: min %d, max %d: want 1 <= min <= max", cfg.Min, cfg.Max)
	case !(cfg.Target > 0):
		return nil, fmt.Errorf("hpa: target %v: want more than 0", cfg.Target)
	case cfg.Tolerance < 0:
		return nil, fmt.Errorf("hpa: tolerance %v is negative", cfg.Tolerance)
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = DefaultTolerance
	}
	if cfg.ScaleDownWindow == 0 {
		cfg.ScaleDownWindow = DefaultScaleDownWindow
	}
	return &HPA{cfg: cfg}, nil
}

// Desired is the replica count the HPA sets at now (any monotonic clock,
// e.g. time since the start) when the metric is value and the Deployment
// has current replicas (not terminating ones).
//
//   - The raw recommendation is ceil(value / Target), or current while the
//     value is within the tolerance of current × Target.
//   - Scale-up is immediate (no stabilization window), at most to
//     max(2 × current, current + 4) per sync (the default policies: 100 %
//     or 4 pods per 15 s, whichever is more).
//   - Scale-down takes the highest recommendation of the window: the
//     Deployment shrinks only once every recommendation of the last
//     ScaleDownWindow was lower.
//   - Then Min and Max.
func (h *HPA) Desired(now time.Duration, value float64, current int) int {
	raw := current
	if current <= 0 || math.Abs(value/(h.cfg.Target*float64(current))-1) > h.cfg.Tolerance {
		raw = int(math.Ceil(value / h.cfg.Target))
	}
	h.recs = append(h.recs, rec{now, raw})
	kept := h.recs[:0]
	down := raw
	for _, r := range h.recs {
		if h.cfg.ScaleDownWindow > 0 && now-r.at < h.cfg.ScaleDownWindow {
			kept = append(kept, r)
			down = max(down, r.replicas)
		}
	}
	h.recs = kept
	want := current
	if raw > current {
		want = min(raw, max(2*current, current+4))
	} else if down < current {
		want = down
	}
	return min(max(want, h.cfg.Min), h.cfg.Max)
}
