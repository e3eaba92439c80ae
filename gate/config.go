package gate

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-kit/log"
)

// WakeRule says what wakes a backend.
type WakeRule string

const (
	// WakeArrival backends are woken by people arriving (decided outside this
	// package) and by any request held for them.
	WakeArrival WakeRule = "arrival"
	// WakeRequest backends are woken only by requests for them, and kept up while
	// requests keep coming within their Idle time.
	WakeRequest WakeRule = "request"
)

// DefaultIdle is the idle time of a wake=request backend without idle=.
const DefaultIdle = 10 * time.Minute

// Bounds of idle= (a shorter idle flaps a GPU pool; a longer one is not "idle").
const (
	MinIdle = time.Minute
	MaxIdle = 24 * time.Hour
)

// DefaultName is how the single unnamed backend is reported and labelled.
const DefaultName = "default"

// BackendConfig is one --gate.backend.
type BackendConfig struct {
	Name string // "" for the single unnamed backend (served at /; reported and labelled as "default")
	URL  *url.URL
	Wake WakeRule
	Idle time.Duration // wake=request only
	Warm Warm          // zero: auto for wake=arrival (and the unnamed backend), off for wake=request
}

// Config configures a Gate. Zero values of the optional fields take the
// defaults noted beside them.
type Config struct {
	Backends     []BackendConfig
	HoldTimeout  time.Duration     // 0: 5m
	MaxHeld      int               // 0: 1000
	MaxHeldBytes int64             // 0: 256 MiB; held requests' headers and bodies
	StateFile    string            // "" none
	Peers        string            // "host:port" of a headless Service; "" none
	Transport    http.RoundTripper // nil: a tuned clone of http.DefaultTransport
	Logger       log.Logger        // go-kit; nil: no logging
	Now          func() time.Time  // nil: time.Now
	People       People            // who is here and Open WebUI's default models, for warming; nil: unknown

	// ReleaseConcurrency bounds the requests of one backend that were held and
	// are now being delivered at once (0: 256, half of Ollama's default
	// OLLAMA_MAX_QUEUE of 512), so that releasing a burst does not make the
	// backend answer 503 to part of it.
	ReleaseConcurrency int
}

// Defaults of Config.
const (
	DefaultHoldTimeout        = 5 * time.Minute
	DefaultMaxHeld            = 1000
	DefaultMaxHeldBytes       = 256 << 20
	DefaultReleaseConcurrency = 256
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// ParseBackend parses the --gate.backend syntax: URL, or
// NAME=URL[,wake=arrival|request][,idle=DURATION][,warm=auto|off|MODEL[+MODEL...]][,max-loaded=N].
func ParseBackend(flagValue string) (BackendConfig, error) {
	var bc BackendConfig
	v := strings.TrimSpace(flagValue)
	if v == "" {
		return bc, fmt.Errorf("empty backend: want URL or NAME=URL[,wake=arrival|request][,idle=DURATION][,warm=auto|off|MODEL[+MODEL...]][,max-loaded=N]")
	}
	parts := strings.Split(v, ",")
	rawURL := parts[0]
	// NAME=URL: a name is text before "=" that contains no ":" or "/" (so a URL
	// whose query has "=" is not taken for a name; queries are refused anyway).
	if i := strings.Index(rawURL, "="); i >= 0 && !strings.ContainsAny(rawURL[:i], ":/") {
		bc.Name, rawURL = rawURL[:i], rawURL[i+1:]
		if !nameRE.MatchString(bc.Name) {
			return bc, fmt.Errorf("backend %q: bad name %q: want lower-case letters, digits and inner hyphens, 1 to 32 characters ([a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?)", flagValue, bc.Name)
		}
	}
	u, err := parseBackendURL(rawURL)
	if err != nil {
		return bc, fmt.Errorf("backend %q: %w", flagValue, err)
	}
	bc.URL = u
	bc.Wake = WakeArrival
	var idleSet bool
	for _, opt := range parts[1:] {
		k, val, ok := strings.Cut(opt, "=")
		if !ok {
			return bc, fmt.Errorf("backend %q: option %q: want KEY=VALUE (wake=arrival|request, idle=DURATION, warm=auto|off|MODEL[+MODEL...], max-loaded=N)", flagValue, opt)
		}
		if bc.Name == "" {
			return bc, fmt.Errorf("backend %q: options need a named backend (NAME=URL,%s)", flagValue, opt)
		}
		switch k {
		case "wake":
			switch WakeRule(val) {
			case WakeArrival, WakeRequest:
				bc.Wake = WakeRule(val)
			default:
				return bc, fmt.Errorf("backend %q: wake=%q: want arrival or request", flagValue, val)
			}
		case "idle":
			d, err := time.ParseDuration(val)
			if err != nil {
				return bc, fmt.Errorf("backend %q: idle=%q: %w", flagValue, val, err)
			}
			if d < MinIdle || d > MaxIdle {
				return bc, fmt.Errorf("backend %q: idle=%s: want between %s and %s", flagValue, d, MinIdle, MaxIdle)
			}
			bc.Idle, idleSet = d, true
		case "warm":
			w, err := parseWarm(val)
			if err != nil {
				return bc, fmt.Errorf("backend %q: %w", flagValue, err)
			}
			bc.Warm.Mode, bc.Warm.Models = w.Mode, w.Models
		case "max-loaded":
			n, err := parseMaxLoaded(val)
			if err != nil {
				return bc, fmt.Errorf("backend %q: %w", flagValue, err)
			}
			bc.Warm.MaxLoaded = n
		default:
			return bc, fmt.Errorf("backend %q: unknown option %q: want wake=, idle=, warm= or max-loaded=", flagValue, k)
		}
	}
	if idleSet && bc.Wake != WakeRequest {
		return bc, fmt.Errorf("backend %q: idle= needs wake=request (an arrival backend sleeps when people leave)", flagValue)
	}
	if bc.Wake == WakeRequest && !idleSet {
		bc.Idle = DefaultIdle
	}
	if bc.Warm.MaxLoaded != 0 && defaultWarm(bc.Warm, bc.Wake).Mode == WarmOff {
		return bc, fmt.Errorf("backend %q: max-loaded= needs warming (warm=auto or warm=MODEL; wake=request backends warm nothing unless told)", flagValue)
	}
	return bc, nil
}

func parseBackendURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("bad URL: %w", err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return nil, fmt.Errorf("URL %q: scheme must be http or https", raw)
	case u.Host == "":
		return nil, fmt.Errorf("URL %q: no host", raw)
	case u.User != nil:
		return nil, fmt.Errorf("URL %q: user information is not supported (the client's Authorization header is passed through)", raw)
	case u.RawQuery != "" || u.ForceQuery:
		return nil, fmt.Errorf("URL %q: a query is not supported (the request's query is passed through)", raw)
	case u.Fragment != "":
		return nil, fmt.Errorf("URL %q: a fragment is not supported", raw)
	}
	return u, nil
}

// checkBackends checks a whole set of backends as New receives it.
func checkBackends(bcs []BackendConfig) error {
	if len(bcs) == 0 {
		return fmt.Errorf("no backend")
	}
	seen := map[string]bool{}
	for i, bc := range bcs {
		if bc.URL == nil {
			return fmt.Errorf("backend %d: no URL", i+1)
		}
		if _, err := parseBackendURL(bc.URL.String()); err != nil {
			return fmt.Errorf("backend %d: %w", i+1, err)
		}
		if err := checkWarm(bc.Warm); err != nil {
			return fmt.Errorf("backend %d: %w", i+1, err)
		}
		if bc.Name == "" {
			if len(bcs) > 1 {
				return fmt.Errorf("an unnamed backend (%s) cannot be mixed with others: name them all (NAME=URL)", bc.URL)
			}
			continue
		}
		if !nameRE.MatchString(bc.Name) {
			return fmt.Errorf("backend %d: bad name %q", i+1, bc.Name)
		}
		if seen[bc.Name] {
			return fmt.Errorf("backend name %q given twice", bc.Name)
		}
		seen[bc.Name] = true
		switch bc.Wake {
		case WakeArrival, "":
			if bc.Idle != 0 {
				return fmt.Errorf("backend %q: idle needs wake=request", bc.Name)
			}
		case WakeRequest:
			if bc.Idle < MinIdle || bc.Idle > MaxIdle {
				return fmt.Errorf("backend %q: idle %s: want between %s and %s", bc.Name, bc.Idle, MinIdle, MaxIdle)
			}
		default:
			return fmt.Errorf("backend %q: wake %q: want arrival or request", bc.Name, bc.Wake)
		}
	}
	return nil
}
