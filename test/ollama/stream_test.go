package ollama

import (
	"encoding/json"
	"fmt"
	"strings"
)

// The three streamed endpoints, with the prompt and options every test uses.
// num_predict bounds a model that would not stop; the tiny model stops after
// its answer (done_reason "stop").
type streamKind struct {
	name, path  string
	body        func(model string) string
	contentType string
	parse       func(body string) (stream, error)
}

const prompt = "Say it"

var (
	chatStream = streamKind{
		name: "chat", path: "/api/chat", contentType: "application/x-ndjson", parse: parseNDJSON("message", "content"),
		body: func(model string) string {
			return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"stream":true,"options":{"num_predict":8,"temperature":0,"seed":42}}`, model, prompt)
		},
	}
	generateStream = streamKind{
		name: "generate", path: "/api/generate", contentType: "application/x-ndjson", parse: parseNDJSON("response"),
		body: func(model string) string {
			return fmt.Sprintf(`{"model":%q,"prompt":%q,"stream":true,"options":{"num_predict":8,"temperature":0,"seed":42}}`, model, prompt)
		},
	}
	openAIStream = streamKind{
		name: "openai chat", path: "/v1/chat/completions", contentType: "text/event-stream", parse: parseSSE,
		body: func(model string) string {
			return fmt.Sprintf(`{"model":%q,"messages":[{"role":"user","content":%q}],"stream":true,"max_tokens":8,"temperature":0,"seed":42}`, model, prompt)
		},
	}
	streamKinds = []streamKind{chatStream, generateStream, openAIStream}
)

// stream is a streamed answer, decoded.
type stream struct {
	text   string   // the answer's text, all chunks joined
	chunks []string // every chunk with its timing fields and ids removed: equal for equal answers
	end    string   // done_reason (NDJSON) or finish_reason (SSE) of the last chunk
}

// Fields that differ between two equal answers: when, how long, which id.
var volatile = []string{"created_at", "total_duration", "load_duration", "prompt_eval_duration", "eval_duration", "id", "created"}

func normalize(obj map[string]any) (string, error) {
	for _, k := range volatile {
		delete(obj, k)
	}
	b, err := json.Marshal(obj) // sorted keys
	return string(b), err
}

// parseNDJSON decodes Ollama's stream: one JSON object a line, the last with
// "done": true. The text is at path in each object.
func parseNDJSON(path ...string) func(string) (stream, error) {
	return func(body string) (stream, error) {
		var s stream
		if !strings.HasSuffix(body, "\n") {
			return s, fmt.Errorf("NDJSON stream does not end with a newline: %q", body)
		}
		lines := strings.Split(strings.TrimSuffix(body, "\n"), "\n")
		for i, line := range lines {
			var obj map[string]any
			if err := json.Unmarshal([]byte(line), &obj); err != nil {
				return s, fmt.Errorf("line %d of the stream: %w: %q", i+1, err, line)
			}
			if e, ok := obj["error"]; ok {
				return s, fmt.Errorf("line %d of the stream is an error: %v", i+1, e)
			}
			v := any(obj)
			for _, k := range path {
				m, _ := v.(map[string]any)
				v = m[k]
			}
			text, _ := v.(string)
			s.text += text
			done, _ := obj["done"].(bool)
			if done != (i == len(lines)-1) {
				return s, fmt.Errorf("line %d of %d has done=%v: %q", i+1, len(lines), done, line)
			}
			if done {
				s.end, _ = obj["done_reason"].(string)
			}
			n, err := normalize(obj)
			if err != nil {
				return s, err
			}
			s.chunks = append(s.chunks, n)
		}
		return s, nil
	}
}

// parseSSE decodes an OpenAI stream: "data: {json}" events separated by
// blank lines, ended by "data: [DONE]".
func parseSSE(body string) (stream, error) {
	var s stream
	events := strings.Split(strings.TrimSuffix(body, "\n\n"), "\n\n")
	if events[len(events)-1] != "data: [DONE]" {
		return s, fmt.Errorf("SSE stream does not end with data: [DONE]: %q", body)
	}
	for i, ev := range events[:len(events)-1] {
		data, ok := strings.CutPrefix(ev, "data: ")
		if !ok {
			return s, fmt.Errorf("event %d is not a data line: %q", i+1, ev)
		}
		var obj struct {
			Choices []struct {
				Delta struct {
					Content string `json:"content"`
				} `json:"delta"`
				FinishReason *string `json:"finish_reason"`
			} `json:"choices"`
		}
		if err := json.Unmarshal([]byte(data), &obj); err != nil {
			return s, fmt.Errorf("event %d: %w: %q", i+1, err, data)
		}
		if len(obj.Choices) != 1 {
			return s, fmt.Errorf("event %d has %d choices: %q", i+1, len(obj.Choices), data)
		}
		s.text += obj.Choices[0].Delta.Content
		if fr := obj.Choices[0].FinishReason; fr != nil {
			s.end = *fr
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(data), &m); err != nil {
			return s, err
		}
		n, err := normalize(m)
		if err != nil {
			return s, err
		}
		s.chunks = append(s.chunks, n)
	}
	s.chunks = append(s.chunks, "[DONE]")
	return s, nil
}
