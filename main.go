// Command openwebui_exporter tells Prometheus and KEDA how many people use
// Open WebUI right now, so that Ollama runs exactly while someone is there.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
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
	"github.com/prometheus/common/version"
	"github.com/prometheus/exporter-toolkit/web"
	"github.com/prometheus/exporter-toolkit/web/kingpinflag"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/internal/wiring"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

func main() {
	app := kingpin.CommandLine
	app.Help = "Exports how many people use Open WebUI right now, for Prometheus (/metrics) and KEDA (/active_users, and its external scaler protocol over gRPC with --keda.listen-address); with --gate.listen-address also serves a wake gate in front of Ollama."
	var (
		webConfig     = kingpinflag.AddFlags(app, defaultListenAddress())
		telemetryPath = app.Flag("web.telemetry-path", "Path under which to expose metrics.").Default("/metrics").String()
		baseURL       = app.Flag("openwebui.url", "Open WebUI's base URL, e.g. http://open-webui:8080.").Envar("API_URL").String()
		tokenFile     = app.Flag("openwebui.token-file", "File holding the Open WebUI API key (sk-..., the supported credential) or a JWT (a fallback); re-read on every fetch and on SIGHUP. Until it is readable, /readyz answers 503. Alternatively set the env var TOKEN.").String()
		countMode     = app.Flag("openwebui.count-mode", "usage: read /api/usage (any account); admin: page the admin user list (admin account; exact without self-stamping, adds openwebui_users).").Default(string(openwebui.ModeUsage)).Enum(string(openwebui.ModeUsage), string(openwebui.ModeAdmin))
		timeout       = app.Flag("openwebui.timeout", "Deadline for one fetch from Open WebUI, all its requests included; keep it below KEDA's 3s HTTP timeout.").Default("2500ms").Duration()
		idleTimeout   = app.Flag("activity.idle-timeout", "Idle-tab policy (needs --openwebui.count-mode=admin): KEDA gets only the active users who arrived or wrote a chat message within this time, so a forgotten open tab stops keeping Ollama up; 0 (default) is off: Open WebUI's own definition. At least 5s (Open WebUI's clock may be off by a quarter of it, at most 30s); e.g. 15m.").Default("0s").Duration()
		// Hidden: a simulation on a compressed clock (bench/simday) serves a
		// Date hours ahead of the host's; nobody else should widen it.
		maxClockSkew   = app.Flag("openwebui.max-clock-skew", "Only for simulations on a compressed clock: how far Open WebUI's clock may be from this host's; 0 (default) is 30s, with the idle-tab policy a quarter of its timeout (2s to 30s).").Hidden().Default("0s").Duration()
		updateInterval = app.Flag("openwebui.status-update-interval", "Open WebUI's DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL, in seconds (300) or as a duration (5m); 0 (default) when unset there. 0 to 1h. Needs --openwebui.count-mode=admin above 0, which then counts users active within 180s plus this (and notices a throttle it was not told of).").Default("0").String()
		caFile         = app.Flag("openwebui.tls.ca-file", "PEM file of the CA that signs Open WebUI's certificate (default: the system's CAs).").String()
		insecureTLS    = app.Flag("openwebui.tls.insecure-skip-verify", "Do not verify Open WebUI's TLS certificate. Insecure: anybody in between can read the token.").Bool()
		maxStale       = app.Flag("cache.max-stale", "How old a good count may be and still be answered when a refresh takes over 250ms or Open WebUI fails; 0 makes readers wait for the refresh.").Default("2m").Duration()
		cacheTTL       = app.Flag("cache.ttl", "How long a count is served before Open WebUI is asked again, e.g. 60s or 60 (seconds); 0 asks on every request (see --cache.max-stale).").Envar("CACHE_TIMEOUT").Default("60s").String()
		logLevel       = app.Flag("log.level", "Only log messages with the given severity or above. One of: [debug, info, warn, error]").Default("info").Enum("debug", "info", "warn", "error")
		logFormat      = app.Flag("log.format", "Output format of log messages. One of: [logfmt, json]").Default("logfmt").Enum("logfmt", "json")
		kedaOpts       = addKEDAFlags(app)
		gateOpts       = addGateFlags(app)
	)
	app.Version(version.Print(wiring.Name))
	app.HelpFlag.Short('h')
	kingpin.MustParse(app.Parse(os.Args[1:]))

	logger, toolkitLogger := newLogger(*logFormat, *logLevel)
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
	token, err := tokenSource(*tokenFile, logger)
	if err != nil {
		fail("%v", err)
	}
	if _, err := token(); err != nil {
		// A Secret may be mounted a moment after the container starts.
		level.Warn(logger).Log("msg", "cannot read the Open WebUI token yet; starting anyway, /readyz answers 503 until it is readable", "err", err)
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
	statusUpdateInterval, err := parseStatusUpdateInterval(*updateInterval, openwebui.Mode(*countMode))
	if err != nil {
		fail("--openwebui.status-update-interval: %v", err)
	}
	if err := checkTelemetryPath(*telemetryPath); err != nil {
		fail("--web.telemetry-path: %v", err)
	}
	if ttl > openwebui.ActivityWindow {
		level.Warn(logger).Log("msg", "--cache.ttl is longer than Open WebUI's 180s activity window: a count may describe people who left, and an arrival may wait for the whole TTL", "ttl", ttl)
	}

	policy, err := idlePolicy(*idleTimeout, openwebui.Mode(*countMode))
	if err != nil {
		fail("%v", err)
	}

	level.Info(logger).Log("msg", "starting "+wiring.Name, "version", version.Info(), "build_context", version.BuildContext())
	client := openwebui.NewClient(openwebui.Config{
		BaseURL:              upstream,
		Token:                token,
		Mode:                 openwebui.Mode(*countMode),
		StatusUpdateInterval: statusUpdateInterval,
		UserAgent:            wiring.Name + "/" + version.Version,
		HTTPClient:           httpClient,
		Logger:               logger,
		IdlePolicy:           policy,
		MaxClockSkew:         *maxClockSkew,
	})
	if policy != nil {
		level.Info(logger).Log("msg", "idle-tab policy on: KEDA gets the users who arrived or wrote within the idle timeout (openwebui_engaged_users)", "idle_timeout", policy.Timeout())
	}
	// Presence hands the gate who is here and Open WebUI's default models
	// (for warming), read beside the count; the gate knows no Open WebUI.
	presence := openwebui.NewPresence(client)
	cache := snapshot.New(snapshot.Config{Fetch: presence.Fetch, TTL: ttl, MaxStale: *maxStale, Timeout: *timeout, Logger: logger})
	wakeGate, err := newGate(gateOpts, presence, logger)
	if err != nil {
		fail("%v", err)
	}
	// One decision of what KEDA gets, from people and the gate's demand,
	// read by /active_users, the gRPC scaler and /metrics alike.
	decider := demand.New(cache, nil)
	if wakeGate != nil {
		decider = demand.New(cache, wakeGate)
	}
	grpcServer, err := listenKEDA(kedaOpts, decider, logger)
	if err != nil {
		fail("%v", err)
	}
	var gateSrv *gateServer
	if wakeGate != nil {
		if gateSrv, err = listenGate(*gateOpts.listenAddress, wakeGate, gateOpts.drain(), toolkitLogger); err != nil {
			fail("%v", err)
		}
		for _, b := range wakeGate.Backends() {
			level.Info(logger).Log("msg", "serving the wake gate", "address", gateSrv.listener.Addr(), "backend", b.Name, "url", b.URL.Redacted(), "wake", b.Wake, "warm", b.Warm.Mode, "hold_timeout", *gateOpts.holdTimeout)
		}
	}

	handler, err := wiring.NewHandler(cache, decider, wakeGate, token, *telemetryPath, logger)
	if err != nil {
		fail("%v", err)
	}

	server := &http.Server{
		Handler:           handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(toolkitLogger.Handler(), slog.LevelError), // e.g. TLS handshake errors
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Until main returns, not until SIGTERM: a SIGHUP during the drain (a
	// token rotated meanwhile) must not end the process at once.
	hupCtx, stopHUP := context.WithCancel(context.Background())
	defer stopHUP()
	reloadOnSIGHUP(hupCtx, token, *tokenFile != "", *webConfig.WebConfigFile, logger)
	if wakeGate != nil {
		go presence.Run(ctx) // Open WebUI's default models, for warming
	}
	served := make(chan error, 3)
	go func() {
		served <- web.ListenAndServe(server, webConfig, toolkitLogger)
	}()
	if gateSrv != nil {
		gateSrv.start(served)
	}
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
	if gateSrv != nil {
		// The gate drains first, while /active_users, /metrics and the gRPC
		// scaler keep serving its demand to KEDA. A second signal ends it.
		again, stopAgain := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		gateSrv.shutdown(again, logger)
		stopAgain()
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

// idlePolicy validates --activity.idle-timeout; nil when it is off.
func idlePolicy(timeout time.Duration, mode openwebui.Mode) (*openwebui.IdlePolicy, error) {
	if timeout == 0 {
		return nil, nil
	}
	if timeout < openwebui.MinIdleTimeout || timeout > 24*time.Hour {
		return nil, fmt.Errorf("--activity.idle-timeout must be 0 (off) or between %s and 24h, got %s", openwebui.MinIdleTimeout, timeout)
	}
	if mode != openwebui.ModeAdmin {
		// /api/usage shows no writes: its model_ids come from a socket event
		// emitted only while a send request is in flight for over a second.
		return nil, fmt.Errorf("--activity.idle-timeout needs --openwebui.count-mode=admin (and an admin account's token): only Open WebUI's admin endpoints (analytics, chat list) show who wrote a message; --openwebui.count-mode=%s cannot tell an idle tab from a person typing", mode)
	}
	return openwebui.NewIdlePolicy(timeout)
}

// newHandler serves every HTTP endpoint from the one shared cache, without
// a gate (the tests of package main use it).
func newHandler(cache *snapshot.Cache, token func() (string, error), telemetryPath string, logger log.Logger) (http.Handler, error) {
	return wiring.NewHandler(cache, demand.New(cache, nil), nil, token, telemetryPath, logger)
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

// newLogger builds the exporter's logger and the slog logger of the
// exporter-toolkit and net/http: one level filter, the same keys on every line.
func newLogger(format, lvl string) (log.Logger, *slog.Logger) {
	logger, toolkit, err := wiring.NewLogger(os.Stderr, format, lvl)
	if err != nil { // kingpin's enums rule this out
		panic(err)
	}
	return logger, toolkit
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
	// url.Parse's errors quote the part they stumble on, and a password
	// with an unencoded '/', '?' or '#' ends up in the host, path, query or
	// fragment: neither is shown when the URL looks like that.
	const encodeHint = "percent-encode '/', '?', '#', '@' and '%' in a user name or password (e.g. / as %2F)"
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("want an http:// or https:// URL; it does not parse (%s)", encodeHint)
	}
	if u.User == nil && strings.Contains(raw, "@") {
		return nil, fmt.Errorf("want an http:// or https:// URL; it has an '@' after the host (%s)", encodeHint)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("want an http:// or https:// URL with a host, got %q", u.Redacted())
	}
	if u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return nil, fmt.Errorf("want a base URL without query or fragment (%s)", encodeHint)
	}
	if strings.HasSuffix(strings.TrimRight(u.Path, "/"), "/api") {
		return nil, fmt.Errorf("want Open WebUI's base URL without /api, got %q", u.Redacted())
	}
	return u, nil
}

// tokenSource is where the Open WebUI token comes from. A file is not read
// here: see openwebui.TokenFile for why a missing one is not fatal.
func tokenSource(file string, logger log.Logger) (func() (string, error), error) {
	env, inEnv := os.LookupEnv("TOKEN")
	switch {
	case file != "" && inEnv:
		return nil, fmt.Errorf("both env TOKEN and --openwebui.token-file are set; use one")
	case file != "":
		f := openwebui.NewTokenFile(file, 0, logger)
		return func() (string, error) {
			t, err := f.Token()
			if err != nil {
				return "", fmt.Errorf("--openwebui.token-file: %w", err)
			}
			return t, nil
		}, nil
	case inEnv:
		t, err := openwebui.StaticToken(env)
		if err != nil {
			return nil, fmt.Errorf("env TOKEN: %w", err)
		}
		return t, nil
	}
	return nil, fmt.Errorf("no Open WebUI token: set env TOKEN or --openwebui.token-file to an API key (sk-...) or JWT")
}

// parseStatusUpdateInterval reads --openwebui.status-update-interval like
// Open WebUI reads DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL (seconds,
// fractions allowed), or as a duration, and checks that mode can count
// under it.
func parseStatusUpdateInterval(raw string, mode openwebui.Mode) (time.Duration, error) {
	raw = strings.TrimSpace(raw)
	var d time.Duration
	if secs, err := strconv.ParseFloat(raw, 64); err == nil {
		if !(secs >= 0 && secs <= openwebui.MaxStatusUpdateInterval.Seconds()) { // also rejects NaN
			return 0, fmt.Errorf("want 0 to %g seconds, got %q", openwebui.MaxStatusUpdateInterval.Seconds(), raw)
		}
		d = time.Duration(secs * float64(time.Second))
	} else if d, err = time.ParseDuration(raw); err != nil {
		return 0, fmt.Errorf("want seconds (300) or a duration (5m), got %q", raw)
	}
	if err := openwebui.CheckStatusUpdateInterval(mode, d); err != nil {
		return 0, err
	}
	return d, nil
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
