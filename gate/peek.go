package gate

import (
	"bytes"
	"encoding/json"
	"io"
)

// peekLimit bounds what the gate reads of a request body before it chooses a
// replica: the model and the first user message come first in every client
// we know (Open WebUI, the ollama CLI, the OpenAI SDKs), well within it.
const peekLimit = 64 << 10

// peeked is what a replica choice reads of a request body.
type peeked struct {
	Model     string // "model" ("name" for /api/show before Ollama 0.5)
	FirstUser string // the first message of role "user" (its text parts joined), or /api/generate's prompt
}

// peekBody reads body up to its model and first user message, at most
// peekLimit bytes, and returns what it found with the bytes it read (to be
// put back in front of the rest). A body that is not JSON, or puts them
// later, yields what was found so far; it still passes through. A read error
// is left to the rest of the body to give again.
func peekBody(body io.Reader) (peeked, []byte) {
	rec := &peekRecorder{r: io.LimitReader(body, peekLimit)}
	p := parsePeek(json.NewDecoder(rec))
	return p, rec.buf.Bytes()
}

// peekBytes is peekBody for a body held in memory.
func peekBytes(data []byte) peeked {
	return parsePeek(json.NewDecoder(bytes.NewReader(data[:min(len(data), peekLimit)])))
}

// peekRecorder keeps every byte read through it.
type peekRecorder struct {
	r   io.Reader
	buf bytes.Buffer
}

func (rc *peekRecorder) Read(p []byte) (int, error) {
	n, err := rc.r.Read(p)
	rc.buf.Write(p[:n])
	return n, err
}

// parsePeek walks the top-level object token by token and stops as soon as it
// has both fields (or at the first thing it cannot read).
func parsePeek(dec *json.Decoder) peeked {
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
					p.FirstUser, haveUser = contentText(m.Content), true
					if p.Model != "" {
						return p
					}
				}
			}
			if _, err := dec.Token(); err != nil { // the closing ]
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

// contentText is a message's text: Ollama's string, or the text parts of
// OpenAI's array of parts.
func contentText(raw json.RawMessage) string {
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
	var b bytes.Buffer
	for _, part := range parts {
		if part.Type == "text" {
			b.WriteString(part.Text)
		}
	}
	return b.String()
}
