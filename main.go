// Command openwebui_exporter tells Prometheus and KEDA how many people use
// Open WebUI right now, so that Ollama runs exactly while someone is there.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/alecthomas/kingpin/v2"
	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	versioncollector "github.com/prometheus/client_golang/prometheus/collectors/version"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"
	sloggokit "github.com/tjhop/slog-gokit"

	"github.com/openwebui-exporter/openwebui_exporter/collector"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

const exporterName = "openwebui_exporter"

func main() {
	app := kingpin.CommandLine
	app.Help = "Exports how many people use Open WebUI right now, for Prometheus (/metrics) and KEDA (/active_users, and its external scaler protocol over gRPC with --keda.listen-address)."
	var (
		webConfig      = kingpinflag.AddFlags(app, defaultListenAddress())
		telemetryPath  = app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
		baseURL        = app.Flag("openwebui.url", "Open WebUI's base URL, e.g. http://open-webui:8080.").Envar("API_URL").String()
		tokenFile      = app.Flag("openwebui.token-file", "File holding the Open WebUI API key (sk-...) or JWT; re-read on every fetch. Alternatively set the env var TOKEN.").String()
		countMode      = app.Flag("openwebui.count-mode", "usage: read /api/usage (any account); admin: page the admin user list (admin account; exact without self-stamping, adds openwebui_users).").Default(string(openwebui.ModeUsage)).Enum(string(openwebui.ModeUsage), string(openwebui.ModeAdmin))
		timeout        = app.Flag("openwebui.timeout", "Deadline for one fetch from Open WebUI, all its requests included; keep it below KEDA's 3s HTTP timeout.").Default("2500ms").Duration()
		updateInterval = app.Flag("openwebui.status-update-interval", "The value of Open WebUI's DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL, if set there (0 when unset).").Default("0s").Duration()
		caFile         = app.Flag("openwebui.tls.ca-file", "PEM file of the CA that signs Open WebUI's certificate (default: the system's CAs).").String()
		insecureTLS    = app.Flag("openwebui.tls.insecure-skip-verify", "Do not verify Open WebUI's TLS certificate. Insecure: anybody in between can read the token.").Bool()
		maxStale       = app.Flag("cache.max-stale", "How old a good count may be and still be answered when a refresh takes over 250ms or Open WebUI fails; 0 makes readers wait for the refresh.").Default("2m").Duration()
		cacheTTL       = app.Flag("cache.ttl", "How long a count is served before Open WebUI is asked again, e.g. 60s or 60 (seconds); 0 asks on every request (see --cache.max-stale).").Envar("CACHE_TIMEOUT").Default("60s").String()
		logLevel       = app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").Enum("debug", "info", "warn", "error")
		logFormat      = app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").Enum("logfmt", "json")
		kedaOpts       = addKEDAFlags(app)
	)
	app.Version(version.Print(exporterName))
	app.HelpFlag.Short('h')
	kingpin.MustParse(app.Parse(os.Args[1:]))

	logger, filtered := newLogger(*logFormat, *logLevel)
	fail := func(format string, args ...any) {
		level.Error(logger).Log("msg", fmt.Sprintf(format, args...))
		os.Exit(1)
	}
	if _, err := listenPort(); err != nil {
		fail("%v", err)
	}
	upstream, err := parseBaseURL(*baseURL)
	if err != nil {
		fail("--openwebui.url (env API_URL): %v", err)
	}
	token, err := tokenSource(*tokenFile)
	if err != nil {
		fail("%v", err)
	}
	ttl, err := parseTTL(*cacheTTL)
	if err != nil {
		fail("--cache.ttl (env CACHE_TIMEOUT): %v", err)
	}
	if *maxStale < 0 || *maxStale > openwebui.ActivityWindow {
		fail("--cache.max-stale must be between 0 and 3m (older counts describe a window that has passed), got %s", *maxStale)
	}
	httpClient, err := upstreamHTTPClient(*caFile, *insecureTLS)
	if err != nil {
		fail("%v", err)
	}
	if *insecureTLS {
		level.Warn(logger).Log("msg", "--openwebui.tls.insecure-skip-verify is on: Open WebUI's certificate is not checked, and anybody in between can read the token")
	}
	if *timeout <= 0 {
		fail("--openwebui.timeout must be positive, got %s", *timeout)
	}
	if *updateInterval < 0 || *updateInterval > openwebui.ActivityWindow-time.Minute {
		fail("--openwebui.status-update-interval must be between 0 and 2m (the exporter must re-stamp its own account within Open WebUI's 180s window), got %s", *updateInterval)
	}
	switch *telemetryPath {
	case "/", "/active_users", "/healthz", "/readyz":
		fail("--web.telemetry-path must not be one of the exporter's other paths (/, /active_users, /healthz, /readyz), got %q", *telemetryPath)
	}
	if !strings.HasPrefix(*telemetryPath, "/") {
		fail("--web.telemetry-path must start with /, got %q", *telemetryPath)
	}
	if ttl > openwebui.ActivityWindow {
		level.Warn(logger).Log("msg", "--cache.ttl is longer than Open WebUI's 180s activity window: a count may describe people who left, and an arrival may wait for the whole TTL", "ttl", ttl)
	}

	level.Info(logger).Log("msg", "starting "+exporterName, "version", version.Info(), "build_context", version.BuildContext())
	client := openwebui.NewClient(openwebui.Config{
		BaseURL:              upstream,
		Token:                token,
		Mode:                 openwebui.Mode(*countMode),
		StatusUpdateInterval: *updateInterval,
		UserAgent:            exporterName + "/" + version.Version,
		HTTPClient:           httpClient,
		Logger:               logger,
	})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: ttl, MaxStale: *maxStale, Timeout: *timeout, Logger: logger})
	grpcServer, err := listenKEDA(kedaOpts, cache, logger)
	if err != nil {
		fail("%v", err)
	}

	handler, err := newHandler(cache, token, *telemetryPath, logger)
	if err != nil {
		fail("%v", err)
	}

	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 2)
	go func() {
		served <- web.ListenAndServe(server, webConfig, slog.New(sloggokit.NewGoKitHandler(filtered, slog.LevelDebug)))
	}()
	if grpcServer != nil {
		go func() {
			if err := grpcServer.Serve(); err != nil {
				served <- fmt.Errorf("KEDA gRPC: %w", err)
			}
		}()
	}
	select {
	case err := <-served:
		fail("serving: %v", err)
	case <-ctx.Done():
	}
	// Stop accepting, let in-flight requests finish, and be gone well within
	// Kubernetes' grace period.
	level.Info(logger).Log("msg", "shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancel()
	if grpcServer != nil {
		grpcServer.Shutdown(shutdownCtx) // ends KEDA's streams at once; they reconnect
	}
	if err := server.Shutdown(shutdownCtx); err != nil {
		level.Warn(logger).Log("msg", "in-flight requests did not finish in time", "err", err)
		server.Close()
	}
}

// newHandler serves every HTTP endpoint from the one shared cache.
func newHandler(cache *snapshot.Cache, token func() (string, error), telemetryPath string, logger log.Logger) (http.Handler, error) {
	registry := prometheus.NewRegistry()
	registry.MustRegister(
		collector.New(cache),
		versioncollector.NewCollector(exporterName),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	mux := http.NewServeMux()
	mux.Handle(telemetryPath, promhttp.HandlerFor(registry, promhttp.HandlerOpts{ErrorLog: stdLogger{logger}}))
	mux.Handle("/active_users", keda.ActiveUsersHandler(cache, logger))
	// Liveness and readiness say whether the exporter can answer, not whether
	// Open WebUI can: an outage must reach KEDA and Prometheus as a 503 and
	// openwebui_up 0, not as a restarted or unreachable exporter.
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if _, err := token(); err != nil {
			http.Error(w, "cannot read the Open WebUI token: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	landing, err := web.NewLandingPage(web.LandingConfig{
		Name:        "Open WebUI Exporter",
		Description: "Active users of Open WebUI, for Prometheus and KEDA",
		Version:     version.Info(),
		Links: []web.LandingLinks{
			{Address: telemetryPath, Text: "Metrics"},
			{Address: "/active_users", Text: "Active users", Description: "for KEDA's metrics-api trigger"},
			{Address: "/healthz", Text: "Liveness"},
			{Address: "/readyz", Text: "Readiness"},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("building the landing page: %w", err)
	}
	mux.Handle("/", landing)
	return mux, nil
}

const shutdownTimeout = 4 * time.Second

// upstreamHTTPClient is the client for Open WebUI, with its TLS settings.
func upstreamHTTPClient(caFile string, insecure bool) (*http.Client, error) {
	//nolint:gosec // G402: --openwebui.tls.insecure-skip-verify is the operator's choice, warned about at start.
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: insecure}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("--openwebui.tls.ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--openwebui.tls.ca-file: no PEM certificate in %s", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	transport.MaxIdleConnsPerHost = 4
	return &http.Client{Transport: transport}, nil
}

// newLogger builds the go-kit logger. One level filter governs every line:
// the exporter-toolkit logs through a slog bridge to the filtered logger
// (the bridge adds its own time and caller).
func newLogger(format, lvl string) (logger, filtered log.Logger) {
	var l log.Logger
	if format == "json" {
		l = log.NewJSONLogger(log.NewSyncWriter(os.Stderr))
	} else {
		l = log.NewLogfmtLogger(log.NewSyncWriter(os.Stderr))
	}
	filtered = level.NewFilter(l, level.Allow(level.ParseDefault(lvl, level.InfoValue())))
	return log.With(filtered, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller), filtered
}

// defaultListenAddress keeps the old scaler's env var: PORT=N means :N.
func defaultListenAddress() string {
	if port, err := listenPort(); err == nil && port != "" {
		return ":" + port
	}
	return ":8080"
}

func listenPort() (string, error) {
	port, ok := os.LookupEnv("PORT")
	if !ok {
		return "", nil
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("env PORT (the default port of --web.listen-address) must be a port number from 1 to 65535, got %q; fix or unset it", port)
	}
	return port, nil
}

func parseBaseURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, fmt.Errorf("is required: Open WebUI's base URL, e.g. http://open-webui:8080")
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the raw URL, which may hold a password
		}
		return nil, fmt.Errorf("want an http:// or https:// URL: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("want an http:// or https:// URL with a host, got %q", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("want a base URL without query or fragment, got %q", u.Redacted())
	}
	if strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/api") {
		return nil, fmt.Errorf("want Open WebUI's base URL without /api, got %q", u.Redacted())
	}
	return u, nil
}

func tokenSource(file string) (func() (string, error), error) {
	env, inEnv := os.LookupEnv("TOKEN")
	switch {
	case file != "" && inEnv:
		return nil, fmt.Errorf("both env TOKEN and --openwebui.token-file are set; use one")
	case file != "":
		t, err := openwebui.FileToken(file)
		if err != nil {
			return nil, fmt.Errorf("--openwebui.token-file: %w", err)
		}
		return t, nil
	case inEnv:
		t, err := openwebui.StaticToken(env)
		if err != nil {
			return nil, fmt.Errorf("env TOKEN: %w", err)
		}
		return t, nil
	}
	return nil, fmt.Errorf("no Open WebUI token: set env TOKEN or --openwebui.token-file to an API key (sk-...) or JWT")
}

// parseTTL accepts the old scaler's plain seconds ("60") and durations ("60s", "1m").
func parseTTL(raw string) (time.Duration, error) {
	raw = strings.TrimSpace(raw)
	if secs, err := strconv.ParseFloat(raw, 64); err == nil {
		if !(secs >= 0 && secs <= 86400) { // also rejects NaN
			return 0, fmt.Errorf("want 0 to 86400 seconds, got %q", raw)
		}
		return time.Duration(secs * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil {
		return 0, fmt.Errorf("want seconds (60) or a duration (60s, 1m), got %q", raw)
	}
	if d < 0 || d > 24*time.Hour {
		return 0, fmt.Errorf("want 0s to 24h, got %q", raw)
	}
	return d, nil
}

// stdLogger adapts the go-kit logger for promhttp's error log.
type stdLogger struct{ l log.Logger }

func (s stdLogger) Println(v ...any) {
	msg := fmt.Sprint(v...)
	if strings.HasPrefix(msg, "error encoding and sending metric family") {
		// The client went away mid-answer: its business, not an exporter error.
		level.Debug(s.l).Log("msg", msg)
		return
	}
	level.Error(s.l).Log("msg", msg)
}
