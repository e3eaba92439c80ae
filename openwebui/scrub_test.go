package openwebui

import (
	"errors"
	"strings"
	"testing"
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
	f.Fuzz(func(t *testing.T, token, before, after string, from, to int) {
		if _, err := checkToken(token); err != nil || len(token) < minSecretPiece || len(before)+len(after) > 1000 {
			return
		}
		from, to = clamp(from, len(token)), clamp(to, len(token))
		if from > to {
			from, to = to, from
		}
		out := newScrubber(token).text(before + token[from:to] + after)
		for i := 0; i+minSecretPiece <= len(token); i++ {
			if strings.Contains(out, token[i:i+minSecretPiece]) {
				t.Fatalf("%q of the token survives in %q", token[i:i+minSecretPiece], out)
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
