package ollama

import (
	"bufio"
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
	Replicas []replicaStatus `json:"replicas"`
}

type replicaStatus struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Draining bool   `json:"draining"`
	Requests int    `json:"requests"`
	Refused  int    `json:"refused"`
	AtOnce   int    `json:"answers_at_once_seen"`
}

// waitReplica waits until the gate reports replica id as ok says.
func (g *gateServer) waitReplica(t *testing.T, timeout time.Duration, id, what string, ok func(replicaStatus) bool) {
	t.Helper()
	eventually(t, timeout, id+" "+what, func() (bool, string) {
		for _, r := range g.pool(t).Replicas {
			if r.ID == id {
				return ok(r), fmt.Sprint(r)
			}
		}
		return false, "no replica " + id
	})
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
		createModel(t, o.url(), "loop", TinyModel{Answer: model.Answer, Loop: true})
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
		g.waitReplica(t, 20*time.Second, stoppedID, "not up once its Ollama stopped", func(r replicaStatus) bool { return r.State != "up" })
		stopped.start()
		g.waitReplica(t, 20*time.Second, stoppedID, "up again", func(r replicaStatus) bool { return r.State == "up" })
	})

	t.Run("a stream runs to its end while its replica is drained, then stopped", func(t *testing.T) {
		// What the kubelet does at scale-in: the preStop hook drains the
		// replica, and SIGTERM follows as soon as the hook returns. Ollama
		// closes its server at once on SIGTERM, so a drain that returned
		// before the stream ended would cut it.
		const tokens = 300 // streamed, about 5 s on this machine
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		body := fmt.Sprintf(`{"model":"loop","messages":[{"role":"user","content":"Go on"}],"stream":true,"options":{"num_predict":%d,"temperature":0,"seed":42}}`, tokens)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, g.url()+"/pool/api/chat", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("X-OpenWebUI-Chat-Id", "long")
		before := g.pool(t).requests()
		res, err := http.DefaultClient.Do(req)
		if err != nil || res.StatusCode != http.StatusOK {
			t.Fatalf("the long chat: %v %v", err, res)
		}
		defer res.Body.Close()
		stream := bufio.NewReader(res.Body)
		if _, err := stream.ReadBytes('\n'); err != nil {
			t.Fatalf("the long chat's first chunk: %v", err)
		}
		var on *ollamaServer
		for _, o := range []*ollamaServer{a, b} {
			if id := strings.TrimPrefix(o.url(), "http://"); g.pool(t).requests()[id] > before[id] {
				on = o
			}
		}
		if on == nil {
			t.Fatal("the long chat is on no replica the gate counts")
		}
		id := strings.TrimPrefix(on.url(), "http://")
		host, _, _ := net.SplitHostPort(id)
		type drainEnd struct {
			r   response
			err error
			at  time.Time
		}
		drained := make(chan drainEnd, 1)
		drainSent := time.Now()
		go func() {
			r, err := send(http.MethodPost, g.url()+"/_gate/drain?replica="+id, "", host, nil)
			at := time.Now()
			on.stop() // the hook returned: SIGTERM
			drained <- drainEnd{r, err, at}
		}()
		rest, err := io.ReadAll(stream)
		ended := time.Now()
		d := <-drained
		if d.err != nil || d.r.status != http.StatusOK || !strings.Contains(d.r.body, `"drained":true`) {
			t.Fatalf("drain %s: %v %s (the stream ended %s after the drain was sent: %v; the gate: %s)", id, d.err, d.r,
				ended.Sub(drainSent).Round(time.Millisecond), err, get(t, g.url()+"/_gate/status").body)
		}
		if !ended.After(drainSent) {
			t.Fatalf("the stream ended before the drain was sent: the test proves nothing (raise tokens)")
		}
		lines := strings.Split(strings.TrimSpace(string(rest)), "\n")
		var last struct {
			Done      bool `json:"done"`
			EvalCount int  `json:"eval_count"`
		}
		if err != nil || json.Unmarshal([]byte(lines[len(lines)-1]), &last) != nil || !last.Done || last.EvalCount != tokens {
			t.Fatalf("the stream on %s was cut: read error %v, %d more chunks, last %q; want done with eval_count %d",
				id, err, len(lines), lines[len(lines)-1], tokens)
		}
		t.Logf("MEASURED pool drain: a %d-token stream on %s ran %s after the drain was sent; the drain answered %s after the stream's end as the client read it",
			tokens, id, ended.Sub(drainSent).Round(time.Millisecond), d.at.Sub(ended).Round(time.Millisecond))
		// Back in the pool: a drained replica of a static pool takes
		// requests again once it was seen down and up (a pod replaced on
		// the same address takes seconds; the gate probes every 5 s).
		g.waitReplica(t, 20*time.Second, id, "seen down once stopped", func(r replicaStatus) bool { return r.State != "up" })
		on.start()
		g.waitReplica(t, 30*time.Second, id, "up and not draining again", func(r replicaStatus) bool { return r.State == "up" && !r.Draining })
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

	t.Run("answers at once: counted from the headers Ollama sends with the first token", func(t *testing.T) {
		// b is drained and stopped: whatever goes through the gate now goes
		// to a, which runs one answer at a time (OLLAMA_NUM_PARALLEL
		// defaults to 1).
		idA := strings.TrimPrefix(a.url(), "http://")
		type streamed struct {
			header, end time.Time
			err         error
		}
		// long streams a chat of the loop model to url and reports when its
		// header came (closing started) and when it ended.
		long := func(url, chat string, tokens int, started chan<- struct{}, out chan<- streamed) {
			defer close(started)
			body := fmt.Sprintf(`{"model":"loop","messages":[{"role":"user","content":"Go on"}],"stream":true,"options":{"num_predict":%d,"temperature":0,"seed":42}}`, tokens)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
			if err != nil {
				out <- streamed{err: err}
				return
			}
			req.Header.Set("X-OpenWebUI-Chat-Id", chat)
			res, err := http.DefaultClient.Do(req)
			if err != nil {
				out <- streamed{err: err}
				return
			}
			defer res.Body.Close()
			s := streamed{header: time.Now()}
			started <- struct{}{}
			rest, err := io.ReadAll(res.Body)
			s.end = time.Now()
			if err == nil && (res.StatusCode != http.StatusOK || !strings.Contains(string(rest), fmt.Sprintf(`"eval_count":%d`, tokens))) {
				err = fmt.Errorf("HTTP %d, want a whole answer of %d tokens: %.300s", res.StatusCode, tokens, rest)
			}
			s.err = err
			out <- s
		}
		// pair sends a stream, and a second one once the first streams
		// (its model loaded, its slot taken).
		pair := func(url string, tokens int) (first, second streamed) {
			t.Helper()
			c1, c2 := make(chan streamed, 1), make(chan streamed, 1)
			s1, s2 := make(chan struct{}, 1), make(chan struct{}, 1)
			go long(url, "at-once-1", tokens, s1, c1)
			<-s1 // its header, or its end without one
			go long(url, "at-once-2", tokens, s2, c2)
			first, second = <-c1, <-c2
			if first.err != nil || second.err != nil {
				t.Fatalf("two streams to %s: %v; %v", url, first.err, second.err)
			}
			return first, second
		}

		// Straight to Ollama: the second answer's header comes only once
		// the first has ended, and not at once, as a proxy would need if
		// it counted slots by headers.
		first, second := pair(a.url()+"/api/chat", 150)
		if second.header.Before(first.end.Add(-time.Second)) {
			t.Errorf("Ollama sent the second answer's header %s before the first answer ended: headers do not show slots",
				first.end.Sub(second.header).Round(time.Millisecond))
		}
		t.Logf("MEASURED one slot: the second answer's header came %s after the first answer's end, as the client read them",
			second.header.Sub(first.end).Round(time.Millisecond))

		// Through the gate (parallel=1, right): never taken for two.
		pair(g.url()+"/pool/api/chat", 150)
		g.waitReplica(t, 10*time.Second, idA, "not taken for two slots", func(r replicaStatus) bool { return r.AtOnce == 0 })

		// a again with two slots, the gate still told parallel=1: two
		// answers stream side by side, and the gate sees it.
		a.stop()
		a.env = append(a.env, "OLLAMA_NUM_PARALLEL=2")
		a.start()
		g.waitReplica(t, 30*time.Second, idA, "up again with two slots", func(r replicaStatus) bool { return r.State == "up" })
		// Long enough to stream side by side for over the gate's 2 s: about
		// 6 s at the speed just measured (the tiny model streams hundreds of
		// tokens a second on a quiet machine, tens on a loaded one), within
		// its context of 4096.
		perToken := first.end.Sub(first.header) / 150
		tokens := min(max(int(6*time.Second/max(perToken, time.Microsecond)), 600), 3500)
		first, second = pair(g.url()+"/pool/api/chat", tokens)
		if side := first.end.Sub(second.header); side < 3*time.Second {
			t.Fatalf("OLLAMA_NUM_PARALLEL=2: two answers of %d tokens streamed side by side for %s, want more than the gate's 2 s; the first's header at 0, its end at %s; the second's header at %s, its end at %s",
				tokens, side, first.end.Sub(first.header), second.header.Sub(first.header), second.end.Sub(first.header))
		}
		g.waitReplica(t, 10*time.Second, idA, "seen running two answers at once", func(r replicaStatus) bool { return r.AtOnce == 2 })
		t.Logf("MEASURED two slots: two answers of %d tokens streamed side by side for %s; the gate shows answers_at_once_seen 2",
			tokens, first.end.Sub(second.header).Round(time.Millisecond))
	})
}
