package gate

import (
	"bytes"
	"encoding/json"
	"testing"
)

// modelOfWithDecoder is modelOf as it was written first, with encoding/json's
// token decoder: the specification the scanner must meet on every body
// (FuzzModelOfMatchesEncodingJSON).
func modelOfWithDecoder(body []byte) string {
	dec := json.NewDecoder(bytes.NewReader(body))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return ""
	}
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return ""
		}
		key, _ := k.(string)
		if key == "model" {
			var m string
			if dec.Decode(&m) != nil || checkModelName(m) != nil {
				return ""
			}
			return m
		}
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}

func FuzzModelOfMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"model":"llama3.1:8b","messages":[]}`,
		`{"messages":[{"role":"user","content":"{\"model\":\"x\"}"}],"options":{"model":"y"},"model":"qwen3:32b"}`,
		`{"stream":true,"model":"a:1","messages":[{"content":"cut sho`,
		`{"mod\u0065l":"a\u003a1","model":"b"}`, `{"model":null}`, `{"model":"has space"}`, `{"model":42}`,
		`[{"model":"x"}]`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return
		}
		// The whole body, and cut short (the sniffer keeps the first MiB).
		for _, b := range [][]byte{body, body[:len(body)/2], body[:len(body)*9/10]} {
			if got, want := modelOf(b), modelOfWithDecoder(b); got != want {
				t.Fatalf("%q: scanner %q, encoding/json %q", b, got, want)
			}
		}
	})
}

// BenchmarkModelOf is warming's sniff of the model (every request that may
// load one, when warm= is on) with the scanner and with encoding/json.
func BenchmarkModelOf(b *testing.B) {
	body := []byte(`{"model":"llama3.2:3b","messages":[{"role":"system","content":"You are a helpful assistant."},` +
		`{"role":"user","content":"Why is the sky blue?"}],"stream":true,"options":{"temperature":0.7}}`)
	for _, impl := range []struct {
		name string
		f    func([]byte) string
	}{{"scanner", modelOf}, {"encoding-json", modelOfWithDecoder}} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if impl.f(body) != "llama3.2:3b" {
					b.Fatal("no model")
				}
			}
		})
	}
}
