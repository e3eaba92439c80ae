package keda_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

const pushInterval = keda.MinPushInterval

// grpcSetup is a fake Open WebUI, the exporter's shared cache on it, the
// external scaler serving that cache on loopback, and a client.
type grpcSetup struct {
	fake   *fakeopenwebui.Server
	cache  *snapshot.Cache
	scaler *keda.Scaler
	server *keda.GRPCServer
	client pb.ExternalScalerClient
}

type grpcOptions struct {
	ttl      time.Duration // of the cache; default 1 minute, so only the push loop asks often
	maxStale time.Duration
}

func newGRPCSetup(t *testing.T, o grpcOptions) *grpcSetup {
	t.Helper()
	if o.ttl == 0 {
		o.ttl = time.Minute
	}
	fake := fakeopenwebui.New(fakeopenwebui.Config{})
	upstream := httptest.NewServer(fake)
	t.Cleanup(upstream.Close)
	token := fake.IssueAPIKey(fake.AddUser("exporter", "user"))
	base, _ := url.Parse(upstream.URL)
	client := openwebui.NewClient(openwebui.Config{
		BaseURL: base,
		Token:   func() (string, error) { return token, nil },
		// No idle connections: goroutine counts then say only what the scaler left.
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: o.ttl, MaxStale: o.maxStale, Timeout: 5 * time.Second})
	s := &grpcSetup{fake: fake, cache: cache, scaler: keda.NewScaler(demand.New(cache, nil), pushInterval, nil)}
	s.server = serve(t, s.scaler, nil)
	s.client = pb.NewExternalScalerClient(dial(t, s.server.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())))
	return s
}

// serve starts the gRPC server on a loopback port; the test's end shuts it down.
func serve(t *testing.T, scaler *keda.Scaler, tlsFiles *keda.TLSFiles) *keda.GRPCServer {
	t.Helper()
	var files keda.TLSFiles
	if tlsFiles != nil {
		files = *tlsFiles
	}
	tlsConfig, err := keda.ServerTLSConfig(files)
	if err != nil {
		t.Fatal(err)
	}
	server, err := keda.ListenGRPC("127.0.0.1:0", scaler, tlsConfig)
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- server.Serve() }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		server.Shutdown(ctx)
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return server
}

func dial(t *testing.T, addr string, opts ...grpc.DialOption) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func ref(md map[string]string) *pb.ScaledObjectRef {
	all := map[string]string{"scalerAddress": "openwebui-exporter.ai.svc:9443"} // KEDA forwards it too
	for k, v := range md {
		all[k] = v
	}
	return &pb.ScaledObjectRef{Name: "ollama", Namespace: "ai", ScalerMetadata: all}
}

func ctxFor(t *testing.T, d time.Duration) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func isActive(t *testing.T, s *grpcSetup, md map[string]string) bool {
	t.Helper()
	resp, err := s.client.IsActive(ctxFor(t, 10*time.Second), ref(md))
	if err != nil {
		t.Fatalf("IsActive: %v", err)
	}
	return resp.GetResult()
}

func metricValue(t *testing.T, s *grpcSetup) *pb.MetricValue {
	t.Helper()
	resp, err := s.client.GetMetrics(ctxFor(t, 10*time.Second), &pb.GetMetricsRequest{ScaledObjectRef: ref(nil), MetricName: keda.MetricName})
	if err != nil {
		t.Fatalf("GetMetrics: %v", err)
	}
	if len(resp.GetMetricValues()) != 1 {
		t.Fatalf("GetMetrics: want one value, got %v", resp)
	}
	return resp.GetMetricValues()[0]
}

func TestUnaryRPCs(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{ttl: time.Nanosecond}) // every call reads Open WebUI anew
	for _, n := range []int{0, 1, 3, 0} {
		s.fake.SetActiveHumans(n)
		if got := isActive(t, s, nil); got != (n > 0) {
			t.Errorf("%d humans: IsActive = %v", n, got)
		}
		v := metricValue(t, s)
		if v.GetMetricName() != keda.MetricName || v.GetMetricValue() != int64(n) || v.GetMetricValueFloat() != float64(n) {
			t.Errorf("%d humans: GetMetrics = %v, want both fields %d", n, v, n)
		}
	}

	// activationValue: active iff active_users > activationValue.
	s.fake.SetActiveHumans(2)
	for _, tc := range []struct {
		activation string
		want       bool
	}{{"0", true}, {"1", true}, {"1.5", true}, {"2", false}, {"10", false}} {
		if got := isActive(t, s, map[string]string{"activationValue": tc.activation}); got != tc.want {
			t.Errorf("2 humans, activationValue %s: IsActive = %v, want %v", tc.activation, got, tc.want)
		}
	}

	// An empty metric name (a hand-written client) means ours.
	if _, err := s.client.GetMetrics(ctxFor(t, 10*time.Second), &pb.GetMetricsRequest{ScaledObjectRef: ref(nil)}); err != nil {
		t.Errorf("GetMetrics without a metric name: %v", err)
	}
}

func TestGetMetricSpec(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	for _, tc := range []struct {
		md        map[string]string
		wantFloat float64
		wantInt   int64 // for KEDA before v2.17: never 0
	}{
		{nil, 1, 1},
		{map[string]string{"targetValue": "3"}, 3, 3},
		{map[string]string{"targetValue": "2.5"}, 2.5, 3},
		{map[string]string{"targetValue": "0.25"}, 0.25, 1},
		{map[string]string{"targetValueFromEnv": "4"}, 4, 4}, // KEDA resolved it from the target's env
	} {
		resp, err := s.client.GetMetricSpec(ctxFor(t, 10*time.Second), ref(tc.md))
		if err != nil {
			t.Fatalf("%v: %v", tc.md, err)
		}
		specs := resp.GetMetricSpecs()
		if len(specs) != 1 || specs[0].GetMetricName() != keda.MetricName ||
			specs[0].GetTargetSizeFloat() != tc.wantFloat || specs[0].GetTargetSize() != tc.wantInt {
			t.Errorf("%v: GetMetricSpec = %v, want %s target %d / %g", tc.md, resp, keda.MetricName, tc.wantInt, tc.wantFloat)
		}
	}
	// No request to Open WebUI is needed for the spec.
	if n := s.fake.Requests("/api/usage"); n != 0 {
		t.Errorf("GetMetricSpec asked Open WebUI %d times", n)
	}
}

func TestStreamMetricSpecIsUnimplemented(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	stream, err := s.client.StreamMetricSpec(ctxFor(t, 10*time.Second), ref(nil))
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("StreamMetricSpec: %v, want Unimplemented (KEDA then stays pull-based)", err)
	}
}

func TestMetadata(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	// KEDA's own keys and resolved ...FromEnv keys are accepted.
	accepted := map[string]string{
		"scalerAddress": "x:9443", "enableTLS": "true", "unsafeSsl": "false",
		"caCert": "-", "tlsClientCert": "-", "tlsClientKey": "-", "somethingFromEnv": "v",
		"targetValue": " 2 ", "activationValue": "0",
	}
	if _, err := s.client.GetMetricSpec(ctxFor(t, 10*time.Second), ref(accepted)); err != nil {
		t.Errorf("KEDA's keys: %v", err)
	}

	for _, tc := range []struct {
		md      map[string]string
		wantKey string // the error names it
	}{
		{map[string]string{"targetValue": "0"}, "targetValue"},
		{map[string]string{"targetValue": "-1"}, "targetValue"},
		{map[string]string{"targetValue": "one"}, "targetValue"},
		{map[string]string{"targetValue": ""}, "targetValue"},
		{map[string]string{"targetValue": "NaN"}, "targetValue"},
		{map[string]string{"targetValue": "+Inf"}, "targetValue"},
		{map[string]string{"targetValueFromEnv": "0"}, "targetValueFromEnv"},
		{map[string]string{"activationValue": "-1"}, "activationValue"},
		{map[string]string{"activationValue": "x"}, "activationValue"},
		{map[string]string{"activationTargetValue": "0"}, "activationTargetValue"}, // the metrics-api trigger's name
		{map[string]string{"threshold": "1"}, "threshold"},                         // the prometheus trigger's name
		{map[string]string{"targetvalue": "1"}, "targetvalue"},
		{map[string]string{"targetValue": "1", "targetValueFromEnv": "2"}, "targetValueFromEnv"},
	} {
		ctx := ctxFor(t, 10*time.Second)
		calls := map[string]func() error{
			"IsActive": func() error { _, err := s.client.IsActive(ctx, ref(tc.md)); return err },
			"GetMetricSpec": func() error {
				_, err := s.client.GetMetricSpec(ctx, ref(tc.md))
				return err
			},
			"GetMetrics": func() error {
				_, err := s.client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref(tc.md), MetricName: keda.MetricName})
				return err
			},
			"StreamIsActive": func() error {
				stream, err := s.client.StreamIsActive(ctx, ref(tc.md))
				if err != nil {
					return err
				}
				_, err = stream.Recv()
				return err
			},
		}
		for name, call := range calls {
			err := call()
			st, _ := status.FromError(err)
			if st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), `"`+tc.wantKey+`"`) && !strings.Contains(st.Message(), tc.wantKey+":") {
				t.Errorf("%s(%v) = %v; want InvalidArgument naming %s", name, tc.md, err, tc.wantKey)
			}
		}
	}

	_, err := s.client.GetMetrics(ctxFor(t, 10*time.Second), &pb.GetMetricsRequest{ScaledObjectRef: ref(nil), MetricName: "other"})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `"other"`) {
		t.Errorf("GetMetrics(other) = %v; want InvalidArgument naming the metric", err)
	}
	if n := s.fake.Requests("/api/usage"); n != 0 {
		t.Errorf("bad metadata still asked Open WebUI %d times", n)
	}
}

// TestUnknownCount: while the count is unknown every answer that needs it is
// Unavailable with the reason (KEDA's fallback then applies), never false;
// the stream sends nothing, and the state as soon as the count is back.
func TestUnknownCount(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{ttl: time.Nanosecond})
	s.fake.SetOverride(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "boom", http.StatusInternalServerError) })

	ctx := ctxFor(t, 10*time.Second)
	_, err := s.client.IsActive(ctx, ref(nil))
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "active user count unknown") || !strings.Contains(st.Message(), "500") {
		t.Errorf("IsActive while Open WebUI fails: %v; want Unavailable with the reason", err)
	}
	_, err = s.client.GetMetrics(ctx, &pb.GetMetricsRequest{ScaledObjectRef: ref(nil), MetricName: keda.MetricName})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "500") {
		t.Errorf("GetMetrics while Open WebUI fails: %v; want Unavailable with the reason", err)
	}
	if _, err := s.client.GetMetricSpec(ctx, ref(nil)); err != nil {
		t.Errorf("GetMetricSpec needs no count, got %v", err)
	}

	stream, err := s.client.StreamIsActive(ctx, ref(nil))
	if err != nil {
		t.Fatal(err)
	}
	// Let the push loop see the failure a few times, then recover with one human.
	failing := s.fake.Requests("/api/version") + s.fake.Requests("/api/v1/auths/") + s.fake.Requests("/api/usage")
	waitFor(t, "the push loop to poll the failing Open WebUI", func() bool {
		return s.fake.Requests("/api/version")+s.fake.Requests("/api/v1/auths/")+s.fake.Requests("/api/usage") >= failing+2
	})
	s.fake.SetActiveHumans(1)
	s.fake.SetOverride(nil)
	if got, err := stream.Recv(); err != nil || !got.GetResult() {
		t.Errorf("first message after recovery: %v, %v; want true (and nothing while the count was unknown)", got, err)
	}
}

// TestStreamPushesActivity: the stream says the current state at once, and
// true within a push interval of somebody arriving, although the cache TTL
// is a minute; IsActive, reading the same cache, agrees at once.
func TestStreamPushesActivity(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	stream, err := s.client.StreamIsActive(ctxFor(t, 20*time.Second), ref(nil))
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want bool) { t.Helper(); expectPush(t, stream, want) }
	expect(false) // nobody there: the current state right after the stream opens
	s.fake.SetActiveHumans(1)
	expect(true)
	if !isActive(t, s, nil) {
		t.Error("IsActive disagrees with the stream: the push loop must refresh the shared cache")
	}
	if v := metricValue(t, s); v.GetMetricValue() != 1 {
		t.Errorf("GetMetrics = %v, want 1", v)
	}
	s.fake.SetActiveHumans(3) // still active: nothing to send
	s.fake.SetActiveHumans(0)
	expect(false)
	s.fake.SetActiveHumans(2)
	expect(true)

	// A second stream with a higher activation value joins the running loop
	// and gets its own state at once.
	other, err := s.client.StreamIsActive(ctxFor(t, 20*time.Second), ref(map[string]string{"activationValue": "2"}))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := other.Recv(); err != nil || got.GetResult() {
		t.Errorf("second stream, activationValue 2, 2 humans: %v, %v; want false", got, err)
	}
}

// expectPush receives the stream's next message and checks its result.
func expectPush(t *testing.T, stream pb.ExternalScaler_StreamIsActiveClient, want bool) {
	t.Helper()
	got, err := stream.Recv()
	if err != nil || got.GetResult() != want {
		t.Fatalf("Recv = %v, %v; want %v", got, err, want)
	}
}

func TestNoPollingWithoutStreams(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	isActive(t, s, nil)
	if s.scaler.Polling() {
		t.Fatal("polling without a stream")
	}
	before := s.fake.Requests("/api/usage")
	isActive(t, s, nil) // within the TTL: served from the cache
	if n := s.fake.Requests("/api/usage"); n != before {
		t.Errorf("IsActive within the TTL asked Open WebUI again (%d -> %d)", before, n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stream, err := s.client.StreamIsActive(ctx, ref(nil))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	if !s.scaler.Polling() {
		t.Fatal("a stream is open but nothing polls")
	}
	// The push loop goes through the cache: it asks Open WebUI again and again.
	waitFor(t, "the push loop to ask Open WebUI", func() bool { return s.fake.Requests("/api/usage") >= before+3 })
	cancel()
	waitFor(t, "the push loop to stop after the last stream", func() bool { return !s.scaler.Polling() })
}

// TestStreamsLeaveNothingBehind opens and cancels streams and checks that the
// handlers, the push loop and every goroutine they started are gone.
func TestStreamsLeaveNothingBehind(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	isActive(t, s, nil) // connect the client
	waitNoScalerGoroutines(t)
	baseline := runtime.NumGoroutine()

	for round := range 3 {
		var cancels []context.CancelFunc
		for range 4 {
			ctx, cancel := context.WithCancel(context.Background())
			cancels = append(cancels, cancel)
			stream, err := s.client.StreamIsActive(ctx, ref(nil))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := stream.Recv(); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		for i, cancel := range cancels {
			cancel()
			if i < len(cancels)-1 && !s.scaler.Polling() {
				t.Errorf("round %d: polling stopped with %d streams still open", round, len(cancels)-1-i)
			}
		}
		waitFor(t, "the push loop to stop", func() bool { return !s.scaler.Polling() })
		waitNoScalerGoroutines(t)
	}
	waitFor(t, "the goroutine count to return to its baseline", func() bool { return runtime.NumGoroutine() <= baseline })
}

// TestShutdownEndsStreams: Shutdown ends open streams cleanly (KEDA sees the
// end of the stream and reconnects after 2 s), and stops the push loop.
func TestShutdownEndsStreams(t *testing.T) {
	s := newGRPCSetup(t, grpcOptions{})
	var streams []pb.ExternalScaler_StreamIsActiveClient
	for range 3 {
		stream, err := s.client.StreamIsActive(ctxFor(t, 20*time.Second), ref(nil))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		streams = append(streams, stream)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.server.Shutdown(ctx)
	if ctx.Err() != nil {
		t.Error("Shutdown needed its deadline: the streams did not end by themselves")
	}
	for i, stream := range streams {
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("stream %d after Shutdown: %v, want a clean end (io.EOF)", i, err)
		}
	}
	if s.scaler.Polling() {
		t.Error("still polling after Shutdown")
	}
	waitNoScalerGoroutines(t)
	if _, err := s.client.IsActive(ctxFor(t, 5*time.Second), ref(nil)); status.Code(err) != codes.Unavailable {
		t.Errorf("IsActive after Shutdown: %v, want Unavailable (no server)", err)
	}
}

// waitFor polls cond until it holds, for at most 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitNoScalerGoroutines waits until no goroutine runs the scaler's code
// (stream handlers, the push loop) or a fetch of the cache it started.
func waitNoScalerGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if strings.Contains(g, "openwebui_exporter/keda.(*Scaler)") || strings.Contains(g, "openwebui_exporter/snapshot.(*Cache).refresh") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("goroutines of the scaler still running:\n%s", strings.Join(left, "\n\n"))
		}
		time.Sleep(5 * time.Millisecond)
	}
}
