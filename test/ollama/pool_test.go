package ollama

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// poolStatus is the pool's part of /_gate/status.
type poolStatus struct {
	State    string
	Replicas []struct {
		ID       string `json:"id"`
		State    string `json:"state"`
		Draining bool   `json:"draining"`
		Requests int    `json:"requests"`
		Refused  int    `json:"refused"`
	} `json:"replicas"`
}

func (g *gateServer) pool(t *testing.T) poolStatus {
	t.Helper()
	r := get(t, g.url()+"/_gate/status")
	var s struct {
		Backends []poolStatus `json:"backends"`
	}
	if err := json.Unmarshal([]byte(r.body), &s); err != nil || len(s.Backends) != 1 {
		t.Fatalf("GET /_gate/status: %v %s", err, r)
	}
	return s.Backends[0]
}

func (p poolStatus) requests() map[string]int {
	m := map[string]int{}
	for _, r := range p.Replicas {
		m[r.ID] = r.Requests
	}
	return m
}

// send is a request with headers, from a chosen local address (a drain must
// come from the replica's own).
func send(method, url, body, from string, hdr map[string]string) (response, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return response{}, err
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	d := &net.Dialer{}
	if from != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(from)}
	}
	c := &http.Client{Transport: &http.Transport{DialContext: d.DialContext}}
	res, err := c.Do(req)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	return response{res.StatusCode, res.Header, string(b)}, err
}

// Two real `ollama serve`, on 127.0.0.1 and 127.0.0.2, as one pool behind the
// gate (issue 25): the turns of a chat stay on one replica; with one stopped,
// its requests go to the other; a drained replica gets nothing more and
// stops without failing a request.
func TestGatePoolOfTwoOllamas(t *testing.T) {
	a := &ollamaServer{t: t, bin: ollamaBinary(t), addr: heldAddr(t), dir: t.TempDir(), name: "ollama-a"}
	b := &ollamaServer{t: t, bin: ollamaBinary(t), addr: heldAddrOn(t, [4]byte{127, 0, 0, 2}), dir: t.TempDir(), name: "ollama-b"}
	a.start()
	b.start()
	model := TinyModel{Answer: []string{"▁hello", "▁world"}}
	for _, o := range []*ollamaServer{a, b} {
		createModel(t, o.url(), "tiny", model)
	}
	g := startGate(t, "pool="+a.url(), "pool="+b.url())
	eventually(t, 20*time.Second, "both replicas up", func() (bool, string) {
		p := g.pool(t)
		up := 0
		for _, r := range p.Replicas {
			if r.State == "up" {
				up++
			}
		}
		return up == 2, fmt.Sprint(p)
	})
	if r := get(t, g.url()+"/pool/api/tags"); r.status != http.StatusOK || !strings.Contains(r.body, `"tiny:latest"`) ||
		strings.Count(r.body, `"name":"tiny:latest"`) != 1 {
		t.Errorf("GET /pool/api/tags: %s, want tiny:latest once (the union of both lists)", r)
	}
	chatTurn := func(chat string, turn int) response {
		t.Helper()
		msgs := `{"role":"user","content":"Say it"}`
		for i := 0; i < turn; i++ {
			msgs += `,{"role":"assistant","content":"hello world"},{"role":"user","content":"again"}`
		}
		body := fmt.Sprintf(`{"model":"tiny","messages":[%s],"stream":true,"options":{"num_predict":8,"temperature":0,"seed":42}}`, msgs)
		r, err := send(http.MethodPost, g.url()+"/pool/api/chat", body, "", map[string]string{"X-OpenWebUI-Chat-Id": chat})
		if err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"done":true`) {
			t.Fatalf("chat %s turn %d: %v %s", chat, turn, err, r)
		}
		return r
	}

	t.Run("the turns of a chat on one replica", func(t *testing.T) {
		for _, chat := range []string{"chat-1", "chat-2", "chat-3", "chat-4"} {
			before := g.pool(t).requests()
			for turn := range 3 {
				chatTurn(chat, turn)
			}
			after := g.pool(t).requests()
			var on []string
			for id, n := range after {
				if n > before[id] {
					on = append(on, fmt.Sprintf("%s+%d", id, n-before[id]))
				}
			}
			if len(on) != 1 {
				t.Errorf("%s: three turns went to %v, want one replica", chat, on)
			}
		}
	})

	t.Run("one stopped: the other answers", func(t *testing.T) {
		// Stop the replica the gate prefers (it has the model loaded and has
		// served the chats so far), so that the chats below must fail over.
		before := g.pool(t).requests()
		stopped, other := a, b
		if before[strings.TrimPrefix(b.url(), "http://")] > before[strings.TrimPrefix(a.url(), "http://")] {
			stopped, other = b, a
		}
		stoppedID, otherID := strings.TrimPrefix(stopped.url(), "http://"), strings.TrimPrefix(other.url(), "http://")
		stopped.stop()
		for i := range 6 {
			chatTurn(fmt.Sprintf("stopped-%d", i), 0) // each answered, or the test fails here
		}
		if got := g.pool(t).requests()[otherID] - before[otherID]; got != 6 {
			t.Errorf("with %s stopped, %s answered %d of the 6 chats, want all", stoppedID, otherID, got)
		}
		// The gate saw the refusal (a chat tried it first) or its probe did.
		eventually(t, 20*time.Second, stoppedID+" not up once its Ollama stopped", func() (bool, string) {
			for _, r := range g.pool(t).Replicas {
				if r.ID == stoppedID {
					return r.State != "up", fmt.Sprint(r)
				}
			}
			return false, "no replica " + stoppedID
		})
		stopped.start()
		eventually(t, 20*time.Second, stoppedID+" up again", func() (bool, string) {
			for _, r := range g.pool(t).Replicas {
				if r.ID == stoppedID {
					return r.State == "up", fmt.Sprint(r)
				}
			}
			return false, "no replica " + stoppedID
		})
	})

	t.Run("drained, then stopped: no request fails", func(t *testing.T) {
		id := strings.TrimPrefix(b.url(), "http://")
		r, err := send(http.MethodPost, g.url()+"/_gate/drain?replica="+id, "", "127.0.0.2", nil)
		if err != nil || r.status != http.StatusOK || !strings.Contains(r.body, `"drained":true`) {
			t.Fatalf("drain %s: %v %s", id, err, r)
		}
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				chatTurn(fmt.Sprintf("drain-%d", i), 1)
			}()
		}
		b.stop() // SIGTERM: Ollama closes at once; nothing of the pool was on it
		wg.Wait()
		before := 0
		for _, r := range g.pool(t).Replicas {
			if r.ID == id {
				before = r.Requests
				if !r.Draining {
					t.Errorf("replica %s not draining: %+v", id, r)
				}
			}
		}
		chatTurn("after", 0)
		for _, r := range g.pool(t).Replicas {
			if r.ID == id && r.Requests != before {
				t.Errorf("a drained replica got a request: %+v", r)
			}
		}
	})
}
