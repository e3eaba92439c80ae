package keda_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/gate"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// fakeGate is a gate with two pools whose demand a test sets.
type fakeGate struct {
	mu      sync.Mutex
	demand  map[string]gate.Demand
	changed chan struct{}
}

func newFakeGate() *fakeGate {
	return &fakeGate{demand: map[string]gate.Demand{}, changed: make(chan struct{})}
}

func (g *fakeGate) Backends() []gate.BackendConfig {
	return []gate.BackendConfig{{Name: "small", Wake: gate.WakeArrival}, {Name: "big", Wake: gate.WakeRequest, Idle: time.Minute}}
}

func (g *fakeGate) Demand(name string) (gate.Demand, bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.demand[name], name == "small" || name == "big"
}

func (g *fakeGate) Changed() <-chan struct{} {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.changed
}

func (g *fakeGate) set(name string, d gate.Demand) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.demand[name] = d
	close(g.changed)
	g.changed = make(chan struct{})
}

// people is Open WebUI's count as the cache gives it; with block set, every
// read waits for its context (an Open WebUI that does not answer).
type people struct {
	snap  snapshot.Snapshot
	block bool
}

func (p people) Get(ctx context.Context) snapshot.Snapshot { return p.read(ctx) }
func (p people) Refresh(ctx context.Context, _ time.Duration) snapshot.Snapshot {
	return p.read(ctx)
}

func (p people) read(ctx context.Context) snapshot.Snapshot {
	if p.block {
		<-ctx.Done()
		return snapshot.Snapshot{Err: ctx.Err()}
	}
	return p.snap
}

func serveDecider(t *testing.T, d *demand.Decider) pb.ExternalScalerClient {
	t.Helper()
	server := serve(t, keda.NewScaler(d, pushInterval, nil), nil)
	return pb.NewExternalScalerClient(dial(t, server.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())))
}

func TestBackendMetadata(t *testing.T) {
	g := newFakeGate()
	g.set("big", gate.Demand{Recent: 2})
	client := serveDecider(t, demand.New(people{snap: snapshot.Snapshot{Count: openwebui.Count{ActiveUsers: 5}}}, g))
	for _, tc := range []struct {
		backend  string
		want     int64
		wantCode codes.Code
		wantMsg  string
	}{
		{backend: "", want: 5},
		{backend: "small", want: 5},
		{backend: "big", want: 2},
		{backend: "huge", wantCode: codes.InvalidArgument, wantMsg: `trigger metadata backend: no such backend "huge": the gate serves small, big`},
	} {
		t.Run("backend="+tc.backend, func(t *testing.T) {
			md := map[string]string{}
			if tc.backend != "" {
				md["backend"] = tc.backend
			}
			resp, err := client.GetMetrics(ctxFor(t, 5*time.Second), &pb.GetMetricsRequest{ScaledObjectRef: ref(md), MetricName: keda.MetricName})
			if tc.wantCode != codes.OK {
				if status.Code(err) != tc.wantCode || status.Convert(err).Message() != tc.wantMsg {
					t.Fatalf("GetMetrics: %v; want %s %q", err, tc.wantCode, tc.wantMsg)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetMetricValues()[0].GetMetricValue(); got != tc.want {
				t.Errorf("metric value = %d, want %d", got, tc.want)
			}
		})
	}
}

// A request the gate holds reaches KEDA's push stream at once, even while
// Open WebUI does not answer at all: the push loop must not wait for the
// fetch to decide a backend's demand.
func TestHeldRequestIsPushedWhileOpenWebUIHangs(t *testing.T) {
	for _, backend := range []string{"big", "small", ""} {
		t.Run("backend="+backend, func(t *testing.T) {
			g := newFakeGate()
			client := serveDecider(t, demand.New(people{block: true}, g))
			md := map[string]string{}
			if backend != "" {
				md["backend"] = backend
			}
			stream, err := client.StreamIsActive(ctxFor(t, 10*time.Second), ref(md))
			if err != nil {
				t.Fatal(err)
			}
			if backend == "big" {
				expectPush(t, stream, false) // decided without Open WebUI's count
			}
			name := backend
			if name == "" {
				name = "small"
			}
			g.set(name, gate.Demand{Held: 1})
			expectPush(t, stream, true)
			g.set(name, gate.Demand{})
			if backend == "big" {
				expectPush(t, stream, false)
			}
		})
	}
}

// stallingGate is a fakeGate whose Changed waits for a decision to read the
// demand (for at most half a second: a loop that takes Changed before it
// publishes anything waits for nothing), and then until the test lets it go:
// a push loop slowed down by the scheduler at the worst moment.
type stallingGate struct {
	*fakeGate
	read    chan struct{} // closed at the first Demand
	once    sync.Once
	release chan struct{}
}

func (g *stallingGate) Demand(name string) (gate.Demand, bool) {
	g.once.Do(func() { close(g.read) })
	return g.fakeGate.Demand(name)
}

func (g *stallingGate) Changed() <-chan struct{} {
	select {
	case <-g.read:
		<-g.release
	case <-time.After(500 * time.Millisecond):
	}
	return g.fakeGate.Changed()
}

// A change of the gate's demand right after a stream decided is pushed, even
// when the push loop takes its next Changed() only after that change: it
// must have taken it before handing out what the stream decided on. (CI
// once caught TestHeldRequestIsPushedWhileOpenWebUIHangs waiting 10 s for
// such a change.)
func TestGateChangeRightAfterADecisionIsPushed(t *testing.T) {
	g := &stallingGate{fakeGate: newFakeGate(), read: make(chan struct{}), release: make(chan struct{})}
	client := serveDecider(t, demand.New(people{block: true}, g))
	stream, err := client.StreamIsActive(ctxFor(t, 10*time.Second), ref(map[string]string{"backend": "big"}))
	if err != nil {
		t.Fatal(err)
	}
	expectPush(t, stream, false)
	g.set("big", gate.Demand{Held: 1})
	close(g.release)
	expectPush(t, stream, true)
}

func TestActiveUsersBackendParameter(t *testing.T) {
	g := newFakeGate()
	g.set("big", gate.Demand{InFlight: 1})
	h := keda.ActiveUsersHandler(demand.New(people{snap: snapshot.Snapshot{Err: errors.New("GET /api/usage: HTTP 401")}}, g), log.NewNopLogger())
	for _, tc := range []struct {
		query      string
		wantStatus int
		wantBody   string
	}{
		{"", 200, `{"active_users":1}`}, // at least 1 while the gate streams anything
		{"?backend=big", 200, `{"active_users":1}`},
		{"?backend=small", 503, `{"error":"active user count unknown: GET /api/usage: HTTP 401"}`},
		{"?backend=huge", 400, `{"error":"no such backend \"huge\": the gate serves small, big"}`},
		{"?backend=big&backend=small", 400, `{"error":"the backend parameter is given 2 times; give it once"}`},
		{"?other=1&backend=big", 200, `{"active_users":1}`},
	} {
		t.Run(tc.query, func(t *testing.T) {
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/active_users"+tc.query, nil))
			if rec.Code != tc.wantStatus || rec.Body.String() != tc.wantBody {
				t.Errorf("GET /active_users%s = %d %s; want %d %s", tc.query, rec.Code, rec.Body, tc.wantStatus, tc.wantBody)
			}
		})
	}
}
