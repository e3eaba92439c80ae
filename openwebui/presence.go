package openwebui

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-kit/log/level"
)

// Presence tells the wake gate who is in Open WebUI now and which models new
// chats start with, so that it can load the models people will ask for
// before they ask (gate.People; main wires it). The gate knows nothing of
// Open WebUI: it gets ids (the values Open WebUI sends as
// X-OpenWebUI-User-Id) and model names, nothing else.
//
//   - Who is here: the active users of the latest count (Fetch wraps
//     Client.Count). Only --openwebui.count-mode=admin reads ids; usage mode
//     reads a number, so Present is unknown there and the gate warms the
//     models its backend served last instead.
//   - Default models: Open WebUI's DEFAULT_MODELS, read every
//     defaultModelsEvery. An admin account reads it from
//     GET /api/v1/configs/models (get_admin_user: an API key or a JWT); any
//     signed-in account with a JWT from GET /api/config, whose
//     default_models is there only for a user decoded from a JWT (an API key
//     is not decoded there, so that answer leaves it out). Read in Open
//     WebUI v0.6.41 and the 0.11 line (backend/open_webui/main.py
//     get_app_config, routers/configs.py get_models_config).
type Presence struct {
	client *Client

	mu       sync.Mutex
	ids      []string
	at       time.Time // when ids were read (local clock); zero: never
	defaults []string
	warned   string
}

// defaultModelsEvery is how often the default models are read again: an
// admin changes them rarely, and a stale one only warms a model nobody asks.
const defaultModelsEvery = 5 * time.Minute

// NewPresence returns a Presence over c.
func NewPresence(c *Client) *Presence { return &Presence{client: c} }

// Fetch is Client.Count that also records who was active (the snapshot
// cache's fetch function).
func (p *Presence) Fetch(ctx context.Context) (Count, error) {
	n, err := p.client.Count(ctx)
	if err != nil {
		return n, err
	}
	ids, ok := p.client.activeIDs()
	p.mu.Lock()
	if ok {
		p.ids, p.at = ids, time.Now()
	} else {
		p.ids, p.at = nil, time.Time{}
	}
	p.mu.Unlock()
	return n, nil
}

// Present returns the ids of the people active at the latest count; ok is
// false in usage mode, before the first count, and once the latest good
// count is older than Open WebUI's activity window (the count failed since).
func (p *Presence) Present() ([]string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.at.IsZero() || time.Since(p.at) > ActivityWindow {
		return nil, false
	}
	return append([]string(nil), p.ids...), true
}

// DefaultModels returns Open WebUI's default models for new chats, nil
// while unknown.
func (p *Presence) DefaultModels() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.defaults...)
}

// Run reads the default models now and every defaultModelsEvery until ctx
// ends.
func (p *Presence) Run(ctx context.Context) {
	t := time.NewTicker(defaultModelsEvery)
	defer t.Stop()
	for {
		models, err := p.client.DefaultModels(ctx)
		p.mu.Lock()
		if err == nil {
			p.defaults = models
		}
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		changed := msg != p.warned
		p.warned = msg
		p.mu.Unlock()
		if err != nil && changed && ctx.Err() == nil {
			level.Info(p.client.cfg.Logger).Log("msg", "cannot read Open WebUI's default models; the gate warms without them", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// activeIDs copies the active users the latest admin-mode count saw (the
// exporter's own accounts left out); false in usage mode.
func (c *Client) activeIDs() ([]string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cfg.Mode != ModeAdmin || c.seenActive == nil {
		return nil, false
	}
	ids := make([]string, 0, len(c.seenActive))
	for id := range c.seenActive {
		ids = append(ids, id)
	}
	return ids, true
}

// DefaultModels reads Open WebUI's DEFAULT_MODELS: from the admin config
// (any admin credential), else from /api/config (a JWT of any account).
func (c *Client) DefaultModels(ctx context.Context) ([]string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	token, err := c.cfg.Token()
	if err != nil {
		return nil, fmt.Errorf("reading the Open WebUI token: %w", err)
	}
	if token != c.scrubbedToken {
		c.scrub, c.scrubbedToken = newScrubber(token), token
	}
	body, _, err := c.do(ctx, "/api/v1/configs/models", "", nil, token)
	if err == nil {
		var v struct {
			DefaultModels *string `json:"DEFAULT_MODELS"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return nil, fmt.Errorf("GET /api/v1/configs/models: %w", err)
		}
		if v.DefaultModels == nil {
			return nil, nil
		}
		return splitModels(*v.DefaultModels), nil
	}
	var apiErr *APIError
	if !errors.As(err, &apiErr) || (apiErr.StatusCode != http.StatusUnauthorized && apiErr.StatusCode != http.StatusForbidden) || !isJWT(token) {
		return nil, c.scrub.err(err)
	}
	// Not an admin: a JWT still reads default_models from /api/config.
	body, _, err = c.do(ctx, "/api/config", "", nil, token)
	if err != nil {
		return nil, c.scrub.err(err)
	}
	var v struct {
		DefaultModels *string `json:"default_models"`
	}
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, fmt.Errorf("GET /api/config: default_models: %w", err)
	}
	if v.DefaultModels == nil {
		return nil, nil
	}
	return splitModels(*v.DefaultModels), nil
}

// splitModels splits Open WebUI's comma-separated model list.
func splitModels(s string) []string {
	var out []string
	for _, m := range strings.Split(s, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}
