package gate

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
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

	// A pool of replicas (docs/replicas.md): either Replicas (URL first), or
	// Discover: URL's host names a headless Service whose addresses are the
	// replicas (--gate.backend=NAME=dns+http://HOST:PORT).
	Replicas []*url.URL
	Discover bool
	Parallel int  // answers one replica runs at once (its OLLAMA_NUM_PARALLEL); 0: 1
	People   int  // wake=arrival pools: active people one replica serves; 0: one replica while anybody is active
	BindLate bool // bind=late: a request waits in the gate for a replica's free slot (latebind.go); needs Parallel

	options bool // ParseBackend saw options (they go on a pool's first flag only)
	Warm    Warm // zero: auto for wake=arrival (and the unnamed backend), off for wake=request
}

// Pool says whether the backend is a pool of replicas.
func (bc BackendConfig) Pool() bool { return bc.Discover || len(bc.Replicas) > 1 }

// Bounds of a pool's options.
const (
	MaxParallel = 256
	MaxPeople   = 100000
)

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

	// ProbeInterval is how often each backend (each replica of a pool) is
	// probed, its /api/ps read included, while nothing is held for it (0:
	// 5 s; while something is held it is probed every 100 ms). It is here for
	// benchmarks and tests that run time compressed: every timer of the
	// system should be compressed alike (bench/busyhour).
	ProbeInterval time.Duration

	// LateBindWait bounds how long a request of a bind=late pool waits in the
	// gate for a free slot (0: 30 s); for benchmarks that compress time, as
	// ProbeInterval.
	LateBindWait time.Duration
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
// NAME=[dns+]URL[,wake=arrival|request][,idle=DURATION][,parallel=N][,people=N]
// [,warm=auto|off|MODEL[+MODEL...]][,max-loaded=N]. ParseBackends joins the
// flags of one pool.
func ParseBackend(flagValue string) (BackendConfig, error) {
	var bc BackendConfig
	v := strings.TrimSpace(flagValue)
	if v == "" {
		return bc, fmt.Errorf("empty backend: want URL or NAME=[dns+]URL[,wake=arrival|request][,idle=DURATION][,parallel=N][,people=N][,warm=auto|off|MODEL[+MODEL...]][,max-loaded=N]")
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
	if rest, ok := strings.CutPrefix(rawURL, "dns+"); ok {
		if bc.Name == "" {
			return bc, fmt.Errorf("backend %q: a dns+ pool needs a name (NAME=dns+http://HOST:PORT)", flagValue)
		}
		rawURL, bc.Discover = rest, true
	}
	u, err := parseBackendURL(rawURL)
	if err != nil {
		return bc, fmt.Errorf("backend %q: %w", flagValue, err)
	}
	bc.URL = u
	bc.Wake = WakeArrival
	bc.options = len(parts) > 1
	var idleSet bool
	for _, opt := range parts[1:] {
		k, val, ok := strings.Cut(opt, "=")
		if !ok {
			return bc, fmt.Errorf("backend %q: option %q: want KEY=VALUE (wake=arrival|request, idle=DURATION, parallel=N, people=N, warm=auto|off|MODEL[+MODEL...], max-loaded=N)", flagValue, opt)
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
		case "parallel", "people":
			n, err := strconv.Atoi(val)
			limit := map[string]int{"parallel": MaxParallel, "people": MaxPeople}[k]
			if err != nil || n < 1 || n > limit {
				return bc, fmt.Errorf("backend %q: %s=%q: want a whole number from 1 to %d", flagValue, k, val, limit)
			}
			if k == "parallel" {
				bc.Parallel = n
			} else {
				bc.People = n
			}
		case "warm":
			w, err := parseWarm(val)
			if err != nil {
				return bc, fmt.Errorf("backend %q: %w", flagValue, err)
			}
			bc.Warm.Mode, bc.Warm.Models = w.Mode, w.Models
		case "bind":
			switch val {
			case "late":
				bc.BindLate = true
			case "arrival":
				bc.BindLate = false
			default:
				return bc, fmt.Errorf("backend %q: bind=%q: want arrival (the default: a replica is chosen as the request arrives) or late (it waits in the gate for a free slot)", flagValue, val)
			}
		case "max-loaded":
			n, err := parseMaxLoaded(val)
			if err != nil {
				return bc, fmt.Errorf("backend %q: %w", flagValue, err)
			}
			bc.Warm.MaxLoaded = n
		default:
			return bc, fmt.Errorf("backend %q: unknown option %q: want wake=, idle=, parallel=, people=, bind=, warm= or max-loaded=", flagValue, k)
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

// ParseBackends parses every --gate.backend and joins those of one NAME into
// a pool of replicas: the same NAME again adds a replica (options go on the
// first), and NAME=dns+http://HOST:PORT is a pool discovered in DNS.
func ParseBackends(flagValues []string) ([]BackendConfig, error) {
	var out []BackendConfig
	at := map[string]int{}
	for _, v := range flagValues {
		bc, err := ParseBackend(v)
		if err != nil {
			return nil, err
		}
		i, seen := at[bc.Name]
		if !seen || bc.Name == "" {
			at[bc.Name] = len(out)
			out = append(out, bc)
			continue
		}
		first := &out[i]
		switch {
		case bc.options:
			return nil, fmt.Errorf("backend %q: a pool's options go on its first --gate.backend (%s=%s,...)", v, bc.Name, first.URL)
		case bc.Discover || first.Discover:
			return nil, fmt.Errorf("backend %q: %q is a dns+ pool: its replicas come from DNS, not from more --gate.backend", v, bc.Name)
		}
		if len(first.Replicas) == 0 {
			first.Replicas = []*url.URL{first.URL}
		}
		for _, u := range first.Replicas {
			if u.String() == bc.URL.String() {
				return nil, fmt.Errorf("backend %q: replica %s given twice", v, u)
			}
		}
		first.Replicas = append(first.Replicas, bc.URL)
	}
	for _, bc := range out {
		if !bc.Pool() && (bc.Parallel != 0 || bc.People != 0 || bc.BindLate) {
			return nil, fmt.Errorf("backend %q: parallel=, people= and bind= are for a pool: the same NAME again for each replica, or NAME=dns+http://HOST:PORT", bc.Name)
		}
		if bc.BindLate && bc.Parallel == 0 {
			return nil, fmt.Errorf("backend %q: bind=late needs parallel=N, each replica's OLLAMA_NUM_PARALLEL: requests wait in the gate while every replica runs that many, so a number below the real one leaves slots idle", bc.Name)
		}
		if bc.People != 0 && bc.Wake != WakeArrival {
			return nil, fmt.Errorf("backend %q: people= needs wake=arrival (a wake=request pool does not count people)", bc.Name)
		}
	}
	return out, nil
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
			if bc.Pool() || bc.Parallel != 0 || bc.People != 0 {
				return fmt.Errorf("a pool needs a name (NAME=URL): %s", bc.URL)
			}
			if len(bcs) > 1 {
				return fmt.Errorf("an unnamed backend (%s) cannot be mixed with others: name them all (NAME=URL)", bc.URL)
			}
			continue
		}
		if !nameRE.MatchString(bc.Name) {
			return fmt.Errorf("backend %d: bad name %q", i+1, bc.Name)
		}
		if err := checkPool(bc); err != nil {
			return err
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

// checkPool checks the pool fields of a named backend.
func checkPool(bc BackendConfig) error {
	switch {
	case bc.Discover && len(bc.Replicas) > 0:
		return fmt.Errorf("backend %q: a dns+ pool takes its replicas from DNS, not from Replicas", bc.Name)
	case bc.Parallel < 0 || bc.Parallel > MaxParallel:
		return fmt.Errorf("backend %q: parallel %d: want 1 to %d", bc.Name, bc.Parallel, MaxParallel)
	case bc.People < 0 || bc.People > MaxPeople:
		return fmt.Errorf("backend %q: people %d: want 1 to %d", bc.Name, bc.People, MaxPeople)
	case !bc.Pool() && (bc.Parallel != 0 || bc.People != 0 || bc.BindLate):
		return fmt.Errorf("backend %q: parallel, people and bind are for a pool", bc.Name)
	case bc.BindLate && bc.Parallel == 0:
		return fmt.Errorf("backend %q: bind=late needs parallel", bc.Name)
	}
	for i, u := range bc.Replicas {
		if u == nil {
			return fmt.Errorf("backend %q: replica %d: no URL", bc.Name, i+1)
		}
		if _, err := parseBackendURL(u.String()); err != nil {
			return fmt.Errorf("backend %q: replica %d: %w", bc.Name, i+1, err)
		}
	}
	if len(bc.Replicas) > 0 && bc.Replicas[0].String() != bc.URL.String() {
		return fmt.Errorf("backend %q: URL must be the first replica", bc.Name)
	}
	return nil
}
