package gate

import (
	"bytes"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// peekWithDecoder is the peek as it was written first, with encoding/json's
// token decoder: the specification the hand-written scanner must meet on
// every valid body (FuzzPeekMatchesEncodingJSON).
func peekWithDecoder(data []byte) peeked {
	dec := json.NewDecoder(bytes.NewReader(data[:min(len(data), peekLimit)]))
	var p peeked
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return p
	}
	haveUser := false
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return p
		}
		key, _ := t.(string)
		switch key {
		case "model", "name":
			var s string
			if dec.Decode(&s) != nil {
				return p
			}
			if key == "model" || p.Model == "" {
				p.Model = s
			}
		case "prompt":
			if dec.Decode(&p.FirstUser) != nil {
				return p
			}
			haveUser = true
		case "messages":
			if t, err := dec.Token(); err != nil || t != json.Delim('[') {
				return p
			}
			for dec.More() {
				var m struct {
					Role    string          `json:"role"`
					Content json.RawMessage `json:"content"`
				}
				if dec.Decode(&m) != nil {
					return p
				}
				if m.Role == "user" && !haveUser {
					p.FirstUser, haveUser = contentTextWithDecoder(m.Content), true
					if p.Model != "" {
						return p
					}
				}
			}
			if _, err := dec.Token(); err != nil {
				return p
			}
		default:
			var skip json.RawMessage
			if dec.Decode(&skip) != nil {
				return p
			}
		}
		if p.Model != "" && haveUser {
			return p
		}
	}
	return p
}

func contentTextWithDecoder(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if json.Unmarshal(raw, &parts) != nil {
		return string(raw)
	}
	var b strings.Builder
	for _, part := range parts {
		if part.Type == "text" {
			b.WriteString(part.Text)
		}
	}
	return b.String()
}

// What encoding/json decodes, the scanner reads: escapes, odd spacing, null,
// field names of any case, duplicate keys, parts and messages that do not
// decode, nesting; and bodies it must stop at.
func TestPeekScannerCases(t *testing.T) {
	tests := []struct {
		name string
		body string
		want peeked
	}{
		{"escapes in values", `{"model":"a\"b\\c\/d","prompt":"line\nnext\ttab \u00e9\u4e2d"}`, peeked{Model: `a"b\c/d`, FirstUser: "line\nnext\ttab é中"}},
		{"escapes in keys", `{"mod\u0065l":"m","pr\u006fmpt":"p"}`, peeked{Model: "m", FirstUser: "p"}},
		{"a surrogate pair", `{"model":"m","prompt":"\ud83d\ude00"}`, peeked{Model: "m", FirstUser: "😀"}},
		{"a lone surrogate", `{"model":"m","prompt":"a\ud83db"}`, peeked{Model: "m", FirstUser: "a\uFFFDb"}},
		{"invalid UTF-8", "{\"model\":\"m\",\"prompt\":\"a\xffb\"}", peeked{Model: "m", FirstUser: "a\uFFFDb"}},
		{"white space everywhere", " \n{ \"model\" : \"m\" ,\r\n\t\"messages\" : [ { \"role\" : \"user\" , \"content\" : \"hi\" } ] } ", peeked{Model: "m", FirstUser: "hi"}},
		{"role and content of any case", `{"model":"m","messages":[{"ROLE":"user","Content":"hi"}]}`, peeked{Model: "m", FirstUser: "hi"}},
		{"the role's value is exact", `{"model":"m","messages":[{"role":"User","content":"no"},{"role":"user","content":"yes"}]}`, peeked{Model: "m", FirstUser: "yes"}},
		{"the last duplicate key wins", `{"model":"m","messages":[{"role":"user","content":"a","content":"b"}]}`, peeked{Model: "m", FirstUser: "b"}},
		{"null leaves a role as it was", `{"model":"m","messages":[{"role":"user","role":null,"content":"hi"}]}`, peeked{Model: "m", FirstUser: "hi"}},
		{"a null message", `{"model":"m","messages":[null,{"role":"user","content":"hi"}]}`, peeked{Model: "m", FirstUser: "hi"}},
		{"a message that is a string", `{"model":"m","messages":["hi",{"role":"user","content":"hi"}]}`, peeked{Model: "m"}},
		{"a role that is a number", `{"model":"m","messages":[{"role":1,"content":"x"},{"role":"user","content":"hi"}]}`, peeked{Model: "m"}},
		{"content null", `{"model":"m","messages":[{"role":"user","content":null}]}`, peeked{Model: "m"}},
		{"no content", `{"model":"m","messages":[{"role":"user"}],"prompt":"p"}`, peeked{Model: "m"}},
		{"content an object: its JSON", `{"model":"m","messages":[{"role":"user","content":{"a": [1, 2]}}]}`, peeked{Model: "m", FirstUser: `{"a": [1, 2]}`}},
		{"content a number: its JSON", `{"model":"m","messages":[{"role":"user","content":-1.5e+3}]}`, peeked{Model: "m", FirstUser: `-1.5e+3`}},
		{"parts with nulls and other types", `{"model":"m","messages":[{"role":"user","content":[null,{"type":"image_url"},{"TYPE":"text","Text":"a"},{"type":"text","text":"b","text":null}]}]}`, peeked{Model: "m", FirstUser: "ab"}},
		{"a part that does not decode: the content's JSON", `{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":"a"}, 3]}]}`, peeked{Model: "m", FirstUser: `[{"type":"text","text":"a"}, 3]`}},
		{"empty parts", `{"model":"m","messages":[{"role":"user","content":[]}]}`, peeked{Model: "m"}},
		{"the first user message only", `{"messages":[{"role":"user","content":"first"},{"role":"user","content":"second"}],"model":"m"}`, peeked{Model: "m", FirstUser: "first"}},
		{"prompt after messages replaces", `{"messages":[{"role":"user","content":"a"}],"prompt":"b","model":"m"}`, peeked{Model: "m", FirstUser: "b"}},
		{"a null prompt", `{"prompt":null,"model":"m"}`, peeked{Model: "m"}},
		{"a null model", `{"name":"n","model":null,"prompt":"p"}`, peeked{FirstUser: "p"}},
		{"a null name", `{"name":null,"prompt":"p"}`, peeked{FirstUser: "p"}},
		{"nested values skipped", `{"options":{"stop":["a","}"],"x":[[],{},[{"y":null}]],"t":true,"f":false,"n":-0.0e-1},"model":"m","prompt":"p"}`, peeked{Model: "m", FirstUser: "p"}},
		{"a model that is an object", `{"prompt":"p","model":{"x":1}}`, peeked{FirstUser: "p"}},
		{"messages that are not an array", `{"model":"m","messages":{"role":"user"},"prompt":"p"}`, peeked{Model: "m"}},
		{"a bad number", `{"x":01,"model":"m"}`, peeked{}},
		{"a bad escape", `{"model":"m\x"}`, peeked{}},
		{"a control character in a string", "{\"model\":\"a\nb\"}", peeked{}},
		{"a missing comma", `{"model":"m" "prompt":"p"}`, peeked{Model: "m"}},
		{"a trailing comma", `{"model":"m",}`, peeked{Model: "m"}},
		{"cut in a string", `{"model":"m","prompt":"p`, peeked{Model: "m"}},
		{"a bare string", `"model"`, peeked{}},
		{"nothing after the brace", `{`, peeked{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := peekBytes([]byte(tt.body)); got != tt.want {
				t.Errorf("peeked %+v, want %+v", got, tt.want)
			}
			if json.Valid([]byte(tt.body)) {
				if ref := peekWithDecoder([]byte(tt.body)); ref != tt.want {
					t.Errorf("the table is wrong: encoding/json reads %+v", ref)
				}
			}
			src := strings.NewReader(tt.body)
			got, kept, whole := peekBody(iotest.HalfReader(src), -1)
			if whole && len(kept) != len(tt.body) {
				t.Errorf("whole with %d of %d bytes", len(kept), len(tt.body))
			}
			if got != tt.want {
				t.Errorf("streamed: peeked %+v, want %+v", got, tt.want)
			}
			if all, _ := io.ReadAll(io.MultiReader(bytes.NewReader(kept), src)); string(all) != tt.body {
				t.Errorf("replay: %q, want the body", all)
			}
		})
	}
}

// On every valid JSON body the scanner finds what encoding/json finds; on
// any body, streamed in pieces or whole, it finds the same and gives back
// exactly what it read.
func FuzzPeekMatchesEncodingJSON(f *testing.F) {
	for _, seed := range []string{
		`{"model":"llama3.2","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}],"stream":true}`,
		`{"messages":[{"role":"user","content":[{"type":"text","text":"a\u00e9"},{"type":"image_url","image_url":{"url":"x"}}]}],"model":"m"}`,
		`{"name":"n","model":"m","prompt":"why\n\"sky\"","options":{"num_ctx":4096,"stop":["\ud83d\ude00"],"t":1.5e-3}}`,
		`{"model":null,"messages":[null,{"ROLE":"user","content":{"x":[true,false,null]}}]}`,
		`{"model":"m","messages":[{"role":"user","content":[{"type":"text","text":1}]}]}`,
		"{\"prompt\":\"\xff\xfe\",\"model\":\"m\"}",
		`[{"model":"m"}]`, `{"model":3}`, `{}`, ``, `not json`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got := peekBytes(body)
		if json.Valid(body) && len(body) <= peekLimit {
			if want := peekWithDecoder(body); got != want {
				t.Fatalf("%q: scanner %+v, encoding/json %+v", body, got, want)
			}
		}
		for _, r := range []io.Reader{bytes.NewReader(body), iotest.OneByteReader(bytes.NewReader(body))} {
			src := io.MultiReader(r) // hides the reader's type
			streamed, kept, whole := peekBody(src, -1)
			if streamed != got {
				t.Fatalf("%q: streamed %+v, whole %+v", body, streamed, got)
			}
			if whole && len(kept) != len(body) {
				t.Fatalf("%q: whole with %d of %d bytes", body, len(kept), len(body))
			}
			if all, _ := io.ReadAll(io.MultiReader(bytes.NewReader(kept), src)); !bytes.Equal(all, body) {
				t.Fatalf("%q: replay %q", body, all)
			}
		}
	})
}

// BenchmarkPeek reads the model and first message of Open WebUI's chat body
// with the scanner and with encoding/json's token decoder (the first
// version), streamed as a request body is.
func BenchmarkPeek(b *testing.B) {
	body := []byte(`{"model":"llama3.2:3b","messages":[{"role":"system","content":"You are a helpful assistant. Answer briefly."},` +
		`{"role":"user","content":"Why is the sky blue? Explain it to a child."}],"stream":true,"options":{"temperature":0.7,"num_ctx":4096}}`)
	for _, impl := range []struct {
		name string
		peek func(io.Reader) peeked
	}{
		{"scanner", func(r io.Reader) peeked { p, _, _ := peekBody(r, int64(len(body))); return p }},
		{"encoding-json", func(r io.Reader) peeked {
			data, _ := io.ReadAll(r)
			return peekWithDecoder(data)
		}},
	} {
		b.Run(impl.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if p := impl.peek(bytes.NewReader(body)); p.Model != "llama3.2:3b" {
					b.Fatalf("peeked %+v", p)
				}
			}
		})
	}
}
