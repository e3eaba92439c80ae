package openwebui

import (
	"net/url"
	"strings"
	"unicode/utf16"
	"unicode/utf8"
)

// minSecretPiece is the shortest piece of the token that is scrubbed. A
// server may echo the token whole, cut short (a decode error quotes 40
// characters of a value), escaped (JSON, percent-encoding), in another case
// or inside other text; any 8 characters of it in a row are treated as a leak.
const minSecretPiece = 8

// maxScrubbedText bounds the server-derived text that is scrubbed and kept;
// more is never shown anyway.
const maxScrubbedText = 4096

// decodePasses bounds how often escapes are decoded (double encoding).
const decodePasses = 3

// scrubber removes every piece of one token from text. It is the one place
// through which all server-derived text passes on its way out of the client:
// into an error (and from there into a 503 body, a log line or a gRPC
// status), a log line, or a label value. It decodes percent- and
// \uXXXX-escapes first and matches without regard to ASCII case, so that
// neither an encoding nor upper case hides the token; what leaves it is
// the decoded text, valid UTF-8, cut on a character boundary.
type scrubber struct {
	pieces map[string]struct{} // every minSecretPiece-long piece of the token, lower case
}

func newScrubber(token string) scrubber {
	s := scrubber{pieces: map[string]struct{}{}}
	if token == "" {
		return s
	}
	// The decoded token, and the escaped forms in case more layers of
	// escaping than decodePasses were used.
	forms := []string{token, url.QueryEscape(token), url.PathEscape(token)}
	for _, f := range forms {
		f = asciiLower(f)
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

// text returns in, decoded and cut short, with every run of bytes that is
// covered by a piece of the token replaced by "<redacted>".
func (s scrubber) text(in string) string {
	if in == "" {
		return in
	}
	// Bound the work before decoding; an escape is at most 6 bytes a byte.
	in = cutRunes(in, 6*maxScrubbedText, "")
	for range decodePasses {
		out := decodeEscapes(in)
		if out == in {
			break
		}
		in = out
	}
	in = cutRunes(strings.ToValidUTF8(in, "\uFFFD"), maxScrubbedText, "…")
	if len(s.pieces) == 0 {
		return in
	}
	lower := asciiLower(in)
	covered := make([]bool, len(in))
	found := false
	for piece := range s.pieces {
		if len(piece) < minSecretPiece && strings.Contains(lower, piece) {
			for i := strings.Index(lower, piece); i >= 0; {
				for j := i; j < i+len(piece); j++ {
					covered[j] = true
				}
				found = true
				next := strings.Index(lower[i+1:], piece)
				if next < 0 {
					break
				}
				i += 1 + next
			}
		}
	}
	for i := 0; i+minSecretPiece <= len(lower); i++ {
		if _, ok := s.pieces[lower[i:i+minSecretPiece]]; ok {
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
	// A piece may end inside a multi-byte character (the token is ASCII,
	// the text need not be): keep the output valid UTF-8.
	return strings.ToValidUTF8(b.String(), "\uFFFD")
}

// cutRunes cuts s to at most n bytes on a UTF-8 character boundary and
// appends mark if it cut anything: a label value cut inside a character is
// invalid, and client_golang refuses it.
func cutRunes(s string, n int, mark string) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + mark
}

// asciiLower lower-cases ASCII letters only, so that byte offsets stay
// those of the original text.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// decodeEscapes decodes one layer of %XX (percent-encoding) and \uXXXX
// (JSON, surrogate pairs included); everything else is kept as it is.
func decodeEscapes(s string) string {
	if !strings.ContainsAny(s, "%\\") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		switch {
		case s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]):
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 3
		case s[i] == '\\' && i+5 < len(s) && s[i+1] == 'u' && allHex(s[i+2:i+6]):
			r := rune(hex4(s[i+2 : i+6]))
			i += 6
			if utf16.IsSurrogate(r) && i+5 < len(s) && s[i] == '\\' && s[i+1] == 'u' && allHex(s[i+2:i+6]) {
				if pair := utf16.DecodeRune(r, rune(hex4(s[i+2:i+6]))); pair != utf8.RuneError {
					r = pair
					i += 6
				}
			}
			b.WriteRune(r)
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return b.String()
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func allHex(s string) bool {
	for i := range len(s) {
		if !isHex(s[i]) {
			return false
		}
	}
	return true
}

func unhex(c byte) byte {
	switch {
	case c >= 'a':
		return c - 'a' + 10
	case c >= 'A':
		return c - 'A' + 10
	}
	return c - '0'
}

func hex4(s string) int {
	n := 0
	for i := range 4 {
		n = n<<4 | int(unhex(s[i]))
	}
	return n
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
