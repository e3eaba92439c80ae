package ollama

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"
)

// The premise of the held-chat test, checked on Ollama alone: stopped and
// started again on the same address with the same models directory, it
// answers the same chat chunk for chunk (timings and ids aside).
func TestOllamaAnswersTheSameAfterARestart(t *testing.T) {
	o := startOllama(t, "ollama")
	createModel(t, o.url(), "tiny", hello)
	before := checkStream(t, o.url(), chatStream, "tiny", hello.Text())
	o.stop()
	if _, err := do(http.MethodGet, o.url()+"/api/version", ""); err == nil {
		t.Fatal("Ollama still answers after it was stopped")
	}
	o.start()
	after := checkStream(t, o.url(), chatStream, "tiny", hello.Text())
	if !slices.Equal(before.chunks, after.chunks) {
		t.Errorf("after a restart:\n%q\nbefore:\n%q", after.chunks, before.chunks)
	}
}

// While Ollama is stopped, the gate serves the lists it saw from memory (200,
// the same bytes, X-Gate-From-Memory: 1) and /api/ps with no model loaded; a
// chat sent then is held, and delivered once Ollama serves again, equal to
// Ollama's own answer.
func TestGateWhileOllamaSleeps(t *testing.T) {
	o := startOllama(t, "ollama")
	g := startGate(t, o.url())
	createModel(t, g.url(), "tiny", hello)

	lists := []string{"/api/tags", "/api/version", "/v1/models"}
	seen := map[string]string{}
	for _, path := range lists {
		r := get(t, g.url()+path)
		if r.status != http.StatusOK || r.header.Get("X-Gate-From-Memory") != "" {
			t.Fatalf("GET %s while Ollama is up: %s (X-Gate-From-Memory %q)", path, r, r.header.Get("X-Gate-From-Memory"))
		}
		seen[path] = r.body
	}
	checkStream(t, g.url(), chatStream, "tiny", hello.Text()) // loads the model: /api/ps is not empty now
	if r := get(t, g.url()+"/api/ps"); r.body == `{"models":[]}` {
		t.Fatalf("GET /api/ps after a chat: %s, want tiny loaded", r)
	}

	o.stop()
	t.Run("lists from memory", func(t *testing.T) {
		for _, path := range lists {
			// The gate may learn that Ollama is gone from this very request
			// (its dial fails) or from a probe: the answer must be from memory
			// at once or after a short while, never an error.
			eventually(t, 10*time.Second, path+" from memory", func() (bool, string) {
				r := get(t, g.url()+path)
				if r.status != http.StatusOK {
					t.Fatalf("GET %s while Ollama is stopped: %s, want 200 from memory", path, r)
				}
				return r.header.Get("X-Gate-From-Memory") == "1", r.String()
			})
			if r := get(t, g.url()+path); r.body != seen[path] {
				t.Errorf("GET %s from memory: %q, Ollama answered %q", path, r.body, seen[path])
			}
		}
		if r := get(t, g.url()+"/api/ps"); r.status != http.StatusOK || r.body != `{"models":[]}` {
			t.Errorf("GET /api/ps while Ollama is stopped: %s, want 200 {\"models\":[]}", r)
		}
		if st := g.status(t); len(st.Backends) != 1 || st.Backends[0].State != "asleep" {
			t.Errorf("GET /_gate/status while Ollama is stopped: %+v, want default asleep", st)
		}
	})

	t.Run("a chat held until Ollama serves again", func(t *testing.T) {
		held := make(chan response, 1)
		go func() {
			r, err := do(http.MethodPost, g.url()+chatStream.path, chatStream.body("tiny"))
			if err != nil {
				r = response{body: "transport error: " + err.Error()}
			}
			held <- r
		}()
		eventually(t, 10*time.Second, "the gate holds the chat", func() (bool, string) {
			st := g.status(t)
			return len(st.Backends) == 1 && st.Backends[0].Held == 1, g.statusString(t)
		})
		select {
		case r := <-held:
			t.Fatalf("the chat was answered while Ollama is stopped: %s", r)
		default:
		}

		o.start()
		var r response
		select {
		case r = <-held:
		case <-time.After(time.Minute):
			t.Fatal("the held chat was not delivered within a minute of Ollama serving again")
		}
		if r.status != http.StatusOK || r.header.Get("Content-Type") != chatStream.contentType {
			t.Fatalf("the held chat: %s (%s)", r, r.header.Get("Content-Type"))
		}
		got, err := chatStream.parse(r.body)
		if err != nil {
			t.Fatalf("the held chat: %v", err)
		}
		want := checkStream(t, o.url(), chatStream, "tiny", hello.Text())
		if got.text != hello.Text() || !slices.Equal(got.chunks, want.chunks) {
			t.Errorf("the held chat, chunk for chunk:\n%q\nOllama's own answer:\n%q", got.chunks, want.chunks)
		}
		if st := g.status(t); st.Backends[0].State != "up" || st.Backends[0].Held != 0 {
			t.Errorf("GET /_gate/status after the delivery: %s, want up with nothing held", g.statusString(t))
		}
	})
}

func (g *gateServer) statusString(t *testing.T) string {
	t.Helper()
	return get(t, g.url()+"/_gate/status").body
}

// A request held past --gate.hold-timeout gets an error in the shape of the
// API it asked (Ollama's {"error":"..."}, OpenAI's {"error":{"message":...}}),
// saying what the gate saw of the stopped Ollama: Open WebUI shows that text.
func TestGateHoldTimeoutWithOllamaStopped(t *testing.T) {
	o := startOllama(t, "ollama")
	g := startGateWith(t, []string{"--gate.hold-timeout=1s"}, o.url())
	createModel(t, g.url(), "tiny", hello)
	checkStream(t, g.url(), chatStream, "tiny", hello.Text())
	o.stop()

	for _, k := range streamKinds {
		t.Run(k.name, func(t *testing.T) {
			r := post(t, g.url()+k.path, k.body("tiny"))
			var message string
			if k.path == openAIStream.path {
				var e struct {
					Error struct{ Message string } `json:"error"`
				}
				_ = json.Unmarshal([]byte(r.body), &e)
				message = e.Error.Message
			} else {
				var e struct{ Error string }
				_ = json.Unmarshal([]byte(r.body), &e)
				message = e.Error
			}
			t.Logf("POST %s held past the hold timeout: %s", k.path, r)
			if r.status != http.StatusGatewayTimeout || !strings.Contains(message, "connection refused") {
				t.Errorf("POST %s held past the hold timeout: %s, want 504 with an error in the API's shape saying connection refused", k.path, r)
			}
		})
	}
}
