package gate

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestParseBackend(t *testing.T) {
	cases := []struct {
		in      string
		name    string
		url     string
		wake    WakeRule
		idle    time.Duration
		wantErr string
	}{
		{in: "http://ollama:11434", url: "http://ollama:11434", wake: WakeArrival},
		{in: "https://ollama.example/prefix/", url: "https://ollama.example/prefix/", wake: WakeArrival},
		{in: "small=http://ollama-small:11434", name: "small", url: "http://ollama-small:11434", wake: WakeArrival},
		{in: "big=http://ollama-big:11434,wake=request", name: "big", url: "http://ollama-big:11434", wake: WakeRequest, idle: 10 * time.Minute},
		{in: "big=http://b:1/ollama,wake=request,idle=30m", name: "big", url: "http://b:1/ollama", wake: WakeRequest, idle: 30 * time.Minute},
		{in: "a-1=http://b:1,idle=1m,wake=request", name: "a-1", url: "http://b:1", wake: WakeRequest, idle: time.Minute},
		{in: "p=http://b:1,wake=arrival", name: "p", url: "http://b:1", wake: WakeArrival},
		{in: "", wantErr: "empty backend"},
		{in: "Big=http://b:1", wantErr: `bad name "Big"`},
		{in: "-x=http://b:1", wantErr: `bad name "-x"`},
		{in: "x-=http://b:1", wantErr: `bad name "x-"`},
		{in: "_gate=http://b:1", wantErr: `bad name "_gate"`},
		{in: "=http://b:1", wantErr: `bad name ""`},
		{in: strings.Repeat("a", 33) + "=http://b:1", wantErr: "bad name"},
		{in: "ollama:11434", wantErr: "scheme must be http or https"},
		{in: "ftp://b:1", wantErr: "scheme must be http or https"},
		{in: "http://", wantErr: "no host"},
		{in: "http://b:1/?x=1", wantErr: "a query is not supported"},
		{in: "http://b:1/?", wantErr: "a query is not supported"},
		{in: "http://b:1/#f", wantErr: "a fragment is not supported"},
		{in: "http://u:p@b:1", wantErr: "user information is not supported"},
		{in: "http://b:1,wake=request", wantErr: "options need a named backend"},
		{in: "x=http://b:1,wake=sometimes", wantErr: `wake="sometimes": want arrival or request`},
		{in: "x=http://b:1,speed=fast", wantErr: `unknown option "speed"`},
		{in: "x=http://b:1,wake", wantErr: "want KEY=VALUE"},
		{in: "x=http://b:1,idle=10m", wantErr: "idle= needs wake=request"},
		{in: "x=http://b:1,wake=arrival,idle=10m", wantErr: "idle= needs wake=request"},
		{in: "x=http://b:1,wake=request,idle=30s", wantErr: "idle=30s: want between 1m0s and 24h0m0s"},
		{in: "x=http://b:1,wake=request,idle=25h", wantErr: "want between"},
		{in: "x=http://b:1,wake=request,idle=soon", wantErr: `idle="soon"`},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			bc, err := ParseBackend(tc.in)
			if expectError(t, err, tc.wantErr) {
				return
			}
			if bc.Name != tc.name || bc.URL.String() != tc.url || bc.Wake != tc.wake || bc.Idle != tc.idle {
				t.Errorf("got %q %s %s %s, want %q %s %s %s", bc.Name, bc.URL, bc.Wake, bc.Idle, tc.name, tc.url, tc.wake, tc.idle)
			}
		})
	}
}

func TestNewChecksTheConfig(t *testing.T) {
	p := func(s string) BackendConfig { return backendURL(t, s) }
	cases := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{"no backend", Config{}, "no backend"},
		{"unnamed mixed with named", Config{Backends: []BackendConfig{p("http://a:1"), p("b=http://b:1")}}, "cannot be mixed"},
		{"two unnamed", Config{Backends: []BackendConfig{p("http://a:1"), p("http://b:1")}}, "cannot be mixed"},
		{"a name twice", Config{Backends: []BackendConfig{p("b=http://a:1"), p("b=http://b:1")}}, `"b" given twice`},
		{"no URL", Config{Backends: []BackendConfig{{Name: "x"}}}, "no URL"},
		{"negative hold timeout", Config{Backends: []BackendConfig{p("http://a:1")}, HoldTimeout: -1}, "negative"},
		{"negative max held", Config{Backends: []BackendConfig{p("http://a:1")}, MaxHeld: -1}, "negative"},
		{"negative probe interval", Config{Backends: []BackendConfig{p("http://a:1")}, ProbeInterval: -time.Second}, "probe interval -1s is negative"},
		{"bad peers", Config{Backends: []BackendConfig{p("http://a:1")}, Peers: "gate"}, "want HOST:PORT"},
		{"idle without wake=request", Config{Backends: []BackendConfig{{Name: "x", URL: mustURL(t, "http://a:1"), Idle: time.Hour}}}, "idle needs wake=request"},
		{"ok", Config{Backends: []BackendConfig{p("small=http://a:1"), p("big=http://b:1,wake=request")}, Peers: "gate:11434"}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(tc.cfg)
			expectError(t, err, tc.wantErr)
		})
	}
}

// A benchmark that compresses time compresses the probe's period (and with
// it how stale a pool's /api/ps reading gets) alike.
func TestProbeInterval(t *testing.T) {
	for _, tc := range []struct {
		set, want time.Duration
	}{
		{0, defaultProbeIdle},
		{250 * time.Millisecond, 250 * time.Millisecond},
		{time.Hour, time.Hour},
	} {
		g, err := New(Config{Backends: []BackendConfig{backendURL(t, "http://a:1")}, ProbeInterval: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if g.probeIdle != tc.want || g.probeHeld != defaultProbeHeld {
			t.Errorf("ProbeInterval %s: probes every %s (%s while held), want %s (%s)", tc.set, g.probeIdle, g.probeHeld, tc.want, defaultProbeHeld)
		}
	}
}

func TestBackendsAreReportedInFlagOrder(t *testing.T) {
	g, err := New(Config{Backends: []BackendConfig{backendURL(t, "http://a:1/x")}})
	if err != nil {
		t.Fatal(err)
	}
	bs := g.Backends()
	if len(bs) != 1 || bs[0].Name != DefaultName || bs[0].URL.String() != "http://a:1/x" || bs[0].Wake != WakeArrival {
		t.Errorf("unnamed: %+v", bs)
	}
	g, _ = New(Config{Backends: []BackendConfig{backendURL(t, "small=http://a:1"), backendURL(t, "big=http://b:1,wake=request,idle=1h")}})
	bs = g.Backends()
	if len(bs) != 2 || bs[0].Name != "small" || bs[1].Name != "big" || bs[1].Idle != time.Hour || bs[1].Wake != WakeRequest {
		t.Errorf("named: %+v", bs)
	}
	if _, ok := g.Demand("nope"); ok {
		t.Error("Demand of an unknown backend says ok")
	}
}

func TestParseBackends(t *testing.T) {
	cases := []struct {
		name     string
		in       []string
		replicas []string // of the first backend
		discover bool
		parallel int
		people   int
		wantErr  string
	}{
		{name: "one URL is no pool", in: []string{"a=http://x:1"}},
		{name: "the same name twice is a pool", in: []string{"a=http://x:1,parallel=2", "a=http://y:1"}, replicas: []string{"http://x:1", "http://y:1"}, parallel: 2},
		{name: "three replicas, people", in: []string{"a=http://x:1,people=8", "a=http://y:1", "a=http://z:1"}, replicas: []string{"http://x:1", "http://y:1", "http://z:1"}, people: 8},
		{name: "a pool beside another backend", in: []string{"a=http://x:1", "b=http://q:1", "a=http://y:1"}, replicas: []string{"http://x:1", "http://y:1"}},
		{name: "dns", in: []string{"a=dns+http://ollama-headless.ai.svc:11434,parallel=4"}, discover: true, parallel: 4},
		{name: "dns https", in: []string{"a=dns+https://ollama-headless:443"}, discover: true},
		{name: "options on a later replica", in: []string{"a=http://x:1", "a=http://y:1,parallel=2"}, wantErr: "options go on its first"},
		{name: "a replica twice", in: []string{"a=http://x:1", "a=http://x:1"}, wantErr: "replica http://x:1 given twice"},
		{name: "dns and more", in: []string{"a=dns+http://h:1", "a=http://y:1"}, wantErr: "its replicas come from DNS"},
		{name: "more and dns", in: []string{"a=http://y:1", "a=dns+http://h:1"}, wantErr: "its replicas come from DNS"},
		{name: "unnamed dns", in: []string{"dns+http://h:1"}, wantErr: "needs a name"},
		{name: "dns with a bad scheme", in: []string{"a=dns+ftp://h:1"}, wantErr: "scheme must be http or https"},
		{name: "parallel without a pool", in: []string{"a=http://x:1,parallel=2"}, wantErr: "are for a pool"},
		{name: "parallel 0", in: []string{"a=http://x:1,parallel=0", "a=http://y:1"}, wantErr: `parallel="0": want a whole number from 1 to 256`},
		{name: "parallel too large", in: []string{"a=dns+http://h:1,parallel=257"}, wantErr: "from 1 to 256"},
		{name: "parallel not a number", in: []string{"a=dns+http://h:1,parallel=two"}, wantErr: `parallel="two"`},
		{name: "people on a wake=request pool", in: []string{"a=dns+http://h:1,wake=request,people=3"}, wantErr: "people= needs wake=arrival"},
		{name: "bind=late", in: []string{"a=dns+http://h:1,parallel=2,bind=late"}, discover: true, parallel: 2},
		{name: "bind=arrival", in: []string{"a=dns+http://h:1,bind=arrival"}, discover: true},
		{name: "bind=late without parallel", in: []string{"a=dns+http://h:1,bind=late"}, wantErr: "bind=late needs parallel=N"},
		{name: "bind without a pool", in: []string{"a=http://x:1,parallel=1,bind=late"}, wantErr: "are for a pool"},
		{name: "bind=soon", in: []string{"a=dns+http://h:1,parallel=1,bind=soon"}, wantErr: `bind="soon": want arrival`},
		{name: "unnamed twice", in: []string{"http://x:1", "http://y:1"}, replicas: nil}, // New refuses it: "cannot be mixed"
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			bcs, err := ParseBackends(tc.in)
			if expectError(t, err, tc.wantErr) {
				return
			}
			bc := bcs[0]
			var reps []string
			for _, u := range bc.Replicas {
				reps = append(reps, u.String())
			}
			if strings.Join(reps, " ") != strings.Join(tc.replicas, " ") || bc.Discover != tc.discover || bc.Parallel != tc.parallel || bc.People != tc.people {
				t.Errorf("got replicas %v discover %v parallel %d people %d; want %v %v %d %d", reps, bc.Discover, bc.Parallel, bc.People, tc.replicas, tc.discover, tc.parallel, tc.people)
			}
			if bc.Pool() != (len(tc.replicas) > 1 || tc.discover) {
				t.Errorf("Pool() = %v", bc.Pool())
			}
		})
	}
}

func TestNewChecksPools(t *testing.T) {
	u := func(s string) *url.URL { x, _ := url.Parse(s); return x }
	cases := []struct {
		name    string
		bc      BackendConfig
		wantErr string
	}{
		{"dns with replicas", BackendConfig{Name: "a", URL: u("http://h:1"), Discover: true, Replicas: []*url.URL{u("http://h:1"), u("http://i:1")}}, "takes its replicas from DNS"},
		{"URL not the first replica", BackendConfig{Name: "a", URL: u("http://h:1"), Replicas: []*url.URL{u("http://i:1"), u("http://h:1")}}, "URL must be the first replica"},
		{"a bad replica", BackendConfig{Name: "a", URL: u("http://h:1"), Replicas: []*url.URL{u("http://h:1"), u("ftp://i:1")}}, "replica 2"},
		{"parallel without a pool", BackendConfig{Name: "a", URL: u("http://h:1"), Parallel: 2}, "for a pool"},
		{"negative parallel", BackendConfig{Name: "a", URL: u("http://h:1"), Discover: true, Parallel: -1}, "parallel -1"},
		{"an unnamed pool", BackendConfig{URL: u("http://h:1"), Discover: true}, "a pool needs a name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Backends: []BackendConfig{tc.bc}})
			expectError(t, err, tc.wantErr)
		})
	}
}
