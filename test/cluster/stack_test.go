package cluster

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeToken is the fake Open WebUI's API key of its "exporter" account.
const fakeToken = "sk-0123456789abcdef0123456789abcdef"

// stack is one scenario's world: a fake Open WebUI, the exporter
// replica(s), a Service-like proxy in front of their gRPC ports, and a
// Prometheus for the prometheus trigger; the stub Ollama Deployment(s) and
// their ScaledObject(s) live in their own namespace.
type stack struct {
	t         *testing.T
	trigger   string
	ns        string
	fakeURL   string
	exporters []*exporter
	service   *serviceProxy
	promURL   string
	target    string // the (first) stub Ollama Deployment
	soName    string // its ScaledObject
	replicas  *replicaWatcher
	targets   []*scaledTarget // one per gate backend (stackOptions.backends), else just the one above
	shipped   shipped
	tuning    tuning
}

// scaledTarget is one stub Ollama Deployment and the ScaledObject that
// scales it.
type scaledTarget struct {
	backend  string // the trigger's metadata backend ("": none, the old single-Ollama setup)
	name     string // the Deployment
	soName   string
	replicas *replicaWatcher
}

type exporter struct {
	proc     *proc
	httpAddr string
	grpcAddr string
	gateAddr string // "" when the gate is off
}

type stackOptions struct {
	exporters    int      // default: the shipped count for push, else 1
	extraArgs    []string // appended to the shipped behaviour flags
	fakeArgs     []string
	startReplica int // Ollama's spec.replicas before KEDA takes over
	scrape       time.Duration
	// gate switches the wake gate on in every exporter replica.
	gate *gateOptions
	// backends: one stub Deployment "ollama-NAME" and one ScaledObject per
	// name, whose trigger has metadata backend: NAME (the gate's named
	// backends). Empty: one Deployment "ollama", no backend metadata.
	backends []string
	// chartValues is a values file for the chart render the ScaledObject
	// and the exporter's flags come from (e.g. a pool in gate.backends,
	// whose ScaledObject then reads that backend already).
	chartValues string
}

// gateOptions are the gate's flags for every replica. With several
// replicas, each listens on its own loopback address 127.0.0.N (all on the
// same gate port, like pods behind a headless Service) and is told the
// other's address with --gate.peers.
type gateOptions struct {
	backends []string // --gate.backend values
	peers    bool
	args     []string // more --gate.* flags
}

func newStack(t *testing.T, trigger string, tu tuning, opt stackOptions) *stack {
	t.Helper()
	s := &stack{t: t, trigger: trigger, ns: newNamespace(t, strings.ReplaceAll(trigger, "-", "")), target: "ollama", tuning: tu}
	if opt.chartValues != "" {
		s.shipped = shippedFor(t, trigger, opt.chartValues)
	} else {
		s.shipped = shippedFor(t, trigger)
	}
	t.Logf("%s: ScaledObject and exporter flags from %s", trigger, s.shipped.source)

	fakeAddr := heldAddr()
	fake := startT(t, "fakeopenwebui", fakeBin, nil, append([]string{"--listen", fakeAddr, "--humans", "0", "--token", fakeToken}, opt.fakeArgs...)...)
	if err := waitListening(fake, fakeAddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	s.fakeURL = "http://" + fakeAddr

	// As many exporters as the chart runs for push and prometheus (KEDA's
	// metrics-api trigger asks one of them through the Service anyway).
	n := opt.exporters
	if n == 0 {
		n = 1
		if trigger != triggerMetricsAPI {
			n = s.shipped.exporterCount
		}
	}
	hosts, gatePort := make([]string, n), 0
	for i := range hosts {
		hosts[i] = "127.0.0.1"
	}
	if opt.gate != nil {
		if opt.gate.peers {
			if n != 2 {
				t.Fatalf("gate peers on loopback are set up for 2 replicas, not %d", n)
			}
			hosts = []string{"127.0.0.1", "127.0.0.2"}
			gatePort = heldPortOn(hosts...)
		}
	}
	for i := range n {
		extra := opt.extraArgs
		gateAddr := ""
		if opt.gate != nil {
			if gatePort != 0 {
				gateAddr = net.JoinHostPort(hosts[i], strconv.Itoa(gatePort))
				peer := net.JoinHostPort(hosts[1-i], strconv.Itoa(gatePort))
				extra = append(slices.Clone(extra), "--gate.peers="+peer)
			} else {
				gateAddr = heldAddrOn(hosts[i])
			}
			extra = append(slices.Clone(extra), "--gate.listen-address="+gateAddr)
			for _, b := range opt.gate.backends {
				extra = append(extra, "--gate.backend="+b)
			}
			extra = append(extra, opt.gate.args...)
		}
		s.exporters = append(s.exporters, s.startExporter(fmt.Sprintf("exporter-%d", i), hosts[i], gateAddr, extra))
	}
	var grpcBackends []string
	for _, e := range s.exporters {
		grpcBackends = append(grpcBackends, e.grpcAddr)
	}
	s.service = startServiceProxy(t, grpcBackends)

	lb := loopback{scalerAddress: s.service.addr, metricsURL: "http://" + s.exporters[0].httpAddr}
	if trigger == triggerPrometheus {
		scrape := opt.scrape
		if scrape == 0 {
			scrape = s.shipped.scrapeInterval
		}
		s.promURL = startPrometheus(t, s.exporters, scrape)
		lb.prometheusURL = s.promURL
		// Until the first scrape the query's result is empty, which the
		// chart's ignoreNullValues "false" makes an error: KEDA would count
		// failures (and with a fallback, wake Ollama) before the scenario
		// begins. A real Prometheus has had the series for long.
		if err := poll(2*scrape+30*time.Second, 100*time.Millisecond, func() (bool, error) {
			return promQuery(s.promURL, "max(openwebui_active_users)") != "[]", nil
		}); err != nil {
			t.Fatalf("Prometheus never scraped openwebui_active_users: %v", err)
		}
	}

	backends := opt.backends
	if len(backends) == 0 {
		backends = []string{""}
	}
	for _, b := range backends {
		st := &scaledTarget{backend: b, name: s.target}
		if b != "" {
			st.name = s.target + "-" + b
		}
		stubOllama(t, s.ns, st.name, opt.startReplica)
		st.replicas = watchReplicas(t, s.ns, st.name)
		so, name := scaledObjectFor(t, s.shipped, s.ns, st.name, lb, tu)
		if tr := so["spec"].(map[string]any)["triggers"].([]any)[0].(map[string]any); b != "" && triggerBackend(tr) != b {
			// One ScaledObject per backend, its trigger reading that backend.
			name += "-" + b
			so["metadata"].(map[string]any)["name"] = name
			tr["metadata"].(map[string]any)["backend"] = b
		}
		st.soName = name
		applyObject(t, s.ns, so)
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("ScaledObject applied:\n%s", yamlOf(so))
				t.Logf("ScaledObject status: %s", scaledObjectConditions(s.ns, st.soName))
			}
			// Stop KEDA from polling the processes this test is about to stop.
			_, _ = cp.kubectl(nil, "delete", "scaledobject", "-n", s.ns, st.soName, "--wait=false")
		})
		s.targets = append(s.targets, st)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("keda-operator log for %s:\n%s", s.ns, grepLines(cp.keda().out.String(), s.ns, 40))
		}
	})
	s.target, s.soName, s.replicas = s.targets[0].name, s.targets[0].soName, s.targets[0].replicas
	// KEDA has taken over once the ScaledObjects are Ready.
	for _, st := range s.targets {
		if err := poll(60*time.Second, 200*time.Millisecond, func() (bool, error) {
			return strings.Contains(scaledObjectConditions(s.ns, st.soName), "Ready=True"), nil
		}); err != nil {
			t.Fatalf("ScaledObject %s never Ready: %s", st.soName, scaledObjectConditions(s.ns, st.soName))
		}
	}
	return s
}

// backend is the stub Deployment and ScaledObject of a gate backend.
func (s *stack) backend(name string) *scaledTarget {
	s.t.Helper()
	for _, st := range s.targets {
		if st.backend == name {
			return st
		}
	}
	s.t.Fatalf("no stub Ollama for backend %q", name)
	return nil
}

func (s *stack) startExporter(name, host, gateAddr string, extra []string) *exporter {
	s.t.Helper()
	e := &exporter{httpAddr: heldAddrOn(host), grpcAddr: heldAddrOn(host), gateAddr: gateAddr}
	args := mergeFlags(s.shipped.exporterArgs, extra)
	args = append([]string{"--web.listen-address=" + e.httpAddr, "--keda.listen-address=" + e.grpcAddr}, args...)
	e.proc = startT(s.t, name, exporterBin, []string{"API_URL=" + s.fakeURL, "TOKEN=" + fakeToken}, args...)
	if err := waitListening(e.proc, e.httpAddr, 30*time.Second); err != nil {
		s.t.Fatal(err)
	}
	if err := waitListening(e.proc, e.grpcAddr, 30*time.Second); err != nil {
		s.t.Fatal(err)
	}
	if gateAddr != "" {
		if err := waitListening(e.proc, gateAddr, 30*time.Second); err != nil {
			s.t.Fatal(err)
		}
	}
	return e
}

// arrive makes a person active in Open WebUI and returns when.
func (s *stack) arrive(name string) time.Time {
	s.t.Helper()
	at := time.Now()
	if err := httpPost(s.fakeURL + "/_fake/active?name=" + name); err != nil {
		s.t.Fatal(err)
	}
	return at
}

// leave makes a person inactive (last active long ago) and returns when.
func (s *stack) leave(name string) time.Time {
	s.t.Helper()
	at := time.Now()
	if err := httpPost(s.fakeURL + "/_fake/inactive?name=" + name); err != nil {
		s.t.Fatal(err)
	}
	return at
}

// fault sets the fake's failure mode (none, 500, html, slow, 401, 403-gate).
func (s *stack) fault(kind string) {
	s.t.Helper()
	if err := httpPost(s.fakeURL + "/_fake/fault?kind=" + kind); err != nil {
		s.t.Fatal(err)
	}
}

// activeUsers is what the first live exporter answers on /active_users.
func (s *stack) activeUsers() string {
	for _, e := range s.exporters {
		if e.proc.exited() {
			continue
		}
		r, err := httpGet("http://" + e.httpAddr + "/active_users")
		if err != nil {
			return err.Error()
		}
		return fmt.Sprintf("HTTP %d %s", r.status, strings.TrimSpace(r.body))
	}
	return "no exporter running"
}

// holds checks that spec.replicas stays at want for d (and logs KEDA's view).
func (s *stack) holds(want int, d time.Duration) {
	s.t.Helper()
	since := time.Now()
	time.Sleep(d)
	if ch := s.replicas.changesSince(since); len(ch) > 0 {
		s.t.Fatalf("spec.replicas changed while it had to stay %d: %v (ScaledObject: %s)", want, ch, scaledObjectConditions(s.ns, s.soName))
	}
	if cur, _ := s.replicas.current(); cur != want {
		s.t.Fatalf("spec.replicas is %d, want %d", cur, want)
	}
	s.t.Logf("spec.replicas stayed %d for %s; ScaledObject: %s", want, d, scaledObjectConditions(s.ns, s.soName))
}

// wake waits for 0 -> 1 after a person arrived at arrived, and returns the time it took.
func (s *stack) wake(arrived time.Time, timeout time.Duration) time.Duration {
	s.t.Helper()
	at, err := s.replicas.waitFor(1, arrived, timeout)
	if err != nil {
		s.t.Fatalf("%v; exporter: %s; ScaledObject: %s", err, s.activeUsers(), scaledObjectConditions(s.ns, s.soName))
	}
	return at.Sub(arrived)
}

// serviceProxy stands in for the exporter's ClusterIP Service: each new
// connection goes to one of the backends, skipping those that refuse it
// (the endpoints controller removes a dead pod the same way).
type serviceProxy struct {
	addr     string
	backends []string
	mu       sync.Mutex
	next     int
	open     map[int]int // backend index -> open connections
	ln       net.Listener
}

// busiest is the index of the backend with the most open connections (-1: none).
func (p *serviceProxy) busiest() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	best, n := -1, 0
	for i, c := range p.open {
		if c > n {
			best, n = i, c
		}
	}
	return best
}

func startServiceProxy(t *testing.T, backends []string) *serviceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &serviceProxy{addr: ln.Addr().String(), backends: backends, ln: ln, open: map[int]int{}}
	var wg sync.WaitGroup
	var conns sync.Map
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				conns.Store(c, true)
				defer conns.Delete(c)
				p.forward(c, &conns)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		conns.Range(func(k, _ any) bool { k.(net.Conn).Close(); return true })
		wg.Wait()
	})
	return p
}

func (p *serviceProxy) forward(c net.Conn, conns *sync.Map) {
	defer c.Close()
	var up net.Conn
	idx := -1
	for range p.backends {
		p.mu.Lock()
		i := p.next % len(p.backends)
		p.next++
		p.mu.Unlock()
		var err error
		if up, err = net.DialTimeout("tcp", p.backends[i], time.Second); err == nil {
			idx = i
			break
		}
	}
	if up == nil {
		return
	}
	p.mu.Lock()
	p.open[idx]++
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.open[idx]--
		p.mu.Unlock()
	}()
	conns.Store(up, true)
	defer conns.Delete(up)
	defer up.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, c); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, up); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	<-done
	<-done
}

// startPrometheus runs a real Prometheus (Debian package) scraping the
// exporters every interval, and returns its base URL.
func startPrometheus(t *testing.T, exporters []*exporter, interval time.Duration) string {
	t.Helper()
	bin := os.Getenv("CLUSTER_PROMETHEUS")
	if bin == "" {
		bin = "prometheus"
	}
	dir := t.TempDir()
	var targets []string
	for _, e := range exporters {
		targets = append(targets, fmt.Sprintf("%q", e.httpAddr))
	}
	config := fmt.Sprintf(`global:
  scrape_interval: %s
  scrape_timeout: %s
scrape_configs:
  - job_name: openwebui-exporter
    static_configs:
      - targets: [%s]
`, interval, min(interval, 10*time.Second), strings.Join(targets, ", "))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := heldAddr()
	p := startT(t, "prometheus", bin, nil, "--config.file="+filepath.Join(dir, "prometheus.yml"),
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+addr, "--log.level=warn")
	base := "http://" + addr
	if err := poll(60*time.Second, 100*time.Millisecond, func() (bool, error) {
		if p.exited() {
			return false, fmt.Errorf("prometheus exited (install the Debian package prometheus; .ci/cluster.sh does):\n%s", p.tail(2000))
		}
		r, err := httpGet(base + "/-/ready")
		return err == nil && r.status == 200, nil
	}); err != nil {
		t.Fatal(err)
	}
	return base
}

// promQuery returns an instant query's result as JSON text, for logs.
func promQuery(base, q string) string {
	r, err := httpGet(base + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		return err.Error()
	}
	var res struct {
		Data struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	_ = json.Unmarshal([]byte(r.body), &res)
	return string(res.Data.Result)
}

func grepLines(s, needle string, last int) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, needle) {
			out = append(out, l)
		}
	}
	if len(out) > last {
		out = out[len(out)-last:]
	}
	return strings.Join(out, "\n")
}

// mergeFlags returns base with the flags of overrides replacing those of the
// same name (the exporter refuses a repeated flag).
func mergeFlags(base, overrides []string) []string {
	name := func(a string) string { n, _, _ := strings.Cut(strings.TrimLeft(a, "-"), "="); return n }
	replaced := map[string]bool{}
	for _, o := range overrides {
		replaced[name(o)] = true
	}
	var out []string
	for _, a := range base {
		if !replaced[name(a)] {
			out = append(out, a)
		}
	}
	return append(out, overrides...)
}
