package ollama

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

// Two Ollama instances behind one gate (issue 18): each under its own prefix,
// with its own models, lists and state.
func TestGateNamedBackends(t *testing.T) {
	small := startOllama(t, "ollama-small")
	big := startOllama(t, "ollama-big")
	// Different answers, so a chat shows which Ollama answered.
	smallModel := TinyModel{Answer: []string{"▁hello", "▁world"}}
	bigModel := TinyModel{Answer: []string{"▁world", "▁hello"}}
	g := startGate(t, "small="+small.url(), "big="+big.url())
	createModel(t, g.url()+"/small", "tiny-small", smallModel)
	createModel(t, g.url()+"/big", "tiny-big", bigModel)

	names := func(t *testing.T, body string) []string {
		t.Helper()
		var tags struct{ Models []struct{ Name string } }
		if err := json.Unmarshal([]byte(body), &tags); err != nil {
			t.Fatalf("/api/tags: %v in %s", err, body)
		}
		var n []string
		for _, m := range tags.Models {
			n = append(n, m.Name)
		}
		return n
	}
	backends := []struct {
		prefix string
		o      *ollamaServer
		model  string
		answer TinyModel
		other  string // the other backend's model: not found here
	}{
		{"/small", small, "tiny-small:latest", smallModel, "tiny-big"},
		{"/big", big, "tiny-big:latest", bigModel, "tiny-small"},
	}
	tags := map[string]string{}
	for _, b := range backends {
		t.Run("models listed under "+b.prefix, func(t *testing.T) {
			r := get(t, g.url()+b.prefix+"/api/tags")
			direct := get(t, b.o.url()+"/api/tags")
			if got := names(t, r.body); r.status != http.StatusOK || len(got) != 1 || got[0] != b.model {
				t.Errorf("GET %s/api/tags: %s, want only %s", b.prefix, r, b.model)
			}
			if r.body != direct.body {
				t.Errorf("GET %s/api/tags: %q, its Ollama answers %q", b.prefix, r.body, direct.body)
			}
			tags[b.prefix] = r.body
			checkStream(t, g.url()+b.prefix, chatStream, b.model, b.answer.Text())
			r = post(t, g.url()+b.prefix+"/api/chat", chatStream.body(b.other))
			if want := `{"error":"model '` + b.other + `' not found"}`; r.status != http.StatusNotFound || r.body != want {
				t.Errorf("chat to %s under %s: %s, want 404 %s", b.other, b.prefix, r, want)
			}
		})
	}
	st := g.status(t)
	if len(st.Backends) != 2 || st.Backends[0].Name != "small" || st.Backends[1].Name != "big" ||
		st.Backends[0].State != "up" || st.Backends[1].State != "up" {
		t.Errorf("GET /_gate/status: %s, want small and big, both up", g.statusString(t))
	}

	// Only big sleeps: its list comes from memory, small's still from small.
	big.stop()
	eventually(t, 10*time.Second, "/big/api/tags from memory", func() (bool, string) {
		r := get(t, g.url()+"/big/api/tags")
		if r.status != http.StatusOK {
			t.Fatalf("GET /big/api/tags while big is stopped: %s, want 200 from memory", r)
		}
		return r.header.Get("X-Gate-From-Memory") == "1" && r.body == tags["/big"], r.String()
	})
	if r := get(t, g.url()+"/big/api/ps"); r.status != http.StatusOK || r.body != `{"models":[]}` {
		t.Errorf("GET /big/api/ps while big is stopped: %s, want {\"models\":[]}", r)
	}
	r := get(t, g.url()+"/small/api/tags")
	if r.status != http.StatusOK || r.header.Get("X-Gate-From-Memory") != "" || r.body != tags["/small"] {
		t.Errorf("GET /small/api/tags while only big is stopped: %s (X-Gate-From-Memory %q), want small's own answer",
			r, r.header.Get("X-Gate-From-Memory"))
	}
	checkStream(t, g.url()+"/small", chatStream, "tiny-small", smallModel.Text())
	eventually(t, 10*time.Second, "big asleep, small up in /_gate/status", func() (bool, string) {
		st := g.status(t)
		return len(st.Backends) == 2 && st.Backends[0].State == "up" && st.Backends[1].State == "asleep", g.statusString(t)
	})
}
