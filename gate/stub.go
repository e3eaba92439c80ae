// Package gate is a STUB of the wake gate's API (gate-spec.md), replaced by the real package on merge.
package gate

import (
	"context"
	"net/http"
	"net/url"
	"time"

	"github.com/go-kit/log"
)

type WakeRule string

const (
	WakeArrival WakeRule = "arrival"
	WakeRequest WakeRule = "request"
)

type BackendConfig struct {
	Name string
	URL  *url.URL
	Wake WakeRule
	Idle time.Duration
}

func ParseBackend(flagValue string) (BackendConfig, error) {
	u, err := url.Parse(flagValue)
	return BackendConfig{URL: u, Wake: WakeArrival}, err
}

type Config struct {
	Backends     []BackendConfig
	HoldTimeout  time.Duration
	MaxHeld      int
	MaxHeldBytes int64
	StateFile    string
	Peers        string
	Transport    http.RoundTripper
	Logger       log.Logger
	Now          func() time.Time
}

type Gate struct {
	cfg     Config
	demand  map[string]Demand
	changed chan struct{}
}

func New(cfg Config) (*Gate, error) {
	for i := range cfg.Backends {
		if cfg.Backends[i].Name == "" {
			cfg.Backends[i].Name = "default"
		}
	}
	return &Gate{cfg: cfg, demand: map[string]Demand{}, changed: make(chan struct{})}, nil
}
func (g *Gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {}
func (g *Gate) Run(ctx context.Context)                          { <-ctx.Done() }
func (g *Gate) Backends() []BackendConfig                        { return g.cfg.Backends }
func (g *Gate) Demand(name string) (Demand, bool) {
	for _, b := range g.cfg.Backends {
		if b.Name == name {
			return g.demand[name], true
		}
	}
	return Demand{}, false
}
func (g *Gate) Changed() <-chan struct{} { return g.changed }
func (g *Gate) Stats() []BackendStats    { return nil }

// SetDemand is for tests of the stub only.
func (g *Gate) SetDemand(name string, d Demand) {
	g.demand[name] = d
	close(g.changed)
	g.changed = make(chan struct{})
}

type Demand struct {
	Held, InFlight int
	Recent         int
	Learning       bool
}

type State string

const (
	StateUnknown  State = "unknown"
	StateAsleep   State = "asleep"
	StateStarting State = "starting"
	StateUp       State = "up"
)

type Outcome string

type BackendStats struct {
	Name           string
	State          State
	Since          time.Time
	Reason         string
	Held, InFlight int
	HeldBytes      int64
	Requests       map[Outcome]uint64
	Hold           HoldHistogram
}

type HoldHistogram struct {
	Buckets []float64
	Counts  []uint64
	Count   uint64
	Sum     float64
}
