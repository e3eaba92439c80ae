package gate

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// Every request to a pool passes the gate's bounded peek (model and first
// message, to choose a replica), which puts what it read back in front of
// the body: the replica gets the client's body byte for byte, framed as the
// client framed it.
func TestPoolBodyByteForByte(t *testing.T) {
	big := `{"model":"tiny:1b","messages":[{"role":"user","content":"` + strings.Repeat("y", 3*peekLimit) + `"}]}`
	late := `{"options":{"stop":["` + strings.Repeat("z", 2*peekLimit) + `"]},"model":"tiny:1b","prompt":"hi"}`
	binary := string(bytes.Repeat([]byte{0, 0xff, '{', '"', 0x80, '\n'}, peekLimit/2))
	for _, tc := range []struct {
		name    string
		body    string
		chunked bool // no Content-Length: Transfer-Encoding: chunked
	}{
		{"a chat", `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}],"stream":false}`, false},
		{"a chat, chunked", `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}],"stream":false}`, true},
		{"empty", ``, false},
		{"empty, chunked", ``, true},
		{"not JSON", binary, false},
		{"not JSON, chunked", binary, true},
		{"larger than the peek", big, false},
		{"larger than the peek, chunked", big, true},
		{"its model past the peek", late, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var mu sync.Mutex
			var got []string
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					_, _ = io.WriteString(w, `{"models":[{"name":"tiny:1b"}],"version":"0.17.4"}`)
					return
				}
				b, err := io.ReadAll(r.Body)
				mu.Lock()
				got = append(got, fmt.Sprintf("body %t (%d bytes), err %v, Content-Length %d, chunked %t",
					string(b) == tc.body, len(b), err, r.ContentLength, len(r.TransferEncoding) > 0))
				mu.Unlock()
				_, _ = io.WriteString(w, `{"done":true}`)
			})
			n := newReplicaNet(t)
			n.add("r1.test:11434", h)
			n.add("r2.test:11434", h)
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()})
			waitReplicas(t, g, "pool", 2)

			var body io.Reader = strings.NewReader(tc.body)
			if tc.chunked {
				body = struct{ io.Reader }{body} // an unknown length: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, g.url+"/pool/api/chat", body)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			answer, _ := io.ReadAll(res.Body)
			res.Body.Close()
			if res.StatusCode != http.StatusOK || string(answer) != `{"done":true}` {
				t.Fatalf("HTTP %d %q, want 200 and the replica's answer", res.StatusCode, answer)
			}
			length := int64(len(tc.body))
			if tc.chunked {
				length = -1
			}
			want := fmt.Sprintf("body true (%d bytes), err <nil>, Content-Length %d, chunked %t", len(tc.body), length, tc.chunked)
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 || got[0] != want {
				t.Errorf("the replicas received %q, want once %q", got, want)
			}
		})
	}
}

// A client may keep its body open until the answer comes (full duplex): the
// peek reads no further than the end of the JSON object, so a replica that
// answers once it has the object (as Ollama's JSON binding does) answers
// through the gate too.
func TestPoolPeekWaitsForNoMoreThanTheObject(t *testing.T) {
	for _, object := range []string{
		`{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}]}`,
		`{"messages":[{"role":"system","content":"be brief"}],"model":"tiny:1b"}`,
		`{"model":"tiny:1b","stream":true}`,
	} {
		t.Run(object, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Method != http.MethodPost {
					_, _ = io.WriteString(w, `{"models":[{"name":"tiny:1b"}],"version":"0.17.4"}`)
					return
				}
				// Answering before the body ends needs full duplex (Go's server
				// would otherwise read the rest of the body first).
				_ = http.NewResponseController(w).EnableFullDuplex()
				var v map[string]any
				if err := json.NewDecoder(r.Body).Decode(&v); err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				_, _ = io.WriteString(w, `{"done":true}`+"\n")
				w.(http.Flusher).Flush()
				_, _ = io.Copy(io.Discard, r.Body)
			})
			n := newReplicaNet(t)
			n.add("r1.test:11434", h)
			n.add("r2.test:11434", h)
			g := startGate(t, Config{Backends: poolConfig(t, "pool=http://r1.test:11434", "pool=http://r2.test:11434"), Transport: n.transport()})
			waitReplicas(t, g, "pool", 2)

			pr, pw := io.Pipe()
			defer pw.Close()
			go func() { _, _ = io.WriteString(pw, object) }() // and the body stays open
			req, err := http.NewRequest(http.MethodPost, g.url+"/pool/api/chat", pr)
			if err != nil {
				t.Fatal(err)
			}
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("POST: %v", err)
			}
			defer res.Body.Close()
			line, err := bufio.NewReader(res.Body).ReadString('\n')
			if res.StatusCode != http.StatusOK || line != `{"done":true}`+"\n" {
				t.Errorf("HTTP %d %q (%v) with the body still open, want 200 and the replica's answer", res.StatusCode, line, err)
			}
			pw.Close()
		})
	}
}
