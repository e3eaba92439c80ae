package keda

import (
	"context"
	"errors"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// MetricName is the one metric the external scaler reports. KEDA shows it to
// the HPA as s<trigger index>-openwebui_active_users.
const MetricName = "openwebui_active_users"

// MinPushInterval is the lowest allowed push interval: below it the push
// loop would ask Open WebUI more often than a count can usefully change.
const MinPushInterval = 200 * time.Millisecond

// Demand is what KEDA gets, per backend (demand.Decider): Value (the
// cache's TTL and stale bound, like /active_users) for IsActive and
// GetMetrics; Refresh (a fresher people count through the same cache and
// in-flight fetch) and Decide for the push loop; Changed for the gate's
// demand, which the push loop sends at once rather than at the next poll.
type Demand interface {
	Source
	Refresh(ctx context.Context, maxAge time.Duration) snapshot.Snapshot
	Decide(people snapshot.Snapshot, backend string) (int, error)
	Changed() <-chan struct{}
}

// Scaler implements KEDA's external scaler service (triggers `external` and
// `external-push`) on the shared snapshot cache.
//
// While at least one StreamIsActive stream is open, one poller goroutine
// refreshes the cache every push interval, and again hands the latest
// snapshot to every stream whenever the gate's demand changes; each stream
// decides its trigger's value (its backend's, see package demand) and sends
// the state when it changes (and right after it opens). With no stream open
// there is no poller and no background request.
type Scaler struct {
	externalscaler.UnimplementedExternalScalerServer // StreamMetricSpec: KEDA then stays pull-based

	source   Demand
	interval time.Duration
	logger   log.Logger

	mu     sync.Mutex
	subs   map[*subscriber]struct{}
	poller *poller // non-nil while subs is not empty
	closed chan struct{}
	once   sync.Once
}

// subscriber is one open stream. latest holds the newest snapshot not yet
// taken by the stream (older ones are dropped: only the newest matters).
type subscriber struct {
	latest chan snapshot.Snapshot
}

type poller struct {
	cancel context.CancelFunc
	done   chan struct{} // closed when the goroutine has returned
	snap   *snapshot.Snapshot
}

// NewScaler returns a Scaler that reads source and, while streams are open,
// refreshes it every interval (at least MinPushInterval).
func NewScaler(source Demand, interval time.Duration, logger log.Logger) *Scaler {
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return &Scaler{
		source:   source,
		interval: max(interval, MinPushInterval),
		logger:   logger,
		subs:     map[*subscriber]struct{}{},
		closed:   make(chan struct{}),
	}
}

// Close ends every open stream cleanly (KEDA reconnects after 2 s, to
// another replica if there is one) and makes new streams end right away.
// The poller stops when the last stream has gone.
func (s *Scaler) Close() {
	s.once.Do(func() { close(s.closed) })
}

// IsActive answers whether the trigger is active: active_users > activationValue.
func (s *Scaler) IsActive(ctx context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.IsActiveResponse, error) {
	md, err := s.parseMetadata(ref.GetScalerMetadata())
	if err != nil {
		return nil, err
	}
	n, err := s.count(ctx, md.backend)
	if err != nil {
		return nil, err
	}
	return &externalscaler.IsActiveResponse{Result: md.active(n)}, nil
}

// GetMetricSpec returns the one metric with the trigger's targetValue.
func (s *Scaler) GetMetricSpec(_ context.Context, ref *externalscaler.ScaledObjectRef) (*externalscaler.GetMetricSpecResponse, error) {
	md, err := s.parseMetadata(ref.GetScalerMetadata())
	if err != nil {
		return nil, err
	}
	return &externalscaler.GetMetricSpecResponse{MetricSpecs: []*externalscaler.MetricSpec{{
		MetricName:      MetricName,
		TargetSize:      md.targetSize(),
		TargetSizeFloat: md.target,
	}}}, nil
}

// GetMetrics returns the active user count.
func (s *Scaler) GetMetrics(ctx context.Context, req *externalscaler.GetMetricsRequest) (*externalscaler.GetMetricsResponse, error) {
	md, err := s.parseMetadata(req.GetScaledObjectRef().GetScalerMetadata())
	if err != nil {
		return nil, err
	}
	if name := req.GetMetricName(); name != "" && name != MetricName {
		return nil, status.Errorf(codes.InvalidArgument, "unknown metricName %q: this scaler reports only %q", name, MetricName)
	}
	n, err := s.count(ctx, md.backend)
	if err != nil {
		return nil, err
	}
	return &externalscaler.GetMetricsResponse{MetricValues: []*externalscaler.MetricValue{{
		MetricName:       MetricName,
		MetricValue:      int64(n),
		MetricValueFloat: float64(n),
	}}}, nil
}

// count reads the value like /active_users does. An unknown count is an
// Unavailable error, never an answer: KEDA then applies its fallback instead
// of scaling Ollama to zero.
func (s *Scaler) count(ctx context.Context, backend string) (int, error) {
	n, err := s.source.Value(ctx, backend)
	if err != nil {
		level.Debug(s.logger).Log("msg", "answering KEDA with an error", "backend", backend, "err", err)
		return 0, grpcError(err)
	}
	return n, nil
}

// grpcError maps package demand's errors to gRPC codes: a backend the gate
// does not serve is the trigger's mistake; an unknown count is Unavailable.
func grpcError(err error) error {
	if errors.Is(err, demand.ErrNoSuchBackend) {
		return status.Error(codes.InvalidArgument, "trigger metadata backend: "+err.Error())
	}
	return status.Error(codes.Unavailable, err.Error())
}

// StreamIsActive sends the trigger's state right after the stream opens
// (once the count is known) and again whenever it changes, so `true` reaches
// KEDA within one push interval of somebody arriving. While the count is
// unknown it sends nothing (IsActive reports the error); when the count is
// known again it sends the state anew. The stream ends when KEDA cancels it
// or the server shuts down.
func (s *Scaler) StreamIsActive(ref *externalscaler.ScaledObjectRef, stream externalscaler.ExternalScaler_StreamIsActiveServer) error {
	md, err := s.parseMetadata(ref.GetScalerMetadata())
	if err != nil {
		return err
	}
	sub := s.subscribe()
	if sub == nil {
		return nil // shutting down
	}
	defer s.unsubscribe(sub)
	level.Debug(s.logger).Log("msg", "KEDA opened StreamIsActive", "scaledobject", ref.GetNamespace()+"/"+ref.GetName())
	defer level.Debug(s.logger).Log("msg", "StreamIsActive ended", "scaledobject", ref.GetNamespace()+"/"+ref.GetName())

	known, last := false, false
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case <-s.closed:
			return nil
		case snap := <-sub.latest:
			n, err := s.source.Decide(snap, md.backend)
			if err != nil {
				known = false
				continue
			}
			active := md.active(n)
			if known && active == last {
				continue
			}
			if err := stream.Send(&externalscaler.IsActiveResponse{Result: active}); err != nil {
				return err
			}
			known, last = true, active
		}
	}
}

// subscribe registers a stream and starts the poller for the first one. A
// stream that joins a running poller gets its latest snapshot at once. It
// returns nil once the Scaler is closed.
func (s *Scaler) subscribe() *subscriber {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.closed:
		return nil
	default:
	}
	sub := &subscriber{latest: make(chan snapshot.Snapshot, 1)}
	s.subs[sub] = struct{}{}
	switch {
	case s.poller == nil:
		ctx, cancel := context.WithCancel(context.Background())
		p := &poller{cancel: cancel, done: make(chan struct{})}
		s.poller = p
		go s.poll(ctx, p)
	case s.poller.snap != nil:
		sub.latest <- *s.poller.snap
	}
	return sub
}

// unsubscribe removes a stream; the last one stops the poller and waits for
// it, so no goroutine outlives the streams.
func (s *Scaler) unsubscribe(sub *subscriber) {
	s.mu.Lock()
	delete(s.subs, sub)
	var p *poller
	if len(s.subs) == 0 && s.poller != nil {
		p = s.poller
		s.poller = nil
		p.cancel() // under s.mu: p publishes nothing from now on
	}
	s.mu.Unlock()
	if p != nil {
		<-p.done
	}
}

// poll refreshes the count through the shared cache, then waits one
// interval after each refresh, so that the next one finds the count at
// least an interval old and asks Open WebUI (unless /metrics or
// /active_users just did, whose count it then shares).
//
// A change of the gate's demand hands the latest snapshot out again at
// once, without a fetch, even while a slow fetch is running: a held request
// reaches KEDA within milliseconds, whatever Open WebUI is doing.
func (s *Scaler) poll(ctx context.Context, p *poller) {
	defer close(p.done)
	refreshed := make(chan snapshot.Snapshot, 1)
	refresh := func() { refreshed <- s.source.Refresh(ctx, s.interval) }
	fetching := true
	go refresh()
	defer func() {
		if fetching {
			<-refreshed // Refresh returns once ctx is cancelled
		}
	}()
	timer := time.NewTimer(s.interval)
	timer.Stop()
	defer timer.Stop()
	last := snapshot.Snapshot{Err: errNoCountYet}
	// changed is always taken before the publish it guards: the streams
	// decide after a publish, so a change between their decision and a
	// later Changed() would otherwise be missed until the next fetch.
	changed := s.source.Changed()
	s.publish(ctx, p, last) // the gate's demand needs no count: decide it now
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			changed = s.source.Changed()
			s.publish(ctx, p, last)
		case snap := <-refreshed:
			fetching = false
			last = snap
			s.publish(ctx, p, snap)
			timer.Reset(s.interval)
		case <-timer.C:
			fetching = true
			go refresh()
		}
	}
}

// errNoCountYet stands for the people count until the first fetch returns;
// the gate's demand is decided without it meanwhile.
var errNoCountYet = errors.New("the first count from Open WebUI is still being fetched")

// publish hands snap to every stream, replacing what a stream has not taken yet.
func (s *Scaler) publish(ctx context.Context, p *poller, snap snapshot.Snapshot) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ctx.Err() != nil {
		return // stopped: the snapshot may be a cancelled wait, not a count
	}
	p.snap = &snap
	for sub := range s.subs {
		select {
		case <-sub.latest:
		default:
		}
		sub.latest <- snap // cannot block: only publish sends, under s.mu
	}
}

// metadata is what the exporter reads from the trigger's metadata.
type metadata struct {
	target     float64 // the HPA target per replica (targetValue)
	activation float64 // active iff active_users > activation (activationValue)
	backend    string  // the gate's backend whose demand is reported; "" for none
}

// Trigger metadata keys the exporter reads. Each may also be given as
// <key>FromEnv, which KEDA resolves from the scale target's environment.
const (
	keyTarget     = "targetValue"
	keyActivation = "activationValue"
	keyBackend    = "backend"
)

// kedaKeys are trigger metadata keys that KEDA itself reads and forwards to
// every external scaler. They are accepted and ignored.
var kedaKeys = []string{"scalerAddress", "enableTLS", "unsafeSsl", "caCert", "tlsClientCert", "tlsClientKey"}

// parseMetadata reads targetValue (default 1, > 0) and activationValue
// (default 0, >= 0). KEDA's own keys and any other key ending in FromEnv
// are ignored; any other key, such as a misspelt targetValue or the
// metrics-api trigger's activationTargetValue, is an InvalidArgument error
// that names it, rather than a silent default.
func (s *Scaler) parseMetadata(m map[string]string) (metadata, error) {
	md := metadata{target: 1}
	seen := map[string]string{} // our key -> the metadata key it came from
	for _, key := range slices.Sorted(maps.Keys(m)) {
		ours := strings.TrimSuffix(key, "FromEnv")
		if ours != keyTarget && ours != keyActivation && ours != keyBackend {
			if slices.Contains(kedaKeys, key) || strings.HasSuffix(key, "FromEnv") {
				continue
			}
			return md, status.Errorf(codes.InvalidArgument,
				"unknown trigger metadata key %q: this scaler reads only %s, %s and %s (plus KEDA's own %s)",
				key, keyTarget, keyActivation, keyBackend, strings.Join(kedaKeys, ", "))
		}
		if other, dup := seen[ours]; dup {
			return md, status.Errorf(codes.InvalidArgument, "trigger metadata keys %q and %q both set %s; keep one", other, key, ours)
		}
		seen[ours] = key
		if ours == keyBackend {
			md.backend = strings.TrimSpace(m[key])
			if err := s.source.Check(md.backend); err != nil {
				return md, grpcError(err)
			}
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(m[key]), 64)
		switch {
		case ours == keyTarget && (err != nil || !(v > 0) || math.IsInf(v, 0)):
			return md, status.Errorf(codes.InvalidArgument, "trigger metadata %s: want a number greater than 0, got %q", key, m[key])
		case ours == keyActivation && (err != nil || !(v >= 0) || math.IsInf(v, 0)):
			return md, status.Errorf(codes.InvalidArgument, "trigger metadata %s: want a number of 0 or more, got %q", key, m[key])
		case ours == keyTarget:
			md.target = v
		default:
			md.activation = v
		}
	}
	return md, nil
}

func (md metadata) active(n int) bool { return float64(n) > md.activation }

// targetSize is the target for KEDA before v2.17, which reads only the
// int64 field: the target rounded to the nearest integer, never 0.
func (md metadata) targetSize() int64 {
	return max(1, int64(math.Round(min(md.target, math.MaxInt64/2))))
}
