//go:build e2e

package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeollama"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
)

const (
	// The fake's default credential of its "exporter" account (an API key).
	fakeToken = "sk-0123456789abcdef0123456789abcdef"
	// The job name the ServiceMonitor gives the scrape (the Service's name),
	// which the PrometheusRule's alerts expect.
	job          = "openwebui-exporter"
	jobBasicAuth = "openwebui-exporter-basic-auth"
	// KEDA's prometheus trigger query in the examples.
	kedaQuery = "max(openwebui_active_users)"
	// Long enough for a change to pass the exporter's 1 s cache, a 1 s scrape
	// and Prometheus; short enough to fail fast.
	settle = 30 * time.Second
)

// TestPrometheus runs the fake Open WebUI, two exporters (one plain, one
// with the basic auth of examples/kubernetes/components/basic-auth) and a real
// Prometheus scraping both every second with the example's alert rules, and
// checks what Prometheus, KEDA's two triggers and the alerts see while people
// come and go and Open WebUI and the exporter stop.
func TestPrometheus(t *testing.T) {
	prometheusBin := requireTool(t, "prometheus")
	requireTool(t, "promtool")
	dir := t.TempDir()

	exporterBin := os.Getenv("E2E_EXPORTER_BINARY")
	if exporterBin == "" {
		exporterBin = goBuild(t, dir, ".", "openwebui_exporter")
	} else if !filepath.IsAbs(exporterBin) {
		exporterBin = filepath.Join(moduleRoot, exporterBin)
	}
	fakeBin := goBuild(t, dir, "./cmd/fakeopenwebui", "fakeopenwebui")

	// The example ScaledObject's metrics-api trigger: path and valueLocation.
	so := yamlDocs(t, "examples/kubernetes/components/keda-metrics-api/scaledobject.yaml")[0]
	soURL, err := url.Parse(fieldString(so, "spec", "triggers", 0, "metadata", "url"))
	if err != nil {
		t.Fatal(err)
	}
	valueLocation := fieldString(so, "spec", "triggers", 0, "metadata", "valueLocation")

	// The fake Open WebUI, with two people active.
	fakeAddr := harness.HeldAddr()
	startFake := func(humans int) *proc {
		p := start(t, "fakeopenwebui", fakeBin, os.Environ(), "--listen", fakeAddr, "--humans", fmt.Sprint(humans))
		waitHTTP200(t, "the fake Open WebUI is up", "http://"+fakeAddr+"/health")
		return p
	}
	fake := startFake(2)
	setHumans := func(k int) {
		t.Helper()
		r, err := request(http.MethodPost, fmt.Sprintf("http://%s/_fake/humans?active=%d", fakeAddr, k), "", "")
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("POST /_fake/humans?active=%d: %v %d %s", k, err, r.status, r.body)
		}
		t.Logf("fake Open WebUI: %d humans active now", k)
	}

	// The exporters: token from a file, short cache, and no stale counts, so
	// that a stopped Open WebUI shows at once.
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(fakeToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	exporterArgs := func(addr string, extra ...string) []string {
		return append([]string{"--openwebui.url=http://" + fakeAddr, "--openwebui.token-file=" + tokenFile,
			"--web.listen-address=" + addr, "--cache.ttl=1s", "--cache.max-stale=0s"}, extra...)
	}
	// The plain exporter runs the wake gate too, with two backends: ollama,
	// a stand-in Ollama that is stopped (connections refused) until a request
	// is held; and pool, two stand-in replicas that serve from the start and
	// load models as Ollama does, with tiny:1b to warm as soon as it is up
	// (so that the dashboard's warm-up and replica panels have series).
	ollama, err := fakeollama.NewServer("127.0.0.1:0", fakeollama.New(fakeollama.Config{ChunkInterval: -1}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(ollama.Stop)
	pool := []*standInReplica{startStandInReplica(t), startStandInReplica(t)}
	exporterAddr, gateAddr := harness.HeldAddr(), harness.HeldAddr()
	exporter := start(t, "exporter", exporterBin, harness.CleanEnv(), exporterArgs(exporterAddr,
		"--gate.listen-address="+gateAddr, "--gate.backend=ollama="+ollama.URL(),
		"--gate.backend=pool="+pool[0].srv.URL()+",warm="+warmModel, "--gate.backend=pool="+pool[1].srv.URL())...)
	exporterURL := "http://" + exporterAddr

	const basicAuthComponent = "examples/kubernetes/components/basic-auth/secrets.yaml"
	webConfig := filepath.Join(dir, "web-config.yml")
	if err := os.WriteFile(webConfig, []byte(secretString(t, basicAuthComponent, "openwebui-exporter-web-config", "web-config.yml")), 0o600); err != nil {
		t.Fatal(err)
	}
	// KEDA's login lives in the metrics-api component (only that trigger
	// logs in); its bcrypt hash is in the web config above.
	const kedaLogin = "examples/kubernetes/components/basic-auth-metrics-api/secret.yaml"
	kedaUser := secretString(t, kedaLogin, "openwebui-exporter-keda", "username")
	kedaPassword := secretString(t, kedaLogin, "openwebui-exporter-keda", "password")
	promUser := secretString(t, basicAuthComponent, "openwebui-exporter-prometheus", "username")
	promPassword := secretString(t, basicAuthComponent, "openwebui-exporter-prometheus", "password")
	authAddr := harness.HeldAddr()
	start(t, "exporter-basic-auth", exporterBin, harness.CleanEnv(), exporterArgs(authAddr, "--web.config.file="+webConfig)...)
	authURL := "http://" + authAddr

	waitHTTP200(t, "the exporter is ready", exporterURL+"/readyz")
	eventually(t, settle, "KEDA's metrics-api trigger reads 2 from the exporter", func() (bool, string) {
		v, err := kedaMetricsAPI(exporterURL+soURL.Path, valueLocation, "", "")
		return err == nil && v == 2, fmt.Sprintf("value %v, error %v", v, err)
	})

	t.Run("build info", func(t *testing.T) { checkBuildInfo(t, exporterBin, exporterURL) })

	lint := func(when string) {
		t.Helper()
		r, err := request(http.MethodGet, exporterURL+"/metrics", "", "")
		if err != nil || r.status != http.StatusOK {
			t.Fatalf("GET /metrics: %v %d", err, r.status)
		}
		out, code := promtool(t, r.body, "check", "metrics")
		if code != 0 || out != "" {
			t.Fatalf("promtool check metrics (%s): exit %d\n%s", when, code, out)
		}
		t.Logf("ok: promtool check metrics on /metrics (%s): exit 0, no problems", when)
	}
	lint("count known")

	t.Run("basic auth", func(t *testing.T) {
		for _, c := range []struct {
			path, user, password string
			want                 int
		}{
			{soURL.Path, "", "", http.StatusUnauthorized},
			{soURL.Path, kedaUser, "wrong", http.StatusUnauthorized},
			{soURL.Path, kedaUser, kedaPassword, http.StatusOK},
			{"/metrics", promUser, promPassword, http.StatusOK},
			// Why the component probes the port: basic auth covers /healthz
			// and /readyz too. Should the exporter ever exempt them, switch
			// the component's probes back to httpGet.
			{"/healthz", "", "", http.StatusUnauthorized},
			{"/readyz", "", "", http.StatusUnauthorized},
		} {
			var r response
			var err error
			eventually(t, settle, fmt.Sprintf("GET %s as %q answers %d", c.path, c.user, c.want), func() (bool, string) {
				r, err = request(http.MethodGet, authURL+c.path, c.user, c.password)
				return err == nil && r.status == c.want, fmt.Sprintf("HTTP %d %v", r.status, err)
			})
		}
		eventually(t, settle, "KEDA's metrics-api trigger with the TriggerAuthentication's credentials reads 2", func() (bool, string) {
			v, err := kedaMetricsAPI(authURL+soURL.Path, valueLocation, kedaUser, kedaPassword)
			return err == nil && v == 2, fmt.Sprintf("value %v, error %v", v, err)
		})
	})

	// Prometheus scrapes both exporters every second and evaluates the
	// PrometheusRule's rules and the gate's; and a recorded kube-state-metrics
	// for the dashboard.
	rules := writeRules(t, dir, false)
	ksmAddr := serveKubeStateMetrics(t)
	promAddr := harness.HeldAddr()
	config := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: %s
    static_configs:
      - targets: [%q]
  - job_name: %s
    basic_auth:
      username: %q
      password: %q
    static_configs:
      - targets: [%q]
  - job_name: kube-state-metrics
    static_configs:
      - targets: [%q]
`, rules, job, exporterAddr, jobBasicAuth, promUser, promPassword, authAddr, ksmAddr)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := promtool(t, nil, "check", "config", config); code != 0 {
		t.Fatalf("promtool check config: exit %d\n%s", code, out)
	}
	start(t, "prometheus", prometheusBin, os.Environ(), "--config.file="+config,
		"--storage.tsdb.path="+filepath.Join(dir, "data"), "--web.listen-address="+promAddr)
	p := prom{"http://" + promAddr}
	waitHTTP200(t, "Prometheus is ready", p.base+"/-/ready")

	eventually(t, settle, "Prometheus scrapes both exporters (up 1)", func() (bool, string) {
		s, err := p.query(`up{job=~"openwebui-exporter.*"} == 1`)
		return err == nil && len(s) == 2, p.describe(`up{job=~"openwebui-exporter.*"}`)
	})

	// follow waits until every exporter's openwebui_active_users and KEDA's
	// query show want.
	follow := func(want float64) {
		t.Helper()
		eventually(t, settle, fmt.Sprintf("openwebui_active_users is %v on both exporters, openwebui_up 1", want), func() (bool, string) {
			s, err := p.query("openwebui_active_users")
			if err != nil || len(s) != 2 {
				return false, p.describe("openwebui_active_users")
			}
			for _, x := range s {
				if v, err := x.value(); err != nil || v != want {
					return false, p.describe("openwebui_active_users")
				}
			}
			up, err := p.query("openwebui_up == 1")
			return err == nil && len(up) == 2, p.describe("openwebui_up")
		})
		v, err := p.kedaPrometheus(kedaQuery)
		if err != nil || v != want {
			t.Fatalf("KEDA's prometheus trigger (%s): %v, %v; want %v", kedaQuery, v, err, want)
		}
		t.Logf("ok: KEDA's prometheus trigger reads %s = %v (one sample)", kedaQuery, v)
		v, err = kedaMetricsAPI(exporterURL+soURL.Path, valueLocation, "", "")
		if err != nil || v != want {
			t.Fatalf("KEDA's metrics-api trigger: %v, %v; want %v", v, err, want)
		}
		t.Logf("ok: KEDA's metrics-api trigger reads %s = %v", valueLocation, v)
	}
	follow(2)

	// A message held while Ollama sleeps, delivered once it serves: the
	// gate's panels then show a state change, a hold and its outcome.
	t.Run("gate holds and delivers", func(t *testing.T) {
		done := make(chan response, 1)
		go func() {
			r, err := post("http://"+gateAddr+"/ollama/api/chat", `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`, 2*time.Minute)
			if err != nil {
				r = response{body: []byte(err.Error())}
			}
			done <- r
		}()
		eventually(t, settle, "Prometheus sees the request held and the backend asleep", func() (bool, string) {
			q := `openwebui_gate_held_requests{job="` + job + `"} == 1 and on (backend) openwebui_gate_backend_state{state="asleep"} == 1`
			s, err := p.query(q)
			return err == nil && len(s) == 1, p.describe(q)
		})
		// The gate's alerts match the real series: both go pending while the
		// request waits (they fire only after minutes).
		eventually(t, settle, "alerts OpenWebUIGateRequestHeldTooLong and OpenWebUIGateAsleepWithDemand are pending", func() (bool, string) {
			return countAlerts(p, "OpenWebUIGateRequestHeldTooLong", "pending") == 1 &&
				countAlerts(p, "OpenWebUIGateAsleepWithDemand", "pending") == 1, alertsState(p)
		})
		if err := ollama.Start(0); err != nil {
			t.Fatal(err)
		}
		if r := <-done; r.status != http.StatusOK {
			t.Fatalf("the held chat: HTTP %d %s", r.status, r.body)
		}
		eventually(t, settle, "Prometheus sees one hold, delivered", func() (bool, string) {
			q := `openwebui_gate_hold_duration_seconds_count == 1 and on (backend) openwebui_gate_requests_total{outcome="delivered"} == 1`
			s, err := p.query(q)
			return err == nil && len(s) == 1, p.describe(q)
		})
	})
	t.Run("pool warms and routes", func(t *testing.T) { checkPool(t, p, "http://"+gateAddr+"/pool", pool) })
	t.Run("dashboard", func(t *testing.T) { checkDashboard(t, p) })

	ruleN := ruleCount(t)
	eventually(t, settle, "every alert rule evaluates without error", func() (bool, string) {
		r, err := request(http.MethodGet, p.base+"/api/v1/rules", "", "")
		if err != nil {
			return false, err.Error()
		}
		body := string(r.body)
		health := regexp.MustCompile(`"health":"(\w+)"`).FindAllStringSubmatch(body, -1)
		if len(health) != ruleN || ruleN < 9 { // the exporter's 3, the gate's 6 at least
			return false, fmt.Sprintf("%d rules in the files: %s", ruleN, body)
		}
		for _, h := range health {
			if h[1] != "ok" {
				return false, body
			}
		}
		return true, fmt.Sprintf("%d rules, health ok", ruleN)
	})

	for _, q := range []string{
		`openwebui_version_info{version="0.11.0"}`,
		"openwebui_scrape_duration_seconds",
		"openwebui_exporter_build_info",
		"time() - openwebui_last_success_timestamp_seconds < 10",
	} {
		if s, err := p.query(q); err != nil || len(s) != 2 {
			t.Fatalf("want 2 samples: %s", p.describe(q))
		}
		t.Logf("ok: %s", p.describe(q))
	}

	setHumans(5)
	follow(5)
	setHumans(0)
	follow(0)
	setHumans(3)
	follow(3)

	// Open WebUI goes away: the count must disappear, not read 0.
	fake.stop(t)
	t.Logf("fake Open WebUI stopped")
	eventually(t, settle, "openwebui_up 0 and no openwebui_active_users", func() (bool, string) {
		down, err1 := p.query("openwebui_up == 0")
		count, err2 := p.query("openwebui_active_users")
		return err1 == nil && err2 == nil && len(down) == 2 && len(count) == 0,
			p.describe("openwebui_up") + "; " + p.describe("openwebui_active_users")
	})
	if v, err := p.kedaPrometheus(kedaQuery); !errors.Is(err, errEmpty) {
		t.Fatalf("KEDA's prometheus trigger (%s) while Open WebUI is down: %v, %v; want an empty result, so that KEDA applies its fallback", kedaQuery, v, err)
	}
	t.Logf("ok: KEDA's prometheus trigger (%s) gets an empty result: an error with ignoreNullValues \"false\"", kedaQuery)
	if v, err := kedaMetricsAPI(exporterURL+soURL.Path, valueLocation, "", ""); err == nil {
		t.Fatalf("KEDA's metrics-api trigger while Open WebUI is down: %v, want an error", v)
	} else {
		t.Logf("ok: KEDA's metrics-api trigger gets an error: %v", err)
	}
	// The stale alert needs the time of the last success to stay.
	if s, err := p.query("openwebui_last_success_timestamp_seconds"); err != nil || len(s) != 2 {
		t.Fatalf("openwebui_last_success_timestamp_seconds gone while Open WebUI is down: %s", p.describe("openwebui_last_success_timestamp_seconds"))
	}
	lint("Open WebUI down")
	eventually(t, settle, "alert OpenWebUIUnreachable is pending for both exporters", func() (bool, string) {
		return countAlerts(p, "OpenWebUIUnreachable", "pending") == 2, alertsState(p)
	})

	// Open WebUI is back, with one person.
	startFake(1)
	follow(1)

	// The plain exporter stops: its alert, and KEDA still reads the other one.
	exporter.stop(t)
	t.Logf("exporter (job %s) stopped", job)
	eventually(t, settle, "alert OpenWebUIExporterDown is pending for job "+job, func() (bool, string) {
		return countAlerts(p, "OpenWebUIExporterDown", "pending") == 1, alertsState(p)
	})
	if v, err := p.kedaPrometheus(kedaQuery); err != nil || v != 1 {
		t.Fatalf("KEDA's prometheus trigger with one exporter left: %v, %v; want 1", v, err)
	}
	t.Logf("ok: with one exporter left, %s still reads 1", kedaQuery)
}

func countAlerts(p prom, name, state string) int {
	alerts, err := p.alerts()
	if err != nil {
		return -1
	}
	n := 0
	for _, a := range alerts {
		if a.Labels["alertname"] == name && a.State == state {
			n++
		}
	}
	return n
}

func alertsState(p prom) string {
	alerts, err := p.alerts()
	if err != nil {
		return err.Error()
	}
	var parts []string
	for _, a := range alerts {
		parts = append(parts, fmt.Sprintf("%s{job=%q,instance=%q} %s", a.Labels["alertname"], a.Labels["job"], a.Labels["instance"], a.State))
	}
	return fmt.Sprintf("%d alerts [%s]", len(alerts), strings.Join(parts, "; "))
}

// checkBuildInfo checks that version information reaches --version and
// openwebui_exporter_build_info. A binary from promu (E2E_EXPORTER_BINARY)
// must carry the VERSION file's version and a git revision.
func checkBuildInfo(t *testing.T, bin, exporterURL string) {
	out, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		t.Fatalf("--version: %v\n%s", err, out)
	}
	t.Logf("--version:\n%s", strings.TrimSpace(string(out)))
	r, err := request(http.MethodGet, exporterURL+"/metrics", "", "")
	if err != nil {
		t.Fatal(err)
	}
	info := regexp.MustCompile(`(?m)^openwebui_exporter_build_info\{.*\} 1$`).FindString(string(r.body))
	if info == "" {
		t.Fatalf("no openwebui_exporter_build_info on /metrics")
	}
	t.Logf("/metrics: %s", info)
	if os.Getenv("E2E_EXPORTER_BINARY") == "" {
		return
	}
	raw, err := os.ReadFile(filepath.Join(moduleRoot, "VERSION"))
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimSpace(string(raw))
	m := regexp.MustCompile(`version ([^ ]+) \(branch: ([^,]*), revision: ([0-9a-f]{40})\)`).FindStringSubmatch(string(out))
	if m == nil || m[1] != version || m[2] == "" {
		t.Fatalf("--version: want version %s, a branch and a 40-hex revision (build the binary with promu, as make does)", version)
	}
	for _, label := range []string{`version="` + version + `"`, `revision="` + m[3] + `"`, `branch="` + m[2] + `"`} {
		if !strings.Contains(info, label) {
			t.Errorf("openwebui_exporter_build_info lacks %s", label)
		}
	}
}
