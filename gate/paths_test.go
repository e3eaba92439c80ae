package gate

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Item 13's refusal and item 11's collapse touch only dot segments and a
// leading doubled slash: paths that merely contain dots or escapes (model
// names with a registry host, blob digests) reach the backend as written.
func TestLegitimatePathsPassUnchanged(t *testing.T) {
	rec := &recorder{resp: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }}
	backend := httptest.NewServer(withVersion(rec))
	defer backend.Close()
	g := startGate(t, Config{Backends: []BackendConfig{backendURL(t, "big="+backend.URL+"/ollama")}})
	eventually(t, "up", func() bool { return stats(g.Gate, "big").State == StateUp })
	for _, tc := range []struct{ path, want string }{
		{"/big/v1/models/hf.co%2Fbartowski%2FLlama-3.2-1B-Instruct-GGUF:Q4_K_M", "/ollama/v1/models/hf.co%2Fbartowski%2FLlama-3.2-1B-Instruct-GGUF:Q4_K_M"},
		{"/big/v1/models/hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "/ollama/v1/models/hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M"},
		{"/big/api/blobs/sha256:29fdb92e57cf0827ded04ae6461b5931d01fa595843f55d36f5b275a52087dd2", "/ollama/api/blobs/sha256:29fdb92e57cf0827ded04ae6461b5931d01fa595843f55d36f5b275a52087dd2"},
		{"/big/api/blobs/sha256%3A29fd", "/ollama/api/blobs/sha256%3A29fd"},
		{"/big/v1/models/...", "/ollama/v1/models/..."},
		{"/big/v1/models/..a.b", "/ollama/v1/models/..a.b"},
		{"/big/v1/models/%2e%2e%2fx", "/ollama/v1/models/%2e%2e%2fx"}, // one segment (an escaped slash), not ".."
		{"/big/api/show?name=..", "/ollama/api/show?name=.."},
		{"/big//api/delete", "/ollama/api/delete"},
	} {
		rec.mu.Lock()
		rec.got = nil
		rec.mu.Unlock()
		req, _ := http.NewRequest(http.MethodDelete, g.url+"/", nil)
		req.URL.Opaque = tc.path // sent as written
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		got := rec.requests()
		if res.StatusCode != http.StatusOK || len(got) != 1 || got[0].RequestURI != tc.want {
			t.Errorf("%s: status %d, the backend got %v, want %s once", tc.path, res.StatusCode, got, tc.want)
		}
	}
}
