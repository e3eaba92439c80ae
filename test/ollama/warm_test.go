package ollama

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// Warming (docs/warming.md) against real Ollama: after a stop and a start,
// the model the gate saw served is loaded, through the gate's own warm-up
// (POST /api/generate with no prompt, done_reason "load"), before any chat.
func TestGateWarmsTheModelAfterARestart(t *testing.T) {
	o := startOllama(t, "ollama")
	g := startGate(t, o.url()) // the unnamed backend: warm=auto
	createModel(t, g.url(), "tiny", hello)
	checkStream(t, g.url(), chatStream, "tiny", hello.Text()) // the gate learns tiny

	o.stop()
	// Scaled to zero, as KEDA does: the gate sees it asleep (its idle
	// probe runs every 5 s) before it comes back.
	eventually(t, 20*time.Second, "the gate sees Ollama asleep", func() (bool, string) {
		st := g.status(t)
		return len(st.Backends) == 1 && st.Backends[0].State == "asleep", fmt.Sprint(st)
	})
	o.start() // a new process: nothing loaded
	// Asked of Ollama itself, not through the gate: nobody but the gate
	// sends it anything now.
	eventually(t, 60*time.Second, "tiny loaded by the gate's warm-up", func() (bool, string) {
		r := get(t, o.url()+"/api/ps")
		var ps struct {
			Models []struct {
				Name      string    `json:"name"`
				ExpiresAt time.Time `json:"expires_at"`
			} `json:"models"`
		}
		if err := json.Unmarshal([]byte(r.body), &ps); err != nil {
			return false, r.String()
		}
		for _, m := range ps.Models {
			if m.Name == "tiny:latest" {
				// keep_alive -1: Ollama shows an expiry centuries away.
				return m.ExpiresAt.After(time.Now().Add(100 * 365 * 24 * time.Hour)), r.String()
			}
		}
		return false, r.String()
	})
	r := get(t, g.url()+"/_gate/status")
	var st struct {
		Backends []struct {
			Warm []string `json:"warm"`
		} `json:"backends"`
	}
	if err := json.Unmarshal([]byte(r.body), &st); err != nil || len(st.Backends) != 1 || !slices.Contains(st.Backends[0].Warm, "tiny") {
		t.Errorf("/_gate/status: %s, want tiny warm", r.body)
	}
	if m := get(t, g.url()+"/api/ps"); m.status != http.StatusOK {
		t.Errorf("GET /api/ps through the gate: %s", m)
	}
	checkStream(t, g.url(), chatStream, "tiny", hello.Text()) // and it answers as before
}
