package ollama

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
)

// TestOllamaDirect runs the API checks against Ollama itself: the same
// assertions the gate must pass, so they are known to hold for the real thing.
func TestOllamaDirect(t *testing.T) {
	o := startOllama(t, "ollama")
	checkAPI(t, o.url(), o.url())
}

// TestGatePassesThrough runs the API checks through the gate in front of
// Ollama, and compares every answer with Ollama's own.
func TestGatePassesThrough(t *testing.T) {
	o := startOllama(t, "ollama")
	g := startGate(t, o.url())
	checkAPI(t, g.url(), o.url())
	st := g.status(t)
	if len(st.Backends) != 1 || st.Backends[0].Name != "default" || st.Backends[0].State != "up" {
		t.Errorf("GET /_gate/status: want the one backend default up, got %+v", st)
	}
}

// Ollama's own Go engine (OLLAMA_NEW_ENGINE=1) instead of the built-in
// llama.cpp streams the same answers through the gate.
func TestGatePassesThroughOllamasGoEngine(t *testing.T) {
	o := startOllama(t, "ollama-new-engine", "OLLAMA_NEW_ENGINE=1")
	g := startGate(t, o.url())
	createModel(t, g.url(), "tiny", hello)
	for _, k := range streamKinds {
		t.Run(k.name, func(t *testing.T) {
			got := checkStream(t, g.url(), k, "tiny", hello.Text())
			want := checkStream(t, o.url(), k, "tiny", hello.Text())
			if !slices.Equal(got.chunks, want.chunks) {
				t.Errorf("through the gate, chunk for chunk:\n%q\nOllama itself:\n%q", got.chunks, want.chunks)
			}
		})
	}
}

// exchange is one request of the API checks, with the answer it must get.
type exchange struct {
	method, path, body string
	status             int
	want               string // the exact body, if not ""
}

// checkAPI checks Ollama's API at target. When target is not Ollama itself
// (direct), every answer must also equal Ollama's (status, Content-Type and
// body byte for byte; streams chunk for chunk, without timings and ids).
func checkAPI(t *testing.T, target, direct string) {
	t.Helper()
	viaGate := target != direct
	compare := func(t *testing.T, ex exchange) response {
		t.Helper()
		got, err := do(ex.method, target+ex.path, ex.body)
		if err != nil {
			t.Fatalf("%s %s: %v", ex.method, ex.path, err)
		}
		if got.status != ex.status || (ex.want != "" && got.body != ex.want) {
			t.Errorf("%s %s %s: got HTTP %d %q, want HTTP %d %q", ex.method, ex.path, ex.body, got.status, got.body, ex.status, ex.want)
		}
		if viaGate {
			want, err := do(ex.method, direct+ex.path, ex.body)
			if err != nil {
				t.Fatalf("%s %s directly: %v", ex.method, ex.path, err)
			}
			if got.status != want.status || got.body != want.body || got.header.Get("Content-Type") != want.header.Get("Content-Type") {
				t.Errorf("%s %s through the gate: got %s (%s), Ollama answers %s (%s)", ex.method, ex.path,
					got, got.header.Get("Content-Type"), want, want.header.Get("Content-Type"))
			}
		}
		return got
	}

	t.Run("no models", func(t *testing.T) {
		for _, ex := range []exchange{
			{method: "GET", path: "/api/version", status: 200, want: `{"version":"` + ollamaVersion + `"}`},
			{method: "GET", path: "/api/tags", status: 200, want: `{"models":[]}`},
			{method: "GET", path: "/api/ps", status: 200, want: `{"models":[]}`},
			{method: "GET", path: "/v1/models", status: 200, want: `{"object":"list","data":null}` + "\n"}, // null, not [], and a newline
			{method: "POST", path: "/api/chat", body: chatStream.body("nope"), status: 404, want: `{"error":"model 'nope' not found"}`},
		} {
			compare(t, ex)
		}
	})

	// The blob (483 KB) and the create go through target too: request bodies
	// pass through.
	createModel(t, target, "tiny", hello)

	t.Run("lists", func(t *testing.T) {
		var tags struct {
			Models []struct {
				Name, Model string
				Size        int64
				Details     struct{ Format, Family string } `json:"details"`
			}
		}
		r := compare(t, exchange{method: "GET", path: "/api/tags", status: 200})
		if err := json.Unmarshal([]byte(r.body), &tags); err != nil {
			t.Fatalf("/api/tags: %v in %s", err, r.body)
		}
		if len(tags.Models) != 1 || tags.Models[0].Name != "tiny:latest" || tags.Models[0].Details.Family != "llama" ||
			tags.Models[0].Details.Format != "gguf" {
			// (Its quantization_level says "unknown": Ollama reads file type 0, F32, as unset.)
			t.Errorf("/api/tags: want tiny:latest, a gguf llama, got %s", r.body)
		}
		compare(t, exchange{method: "GET", path: "/api/version", status: 200, want: `{"version":"` + ollamaVersion + `"}`})

		var models struct {
			Object string
			Data   []struct{ ID, Object string }
		}
		r = compare(t, exchange{method: "GET", path: "/v1/models", status: 200})
		if err := json.Unmarshal([]byte(r.body), &models); err != nil {
			t.Fatalf("/v1/models: %v in %s", err, r.body)
		}
		if models.Object != "list" || len(models.Data) != 1 || models.Data[0].ID != "tiny:latest" || models.Data[0].Object != "model" {
			t.Errorf("/v1/models: want the list of tiny:latest, got %s", r.body)
		}

		var show struct {
			Details   struct{ Family string }
			ModelInfo map[string]any `json:"model_info"`
		}
		r = compare(t, exchange{method: "POST", path: "/api/show", body: `{"model":"tiny"}`, status: 200})
		if err := json.Unmarshal([]byte(r.body), &show); err != nil {
			t.Fatalf("/api/show: %v in %s", err, r.body)
		}
		if show.Details.Family != "llama" || show.ModelInfo["llama.block_count"] != float64(blockCount) ||
			show.ModelInfo["llama.embedding_length"] != float64(embeddingLength) {
			t.Errorf("/api/show: want the tiny llama (%d blocks of %d), got %s", blockCount, embeddingLength, r.body)
		}
	})

	t.Run("streams", func(t *testing.T) {
		for _, k := range streamKinds {
			t.Run(k.name, func(t *testing.T) {
				got := checkStream(t, target, k, "tiny", hello.Text())
				if viaGate {
					want := checkStream(t, direct, k, "tiny", hello.Text())
					if !slices.Equal(got.chunks, want.chunks) {
						t.Errorf("through the gate, chunk for chunk:\n%q\nOllama itself:\n%q", got.chunks, want.chunks)
					}
				}
			})
		}
	})

	t.Run("errors", func(t *testing.T) {
		for _, ex := range []exchange{
			{method: "POST", path: "/api/chat", body: chatStream.body("nope"), status: 404, want: `{"error":"model 'nope' not found"}`},
			{method: "POST", path: "/api/generate", body: generateStream.body("nope"), status: 404, want: `{"error":"model 'nope' not found"}`},
			{method: "POST", path: "/api/show", body: `{"model":"nope"}`, status: 404},
			{method: "POST", path: "/v1/chat/completions", body: openAIStream.body("nope"), status: 404},
			{method: "POST", path: "/api/chat", body: `{"model":`, status: 400},
		} {
			compare(t, ex)
		}
	})

	t.Run("loaded", func(t *testing.T) {
		r := get(t, target+"/api/ps")
		var ps struct{ Models []struct{ Name string } }
		if err := json.Unmarshal([]byte(r.body), &ps); err != nil || r.status != http.StatusOK {
			t.Fatalf("/api/ps: %v %s", err, r)
		}
		if len(ps.Models) != 1 || ps.Models[0].Name != "tiny:latest" {
			t.Errorf("/api/ps after the chats: want tiny:latest loaded, got %s", r.body)
		}
	})
}

// checkStream sends the streamed request k for model to base and checks the
// answer: 200, k's Content-Type, more than one chunk, exactly the text want,
// and stopped by the model (not by num_predict).
func checkStream(t *testing.T, base string, k streamKind, model, want string) stream {
	t.Helper()
	r := post(t, base+k.path, k.body(model))
	if r.status != http.StatusOK || r.header.Get("Content-Type") != k.contentType {
		t.Fatalf("POST %s: got %s (%s), want HTTP 200 (%s)", k.path, r, r.header.Get("Content-Type"), k.contentType)
	}
	s, err := k.parse(r.body)
	if err != nil {
		t.Fatalf("POST %s: %v", k.path, err)
	}
	if s.text != want || s.end != "stop" || len(s.chunks) < 3 {
		t.Errorf("POST %s %s: got %q (end %q, %d chunks), want %q ended by the model (stop) in 3 chunks or more",
			base, k.path, s.text, s.end, len(s.chunks), want)
	}
	return s
}
