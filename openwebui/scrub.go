package openwebui

import (
	"encoding/json"
	"net/url"
	"strings"
)

// minSecretPiece is the shortest piece of the token that is scrubbed. A
// server may echo the token whole, cut short (a decode error quotes 40
// characters of a value), escaped (JSON, percent-encoding) or inside other
// text; any 8 characters of it in a row are treated as a leak.
const minSecretPiece = 8

// maxScrubbedText bounds the server-derived text that is scrubbed and kept;
// more is never shown anyway.
const maxScrubbedText = 4096

// scrubber removes every piece of one token from text. It is the one place
// through which all server-derived text passes on its way out of the client:
// into an error (and from there into a 503 body, a log line or a gRPC
// status), a log line, or a label value.
type scrubber struct {
	pieces map[string]struct{} // every minSecretPiece-long piece of every form of the token
}

func newScrubber(token string) scrubber {
	s := scrubber{pieces: map[string]struct{}{}}
	if token == "" {
		return s
	}
	forms := []string{token, url.QueryEscape(token), url.PathEscape(token)}
	for _, escapeHTML := range []bool{true, false} {
		var b strings.Builder
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(escapeHTML)
		if enc.Encode(token) == nil {
			forms = append(forms, strings.Trim(strings.TrimSpace(b.String()), `"`))
		}
	}
	for _, f := range forms {
		if len(f) < minSecretPiece {
			// Too short to cut into pieces: only the whole form is a leak.
			s.pieces[f] = struct{}{}
			continue
		}
		for i := 0; i+minSecretPiece <= len(f); i++ {
			s.pieces[f[i:i+minSecretPiece]] = struct{}{}
		}
	}
	return s
}

// text returns in with every run of bytes that is covered by a piece of the
// token replaced by "<redacted>".
func (s scrubber) text(in string) string {
	if len(s.pieces) == 0 || in == "" {
		return in
	}
	if len(in) > maxScrubbedText {
		in = in[:maxScrubbedText] + "…"
	}
	covered := make([]bool, len(in))
	found := false
	for piece := range s.pieces {
		if len(piece) < minSecretPiece && strings.Contains(in, piece) {
			for i := strings.Index(in, piece); i >= 0; {
				for j := i; j < i+len(piece); j++ {
					covered[j] = true
				}
				found = true
				next := strings.Index(in[i+1:], piece)
				if next < 0 {
					break
				}
				i += 1 + next
			}
		}
	}
	for i := 0; i+minSecretPiece <= len(in); i++ {
		if _, ok := s.pieces[in[i:i+minSecretPiece]]; ok {
			for j := i; j < i+minSecretPiece; j++ {
				covered[j] = true
			}
			found = true
		}
	}
	if !found {
		return in
	}
	var b strings.Builder
	for i := 0; i < len(in); {
		if !covered[i] {
			b.WriteByte(in[i])
			i++
			continue
		}
		b.WriteString("<redacted>")
		for i < len(in) && covered[i] {
			i++
		}
	}
	return b.String()
}

// scrubbedError is an error whose text went through the scrubber. It
// deliberately does not unwrap: the raw error, with whatever the server
// sent, never leaves the client.
type scrubbedError struct{ msg string }

func (e *scrubbedError) Error() string { return e.msg }

func (s scrubber) err(err error) error {
	if err == nil {
		return nil
	}
	return &scrubbedError{msg: s.text(err.Error())}
}
