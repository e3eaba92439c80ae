package keda_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/go-kit/log"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

// newIdleSetup is newGRPCSetup with the idle-tab policy on: an admin
// exporter, tabs that heartbeat on a fake clock (the push loop itself runs
// in real time), and /active_users served from the same cache.
func newIdleSetup(t *testing.T, idle time.Duration) (*grpcSetup, *fakeopenwebui.Clock, http.Handler) {
	t.Helper()
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Now: clock.Now, TabHeartbeats: true})
	upstream := httptest.NewServer(fake)
	t.Cleanup(upstream.Close)
	token := fake.IssueAPIKey(fake.AddUser("exporter", "admin"))
	base, _ := url.Parse(upstream.URL)
	policy, err := openwebui.NewIdlePolicy(idle)
	if err != nil {
		t.Fatal(err)
	}
	client := openwebui.NewClient(openwebui.Config{
		BaseURL: base, Mode: openwebui.ModeAdmin, Now: clock.Now, IdlePolicy: policy,
		Token:      func() (string, error) { return token, nil },
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: time.Nanosecond, Timeout: 5 * time.Second})
	s := &grpcSetup{fake: fake, cache: cache, scaler: keda.NewScaler(demand.New(cache, nil), pushInterval, nil)}
	s.server = serve(t, s.scaler, nil)
	s.client = pb.NewExternalScalerClient(dial(t, s.server.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials())))
	return s, clock, keda.ActiveUsersHandler(demand.New(cache, nil), log.NewNopLogger())
}

// advancePolled lets d pass on the fake clock with a fetch every minute, as
// KEDA polls: a gap of over 180 s without a fetch would count everybody as
// just arrived (issue 19, item 2).
func advancePolled(s *grpcSetup, clock *fakeopenwebui.Clock, d time.Duration) {
	for ; d > 0; d -= time.Minute {
		clock.Advance(min(d, time.Minute))
		s.cache.Get(context.Background())
	}
}

func activeUsersBody(t *testing.T, h http.Handler) string {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/active_users", nil))
	if rec.Code != http.StatusOK {
		t.Fatalf("/active_users: %d %s", rec.Code, rec.Body)
	}
	return rec.Body.String()
}

// /active_users, IsActive and GetMetrics carry the engaged count: two idle
// tabs are 0 for KEDA, a writer is 1.
func TestEngagedCountIsWhatKEDAGets(t *testing.T) {
	s, clock, activeUsers := newIdleSetup(t, 15*time.Minute)
	s.fake.SetActiveHumans(2)
	steps := []struct {
		name string
		do   func()
		want int
	}{
		{"two arrive", func() {}, 2},
		{"their tabs idle past the timeout", func() { advancePolled(s, clock, 15*time.Minute) }, 0},
		{"one writes from an idle tab", func() { s.fake.SetOllamaDown(true); s.fake.Send("human-1") }, 1},
		{"the writer's timeout passes", func() { advancePolled(s, clock, 15*time.Minute) }, 0},
	}
	for _, st := range steps {
		st.do()
		if got, want := activeUsersBody(t, activeUsers), `{"active_users":`+strconv.Itoa(st.want)+`}`; got != want {
			t.Errorf("%s: /active_users = %s, want %s", st.name, got, want)
		}
		if v := metricValue(t, s); v.GetMetricValue() != int64(st.want) {
			t.Errorf("%s: GetMetrics = %v, want %d", st.name, v, st.want)
		}
		if got := isActive(t, s, nil); got != (st.want > 0) {
			t.Errorf("%s: IsActive = %v, want %v", st.name, got, st.want > 0)
		}
		if snap := s.cache.Get(context.Background()); snap.ActiveUsers != 2 {
			t.Errorf("%s: Open WebUI's own count %d, want 2 throughout", st.name, snap.ActiveUsers)
		}
	}
}

// A message typed into an idle tab while Ollama is at zero reaches KEDA's
// push stream from the first fetch of the push loop that starts after it,
// so within one push interval (plus that fetch). Checked by counting the
// loop's analytics requests, not by timing; the time is logged.
func TestMessageFromAnIdleTabIsPushed(t *testing.T) {
	s, clock, _ := newIdleSetup(t, 15*time.Minute)
	s.fake.SetActiveHumans(1)
	stream, err := s.client.StreamIsActive(ctxFor(t, 20*time.Second), ref(nil))
	if err != nil {
		t.Fatal(err)
	}
	expect := func(want bool) { t.Helper(); expectPush(t, stream, want) }
	expect(true) // arrived
	advancePolled(s, clock, 15*time.Minute)
	expect(false) // idle tab: KEDA may scale Ollama to zero
	s.fake.SetOllamaDown(true)
	before := s.fake.Requests("/api/v1/analytics/users")
	sent := time.Now()
	s.fake.Send("human-1")
	expect(true)
	fetches := s.fake.Requests("/api/v1/analytics/users") - before
	t.Logf("pushed %s after the send, after %d analytics requests", time.Since(sent).Round(time.Millisecond), fetches)
	// At most the fetch already under way at the send, and the next one.
	if fetches > 2 {
		t.Errorf("the message reached the stream after %d fetches, want at most 2 (one push interval)", fetches)
	}
}
