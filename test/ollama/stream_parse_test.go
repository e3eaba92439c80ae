package ollama

import (
	"slices"
	"strings"
	"testing"
)

// The stream decoders are the suite's eyes: a stream that is cut short, not
// ended, or carries an error must fail the test, never pass as an answer.
func TestStreamDecoders(t *testing.T) {
	for _, c := range []struct {
		name   string
		kind   streamKind
		body   string
		text   string   // when err is ""
		chunks []string // when err is ""
		err    string
	}{
		{name: "chat", kind: chatStream,
			body: `{"message":{"content":" hello"},"done":false,"created_at":"t1"}` + "\n" +
				`{"message":{"content":""},"done":true,"done_reason":"stop","eval_duration":7}` + "\n",
			text:   " hello",
			chunks: []string{`{"done":false,"message":{"content":" hello"}}`, `{"done":true,"done_reason":"stop","message":{"content":""}}`}},
		{name: "NDJSON without its last newline", kind: chatStream, body: `{"done":true}`, err: "does not end with a newline"},
		{name: "NDJSON cut before done", kind: generateStream, body: `{"response":" hello","done":false}` + "\n", err: "has done=false"},
		{name: "NDJSON done too early", kind: generateStream, body: `{"done":true}` + "\n" + `{"done":true}` + "\n", err: "has done=true"},
		{name: "NDJSON error line", kind: chatStream, body: `{"error":"boom"}` + "\n", err: "is an error: boom"},
		{name: "NDJSON not JSON", kind: chatStream, body: "oops\n", err: "line 1 of the stream"},
		{name: "SSE", kind: openAIStream,
			body: `data: {"id":"chatcmpl-1","created":5,"choices":[{"delta":{"content":" hi"},"finish_reason":null}]}` + "\n\n" +
				`data: {"id":"chatcmpl-1","choices":[{"delta":{"content":""},"finish_reason":"stop"}]}` + "\n\n" + "data: [DONE]\n\n",
			text: " hi",
			chunks: []string{`{"choices":[{"delta":{"content":" hi"},"finish_reason":null}]}`,
				`{"choices":[{"delta":{"content":""},"finish_reason":"stop"}]}`, "[DONE]"}},
		{name: "SSE without [DONE]", kind: openAIStream, body: `data: {"choices":[{"delta":{"content":" hi"}}]}` + "\n\n", err: "does not end with data: [DONE]"},
		{name: "SSE event that is not data", kind: openAIStream, body: "event: x\n\ndata: [DONE]\n\n", err: "is not a data line"},
		{name: "SSE without choices", kind: openAIStream, body: `data: {"choices":[]}` + "\n\ndata: [DONE]\n\n", err: "has 0 choices"},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := c.kind.parse(c.body)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("got error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.text != c.text || !slices.Equal(s.chunks, c.chunks) {
				t.Errorf("got %q %q, want %q %q", s.text, s.chunks, c.text, c.chunks)
			}
		})
	}
}
