package gate

import (
	"io"
	"unicode/utf16"
	"unicode/utf8"
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
// put back in front of the rest), and whether that is the whole body (its
// end was read, or size of it). A body that is not JSON, or puts them later,
// yields what was found so far; it still passes through. A read error is
// left to the rest of the body to give again. size is the body's length when
// known (else -1): the buffer is sized to it, so that a small body is read
// in one go.
func peekBody(body io.Reader, size int64) (p peeked, read []byte, whole bool) {
	n := 512
	if size > 0 {
		n = int(min(size, peekLimit))
	}
	s := &peekScanner{r: body, buf: make([]byte, 0, n)}
	p = s.peek()
	return p, s.buf, s.eof || (size >= 0 && int64(len(s.buf)) == size)
}

// peekBytes is peekBody for a body held in memory.
func peekBytes(data []byte) peeked {
	s := &peekScanner{buf: data[:min(len(data), peekLimit)]}
	return s.peek()
}

// peekScanner reads the top-level JSON object of a body just far enough to
// find the model and the first user message. It is a hand-written scanner
// (encoding/json's token decoder was a fifth of the gate's own cost with a
// pool): it allocates the buffer and the two strings it returns, and gives
// what encoding/json would decode into them for every valid body
// (FuzzPeekMatchesEncodingJSON): escapes, invalid UTF-8 as U+FFFD, null for
// a string, field names of a message matched regardless of case, and a
// message that does not decode ends the walk as it would.
type peekScanner struct {
	r     io.Reader // nil: buf is all there is
	buf   []byte    // what was read of the body so far
	pos   int
	ended bool // r gave an error or io.EOF, or peekLimit was reached
	eof   bool // r gave io.EOF: buf is the whole body
}

// more reads more of the body into buf; false when there is no more.
func (s *peekScanner) more() bool {
	if s.r == nil || s.ended {
		return false
	}
	if len(s.buf) >= peekLimit {
		s.ended = true
		return false
	}
	if len(s.buf) == cap(s.buf) {
		grown := make([]byte, len(s.buf), min(2*cap(s.buf)+512, peekLimit))
		copy(grown, s.buf)
		s.buf = grown
	}
	for range 100 { // a reader that keeps giving 0 bytes and no error is taken as ended
		n, err := s.r.Read(s.buf[len(s.buf):cap(s.buf)])
		s.buf = s.buf[:len(s.buf)+n]
		if err != nil {
			s.ended, s.eof = true, err == io.EOF //nolint:errorlint // io.EOF itself, as Read returns it
		}
		if n > 0 || err != nil {
			return n > 0
		}
	}
	s.ended = true
	return false
}

// next returns the byte at pos without taking it; false at the end.
func (s *peekScanner) next() (byte, bool) {
	for s.pos >= len(s.buf) {
		if !s.more() {
			return 0, false
		}
	}
	return s.buf[s.pos], true
}

// token skips white space and returns the next byte without taking it.
func (s *peekScanner) token() (byte, bool) {
	for {
		c, ok := s.next()
		if !ok {
			return 0, false
		}
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return c, true
		}
		s.pos++
	}
}

// take skips white space and takes the byte c; false if another comes.
func (s *peekScanner) take(c byte) bool {
	if t, ok := s.token(); !ok || t != c {
		return false
	}
	s.pos++
	return true
}

// peek walks the top-level object member by member and stops as soon as it
// has both fields, or at the first thing it cannot read (what it found is
// kept).
func (s *peekScanner) peek() peeked {
	var p peeked
	haveUser := false
	for more, ok := s.open('{'); more && ok; more, ok = s.after('}') {
		key, ok := s.key()
		if !ok {
			break
		}
		switch string(key) {
		case "model", "name":
			v, _, ok := s.str() // null: "", as it decodes into a new string
			if !ok {
				return p
			}
			if string(key) == "model" || p.Model == "" {
				p.Model = string(v)
			}
		case "prompt":
			v, null, ok := s.str()
			if !ok {
				return p
			}
			if !null { // null leaves a string as it was
				p.FirstUser = string(v)
			}
			haveUser = true
		case "messages":
			first, found, ok := s.firstUser(haveUser, p.Model != "")
			if found {
				p.FirstUser, haveUser = first, true
			}
			if !ok || (found && p.Model != "") {
				return p
			}
		default:
			if !s.skip(0) {
				return p
			}
		}
		if p.Model != "" && haveUser {
			return p
		}
	}
	return p
}

// open takes the opening c ('{' or '[') of an object or array and says
// whether a member or element follows (more) or the closing one was taken.
func (s *peekScanner) open(c byte) (more, ok bool) {
	if !s.take(c) {
		return false, false
	}
	closing := byte('}')
	if c == '[' {
		closing = ']'
	}
	return !s.take(closing), true
}

// after takes what follows a member or element: a comma (more follows) or
// closing; ok is false for anything else.
func (s *peekScanner) after(closing byte) (more, ok bool) {
	c, ok := s.token()
	if !ok || (c != ',' && c != closing) {
		return false, false
	}
	s.pos++
	return c == ',', true
}

// key takes a member's name and its colon.
func (s *peekScanner) key() ([]byte, bool) {
	k, null, ok := s.str()
	return k, ok && !null && s.take(':')
}

// firstUser walks the array of chat messages at pos for the text of its
// first message of role "user" (unless haveUser: then none is wanted);
// with haveModel it stops there (the walk is done), else it reads the array
// to its end. ok is false where encoding/json would fail to decode a message
// (not an object or null, a role that is not a string) or the array does
// not read.
func (s *peekScanner) firstUser(haveUser, haveModel bool) (text string, found, ok bool) {
	more, ok := s.open('[')
	for ; more && ok; more, ok = s.after(']') {
		var role []byte
		content := []byte(nil) // the raw JSON of the last "content"
		if c, _ := s.token(); c == 'n' {
			if !s.literal("null") {
				return text, found, false
			}
		} else {
			more, ok := s.open('{')
			for ; more; more, ok = s.after('}') {
				key, ok := s.key()
				if !ok {
					return text, found, false
				}
				switch {
				case equalFold(key, "role"):
					v, null, ok := s.str()
					if !ok {
						return text, found, false
					}
					if !null { // null leaves a string as it was
						role = v
					}
				case equalFold(key, "content"):
					if _, ok := s.token(); !ok {
						return text, found, false
					}
					start := s.pos
					if !s.skip(0) {
						return text, found, false
					}
					content = s.buf[start:s.pos]
				default:
					if !s.skip(0) {
						return text, found, false
					}
				}
			}
			if !ok {
				return text, found, false
			}
		}
		if string(role) == "user" && !haveUser {
			text, found, haveUser = contentText(content), true, true
			if haveModel {
				return text, found, true
			}
		}
	}
	return text, found, ok
}

// equalFold is how encoding/json matches a member to a field (for names
// without k or s, which fold beyond ASCII: ASCII case).
func equalFold(key []byte, name string) bool {
	if len(key) != len(name) {
		return false
	}
	for i := range len(name) {
		c := key[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != name[i] {
			return false
		}
	}
	return true
}

// contentText is a message's text: Ollama's string, or the text parts of
// OpenAI's array of parts (its raw JSON when it is neither, or a part does
// not decode); raw is one complete JSON value, or nil.
func contentText(raw []byte) string {
	s := &peekScanner{buf: raw}
	if c, _ := s.token(); c == '"' || c == 'n' || len(raw) == 0 {
		v, _, _ := s.str()
		return string(v)
	}
	var text []byte
	more, _ := s.open('[')
	if !more {
		if len(raw) > 0 && raw[0] == '[' {
			return "" // []
		}
		return string(raw)
	}
	for ; more; more, _ = s.after(']') {
		if c, _ := s.token(); c == 'n' {
			s.literal("null")
			continue
		}
		var typ, partText []byte
		member, ok := s.open('{')
		for ; member && ok; member, ok = s.after('}') {
			key, _ := s.key()
			var v []byte
			var null bool
			switch {
			case equalFold(key, "type"):
				v, null, ok = s.str()
				if !null {
					typ = v
				}
			case equalFold(key, "text"):
				v, null, ok = s.str()
				if !null {
					partText = v
				}
			default:
				ok = s.skip(0)
			}
			if !ok {
				break
			}
		}
		if !ok {
			return string(raw) // a part that does not decode: encoding/json failed on the whole
		}
		if string(typ) == "text" {
			text = append(text, partText...)
		}
	}
	return string(text)
}

// maxDepth is encoding/json's bound on nesting: deeper is not JSON to it.
const maxDepth = 10000

// skip takes one JSON value of any kind at pos, checking its syntax as
// encoding/json does; depth is how deep pos is nested.
func (s *peekScanner) skip(depth int) bool {
	c, ok := s.token()
	if !ok {
		return false
	}
	switch {
	case c == '"':
		_, _, ok := s.str()
		return ok
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return false
		}
		closing := byte('}')
		if c == '[' {
			closing = ']'
		}
		more, ok := s.open(c)
		for ; more; more, ok = s.after(closing) {
			if c == '{' {
				if _, ok := s.key(); !ok {
					return false
				}
			}
			if !s.skip(depth + 1) {
				return false
			}
		}
		return ok
	case c == 't':
		return s.literal("true")
	case c == 'f':
		return s.literal("false")
	case c == 'n':
		return s.literal("null")
	case c == '-' || ('0' <= c && c <= '9'):
		return s.number()
	}
	return false
}

// literal takes word (true, false, null) at pos.
func (s *peekScanner) literal(word string) bool {
	for i := 0; i < len(word); i++ {
		if c, ok := s.next(); !ok || c != word[i] {
			return false
		}
		s.pos++
	}
	return true
}

// number takes a JSON number at pos: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *peekScanner) number() bool {
	c, _ := s.next()
	if c == '-' {
		s.pos++
		if c, _ = s.next(); c < '0' || c > '9' {
			return false
		}
	}
	s.pos++
	if c != '0' {
		s.digits()
	}
	if c, _ := s.next(); c == '.' {
		s.pos++
		if s.digits() == 0 {
			return false
		}
	}
	if c, _ := s.next(); c == 'e' || c == 'E' {
		s.pos++
		if c, _ := s.next(); c == '+' || c == '-' {
			s.pos++
		}
		if s.digits() == 0 {
			return false
		}
	}
	return true
}

func (s *peekScanner) digits() int {
	n := 0
	for {
		c, ok := s.next()
		if !ok || c < '0' || c > '9' {
			return n
		}
		s.pos++
		n++
	}
}

// str takes a JSON string at pos and returns its value (escapes decoded,
// invalid UTF-8 and lone surrogates as U+FFFD, as encoding/json does), or
// null (then nil, true). ok is false for anything else. The value is a part
// of buf when the string has no escapes.
func (s *peekScanner) str() (v []byte, null, ok bool) {
	c, ok := s.token()
	if !ok {
		return nil, false, false
	}
	if c == 'n' {
		return nil, true, s.literal("null")
	}
	if c != '"' {
		return nil, false, false
	}
	s.pos++
	start, plain := s.pos, true
	for {
		for s.pos < len(s.buf) && s.buf[s.pos] >= 0x20 && s.buf[s.pos] != '"' && s.buf[s.pos] != '\\' {
			s.pos++ // the plain bytes already read, without a call each
		}
		c, ok := s.next()
		if !ok || c < 0x20 {
			return nil, false, false
		}
		switch c {
		case '"':
			raw := s.buf[start:s.pos]
			s.pos++
			if plain && utf8.Valid(raw) {
				return raw, false, true
			}
			return unquote(raw), false, true
		case '\\':
			plain = false
			s.pos++
			e, ok := s.next()
			if !ok {
				return nil, false, false
			}
			switch e {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.pos++
			case 'u':
				s.pos++
				for range 4 {
					h, ok := s.next()
					if !ok || unhex(h) < 0 {
						return nil, false, false
					}
					s.pos++
				}
			default:
				return nil, false, false
			}
		default:
			s.pos++
		}
	}
}

// unquote decodes the inside of a JSON string whose syntax was checked.
func unquote(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		switch {
		case c == '\\':
			e := raw[i+1]
			i += 2
			switch e {
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r := hex4(raw[i:])
				i += 4
				if utf16.IsSurrogate(r) {
					r2 := rune(-1)
					if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
						r2 = hex4(raw[i+2:])
					}
					if dec := utf16.DecodeRune(r, r2); dec != utf8.RuneError {
						r = dec
						i += 6
					} else {
						r = utf8.RuneError
					}
				}
				out = utf8.AppendRune(out, r)
			default: // " \ /
				out = append(out, e)
			}
		case c < utf8.RuneSelf:
			out = append(out, c)
			i++
		default:
			r, size := utf8.DecodeRune(raw[i:])
			out = utf8.AppendRune(out, r) // RuneError for invalid bytes, one at a time
			i += size
		}
	}
	return out
}

func hex4(b []byte) rune {
	var r rune
	for _, c := range b[:4] {
		r = r<<4 | unhex(c)
	}
	return r
}

func unhex(c byte) rune {
	switch {
	case '0' <= c && c <= '9':
		return rune(c - '0')
	case 'a' <= c && c <= 'f':
		return rune(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return rune(c-'A') + 10
	}
	return -1
}
