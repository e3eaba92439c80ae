package gate

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestPeekBody(t *testing.T) {
	long := strings.Repeat("x", peekLimit)
	tests := []struct {
		name string
		body string
		want peeked
	}{
		{"Ollama chat", `{"model":"llama3.2","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hi"},{"role":"assistant","content":"hello"}],"stream":true}`,
			peeked{Model: "llama3.2", FirstUser: "hi"}},
		{"model after the messages", `{"messages":[{"role":"user","content":"hi"},{"role":"user","content":"again"}],"options":{"num_ctx":4096},"model":"m"}`,
			peeked{Model: "m", FirstUser: "hi"}},
		{"OpenAI parts", `{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:"}},{"type":"text","text":"what is this"}]}]}`,
			peeked{Model: "m", FirstUser: "what is this"}},
		{"generate's prompt", `{"model":"m","prompt":"why is the sky blue"}`, peeked{Model: "m", FirstUser: "why is the sky blue"}},
		{"/api/show's old name", `{"name":"m"}`, peeked{Model: "m"}},
		{"model wins over name", `{"name":"n","model":"m"}`, peeked{Model: "m"}},
		{"no user message", `{"model":"m","messages":[{"role":"system","content":"s"}]}`, peeked{Model: "m"}},
		{"empty body", ``, peeked{}},
		{"not JSON", `model=m&prompt=p`, peeked{}},
		{"an array", `[{"model":"m"}]`, peeked{}},
		{"a wrong type", `{"model":3,"prompt":"p"}`, peeked{}},
		{"beyond the bound", `{"options":{"stop":["` + long + `"]},"model":"m"}`, peeked{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := strings.NewReader(tt.body)
			p, kept, whole := peekBody(src, int64(len(tt.body)))
			replay := io.MultiReader(bytes.NewReader(kept), src)
			if p != tt.want {
				t.Errorf("peeked %+v, want %+v", p, tt.want)
			}
			if wantWhole := len(tt.body) <= peekLimit; whole != wantWhole || whole && len(kept) != len(tt.body) {
				t.Errorf("whole %v with %d of %d bytes read; want %v (a body within the bound is read in one go)", whole, len(kept), len(tt.body), wantWhole)
			}
			got, err := io.ReadAll(replay)
			if err != nil || string(got) != tt.body {
				t.Errorf("replay: %d bytes, err %v; want the whole body (%d bytes)", len(got), err, len(tt.body))
			}
			if p := peekBytes([]byte(tt.body)); p != tt.want {
				t.Errorf("peekBytes: %+v, want %+v", p, tt.want)
			}
		})
	}
}

// A body streamed one byte at a time is parsed the same, and the rest of a
// large body is not read before the choice.
func TestPeekBodyReadsOnlyWhatItNeeds(t *testing.T) {
	head := `{"model":"m","messages":[{"role":"user","content":"hi"}`
	body := head + `,{"role":"user","content":"` + strings.Repeat("y", 1<<20) + `"}]}`
	src := strings.NewReader(body)
	p, kept, whole := peekBody(iotest.OneByteReader(src), -1)
	replay := io.MultiReader(bytes.NewReader(kept), src)
	if p != (peeked{Model: "m", FirstUser: "hi"}) || whole {
		t.Errorf("peeked %+v, whole %v; want not whole", p, whole)
	}
	if read := len(body) - src.Len(); read > len(head)+1 {
		t.Errorf("read %d bytes before choosing, want at most %d", read, len(head)+1)
	}
	got, _ := io.ReadAll(replay)
	if string(got) != body {
		t.Errorf("replay differs from the body (%d of %d bytes)", len(got), len(body))
	}
}

// A client whose body fails mid-way: what came is kept, and the rest (the
// client's body) gives the error again.
func TestPeekBodyReadError(t *testing.T) {
	boom := errors.New("client went away")
	rest := io.MultiReader(strings.NewReader(`{"model":`), iotest.ErrReader(boom))
	_, kept, whole := peekBody(rest, -1)
	got, err := io.ReadAll(io.MultiReader(bytes.NewReader(kept), rest))
	if whole {
		t.Error("a body that failed was taken as whole")
	}
	if string(got) != `{"model":` || !errors.Is(err, boom) {
		t.Errorf("replay: %q, %v; want the 9 bytes, then %v", got, err, boom)
	}
}
