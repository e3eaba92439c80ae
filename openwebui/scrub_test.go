package openwebui

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestScrubber: every form in which a server can echo the token, whole or
// in part, leaves no 8 characters of it in a row.
func TestScrubber(t *testing.T) {
	const key = "sk-0123456789abcdef0123456789abcdef"
	const odd = "eyJh<b&c>d.ZXhwb3J0ZXI.c2lnbmF0dXJl" // '<', '&', '>' are JSON-escaped by default
	cases := []struct {
		name, token, in, want string
	}{
		{"whole", key, `bad token ` + key, `bad token <redacted>`},
		{"twice", key, key + "/" + key, `<redacted>/<redacted>`},
		{"cut short by a decoder", key, `is "sk-0123456789abcdef01234567…", want an integer`, `is "<redacted>…", want an integer`},
		{"a middle piece", key, `x89abcdef0y`, `x<redacted>y`},
		{"seven characters are no leak", key, `sk-0123 and 89abcde`, `sk-0123 and 89abcde`},
		{"percent-encoded", odd, `/p/eyJh%3Cb%26c%3Ed.ZXhwb3J0ZXI.c2lnbmF0dXJl`, `/p/<redacted>`},
		{"JSON-escaped", odd, `[{"input":"eyJh\u003cb\u0026c\u003ed.ZXhwb3J0ZXI.c2lnbmF0dXJl"}]`, `[{"input":"<redacted>"}]`},
		{"no token: unchanged", "", `anything ` + key, `anything ` + key},
		{"unrelated text unchanged", key, `Internal Server Error`, `Internal Server Error`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newScrubber(tc.token)
			if got := s.text(tc.in); got != tc.want {
				t.Errorf("text(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if got := s.err(errors.New(tc.in)); got.Error() != tc.want {
				t.Errorf("err(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
	if newScrubber(key).err(nil) != nil {
		t.Error("err(nil) is not nil")
	}
	// Huge server text is cut before it is kept.
	if got := newScrubber(key).text(strings.Repeat("x", 10*maxScrubbedText)); len(got) > maxScrubbedText+len("…") {
		t.Errorf("text of %d bytes kept %d", 10*maxScrubbedText, len(got))
	}
}

// A list-shaped detail keeps '<', '>' and '&' as they are, so the scrubber
// sees the token as the server sent it.
func TestParseDetailListIsNotHTMLEscaped(t *testing.T) {
	got := ParseDetail([]byte(`{"detail":[{"msg":"a<b&c>d"}]}`))
	if want := `[{"msg":"a<b&c>d"}]`; got != want {
		t.Errorf("ParseDetail = %q, want %q", got, want)
	}
}

// FuzzScrub: whatever surrounds the token, and however it is cut, no 8
// characters of it in a row survive the scrubber.
func FuzzScrub(f *testing.F) {
	f.Add("sk-0123456789abcdef0123456789abcdef", "bad token ", " here", 0, 35)
	f.Add("eyJh<b&c>d.ZXhwb3J0ZXI.c2lnbmF0dXJl", `{"x":"`, `"}`, 3, 20)
	f.Add("aaaaaaaaaaaa", "aaaa", "aaaaaaa", 0, 12)
	// CI's fuzzing found this: the marker's '>' and seven kept characters
	// looked like eight characters of a token that has a '>' in it.
	f.Add("12345678>AAAAAAA", "0", "AAAAAAA", 0, 8)
	f.Fuzz(func(t *testing.T, token, before, after string, from, to int) {
		if _, err := checkToken(token); err != nil || len(token) < minSecretPiece || len(before)+len(after) > 1000 {
			return
		}
		from, to = clamp(from, len(token)), clamp(to, len(token))
		if from > to {
			from, to = to, from
		}
		in := before + token[from:to] + after
		out := newScrubber(token).text(in)
		if utf8.ValidString(in) && !utf8.ValidString(out) {
			t.Fatalf("text(%q) = %q: not valid UTF-8", in, out)
		}
		// Each run of text between two markers is checked alone: the marker
		// is the scrubber's own text, and a token with '<' or '>' in it would
		// otherwise "leak" through the marker's own characters ("<redacted>"
		// followed by seven characters of the token is no leak).
		for _, kept := range strings.Split(asciiLower(out), "<redacted>") {
			for i := 0; i+minSecretPiece <= len(token); i++ {
				if strings.Contains(kept, asciiLower(token[i:i+minSecretPiece])) {
					t.Fatalf("%q of the token survives in %q", token[i:i+minSecretPiece], out)
				}
			}
		}
	})
}

func clamp(n, hi int) int {
	if n < 0 {
		n = -n
	}
	if hi == 0 {
		return 0
	}
	return n % (hi + 1)
}

// TestScrubberEncodings (issue 19, item 8): the three encodings that got
// through, and the cut on a character boundary (item 7).
func TestScrubberEncodings(t *testing.T) {
	const key = "sk-0123456789abcdef0123456789abcdef"
	every7th := func(s string) string { // JSON-escape every seventh character
		var b strings.Builder
		for i, r := range s {
			if i%7 == 6 {
				fmt.Fprintf(&b, `\u%04x`, r)
			} else {
				b.WriteRune(r)
			}
		}
		return b.String()
	}
	pct := func(s string) string { // percent-encode every byte
		var b strings.Builder
		for i := range len(s) {
			fmt.Fprintf(&b, "%%%02X", s[i])
		}
		return b.String()
	}
	const mixed = "sk-a1b2c3d4e5f6a7b8c9d0e1f2a3b4c5d6" // no 8 digits in a row, which match in any case
	for _, tc := range []struct{ name, key, in string }{
		{"whole token percent-encoded in a Location", key, "redirect to http://x/p/" + pct(key) + " not followed"},
		{"whole key in upper case in a detail", mixed, `HTTP 401 "` + strings.ToUpper(mixed) + `"`},
		{"JSON \\u-escapes in a quoted value (decodeInt's quote)", key, `is "` + every7th(key) + `", want an integer`},
		{"double percent-encoding", mixed, strings.ReplaceAll(pct(mixed), "%", "%25")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			key := tc.key
			out := strings.ToLower(newScrubber(key).text(tc.in))
			for i := 0; i+minSecretPiece <= len(key); i++ {
				if strings.Contains(out, key[i:i+minSecretPiece]) {
					t.Fatalf("%q of the token survives in %q", key[i:i+minSecretPiece], out)
				}
			}
			if !strings.Contains(out, "<redacted>") {
				t.Fatalf("nothing redacted in %q", out)
			}
		})
	}
	// A cut never splits a character: the text stays valid UTF-8.
	for _, in := range []string{strings.Repeat("é", maxScrubbedText), "x" + strings.Repeat("€", maxScrubbedText), "\xff\xfe" + key} {
		if out := newScrubber(key).text(in); !utf8.ValidString(out) || len(out) > maxScrubbedText+len("…") {
			t.Errorf("text(%d bytes) = %d bytes, valid UTF-8 %v", len(in), len(out), utf8.ValidString(out))
		}
	}
}
