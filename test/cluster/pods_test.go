package cluster

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"
)

// podSet plays the kubelet (and the ReplicaSet and Deployment controllers)
// for a stub Ollama Deployment of several replicas, a pool behind the gate.
// Pod i is a stand-in Ollama process at addrs[i] (127.0.0.i+1, one held port
// on all of them: a static pool's replica addresses). When spec.replicas
// is k it keeps k pods running, each started at the lowest free address.
// When spec.replicas drops it deletes pods as Kubernetes does: it chooses
// them (here the busiest first, the hard case: a pod with a running stream),
// runs their preStop hook (the gate drain of examples/gate-pool), bounded
// by the grace period, and only then stops the process. It writes the
// Deployment's status.replicas, which the HPA reads.
type podSet struct {
	t        *testing.T
	name     string   // the Deployment
	ns       string   // its namespace
	addrs    []string // 127.0.0.N:PORT, one per possible pod
	args     []string // the stand-in's flags, without --listen
	gateAddr string   // where the preStop hook sends its drain
	grace    time.Duration
	replicas *replicaWatcher

	mu       sync.Mutex
	pods     []*pod // by address index; nil: none there
	deleted  []podDeletion
	outputs  []string
	status   int // status.replicas last written (-1: never)
	stop     chan struct{}
	done     chan struct{}
	inflight sync.WaitGroup // deletions under way
}

// pod is one stand-in Ollama process.
type pod struct {
	addr     string
	proc     *proc
	started  time.Time
	deleting bool
}

// podDeletion is what happened to one deleted pod.
type podDeletion struct {
	addr        string
	at          time.Time // chosen for deletion
	inFlight    int       // the gate's requests on it then
	hookStatus  int       // the drain's HTTP status (0: none)
	hookBody    string
	hookErr     error
	hookDone    time.Time
	stopped     time.Time
	replicasNow int // spec.replicas that made it go
}

func (d podDeletion) String() string {
	return fmt.Sprintf("pod %s deleted at %s (spec.replicas %d) with %d requests of the gate on it; preStop drain: %d %q (error %v) after %s; stopped %s later",
		d.addr, d.at.Format(time.StampMilli), d.replicasNow, d.inFlight, d.hookStatus, d.hookBody, d.hookErr,
		d.hookDone.Sub(d.at).Round(time.Millisecond), d.stopped.Sub(d.hookDone).Round(time.Millisecond))
}

// followPool starts the pod set; its processes are stopped when the test ends.
func followPool(t *testing.T, ns, name string, addrs []string, w *replicaWatcher, gateAddr string, grace time.Duration, args ...string) *podSet {
	t.Helper()
	ps := &podSet{t: t, name: name, ns: ns, addrs: addrs, args: args, gateAddr: gateAddr, grace: grace, replicas: w,
		pods: make([]*pod, len(addrs)), status: -1, stop: make(chan struct{}), done: make(chan struct{})}
	go ps.loop()
	t.Cleanup(func() {
		close(ps.stop)
		<-ps.done
		ps.inflight.Wait()
		ps.mu.Lock()
		defer ps.mu.Unlock()
		for _, p := range ps.pods {
			if p != nil {
				p.proc.stop()
				ps.outputs = append(ps.outputs, p.addr+":\n"+p.proc.tail(3000))
			}
		}
		if t.Failed() {
			for _, d := range ps.deleted {
				t.Logf("%s", d)
			}
			for _, out := range ps.outputs {
				t.Logf("output of stand-in Ollama %s", out)
			}
		}
	})
	return ps
}

// loop reconciles every 10 ms (a kubelet is slower; the delays measured
// are KEDA's, the HPA's and the gate's).
func (ps *podSet) loop() {
	defer close(ps.done)
	for {
		select {
		case <-ps.stop:
			return
		case <-time.After(10 * time.Millisecond):
		}
		if n, ok := ps.replicas.current(); ok {
			ps.reconcile(n)
		}
	}
}

func (ps *podSet) reconcile(want int) {
	ps.mu.Lock()
	var live []int // pods not being deleted
	for i, p := range ps.pods {
		if p == nil {
			continue
		}
		if p.proc.exited() && !p.deleting {
			ps.t.Errorf("stand-in Ollama %s exited by itself:\n%s", p.addr, p.proc.tail(3000))
			ps.outputs = append(ps.outputs, p.addr+":\n"+p.proc.tail(3000))
			ps.pods[i] = nil
			continue
		}
		if !p.deleting {
			live = append(live, i)
		}
	}
	// Scale out: a new pod at the lowest free address (a deleted pod's
	// address is free once its process stopped).
	for i := range ps.addrs {
		if len(live) >= want {
			break
		}
		if ps.pods[i] != nil {
			continue
		}
		p, err := startProc("fakeollama-"+ps.addrs[i], fakeOllamaBin, nil, append([]string{"--listen", ps.addrs[i]}, ps.args...)...)
		if err != nil {
			ps.t.Errorf("stand-in Ollama %s: %v", ps.addrs[i], err)
			break
		}
		ps.pods[i] = &pod{addr: ps.addrs[i], proc: p, started: time.Now()}
		live = append(live, i)
	}
	var victims []int
	if len(live) > want {
		victims = ps.chooseVictims(live, len(live)-want)
		for _, i := range victims {
			ps.pods[i].deleting = true
		}
	}
	running := len(live) - len(victims)
	update := running != ps.status
	ps.status = running
	ps.mu.Unlock()

	for _, i := range victims {
		ps.inflight.Add(1)
		go ps.delete(i, want)
	}
	if update {
		ps.writeStatus(running)
	}
}

// chooseVictims picks n of the live pods to delete: those with the most
// requests of the gate on them first (Kubernetes may well delete a busy
// pod; this is the case the drain is for), the newest among equals.
func (ps *podSet) chooseVictims(live []int, n int) []int {
	load := map[string]int{}
	if st, err := gateReplicas(ps.gateAddr); err == nil {
		for _, r := range st {
			load[r.ID] = r.InFlight
		}
	} else {
		ps.t.Logf("choosing pods to delete without the gate's counts: %v", err)
	}
	order := slices.Clone(live)
	slices.SortStableFunc(order, func(a, b int) int {
		if d := load[ps.addrs[b]] - load[ps.addrs[a]]; d != 0 {
			return d
		}
		return ps.pods[b].started.Compare(ps.pods[a].started)
	})
	return order[:n]
}

// delete runs pod i's preStop hook, bounded by the grace period, then
// stops it (SIGTERM, as the kubelet does once the hook returned).
func (ps *podSet) delete(i, replicasNow int) {
	defer ps.inflight.Done()
	ps.mu.Lock()
	p := ps.pods[i]
	ps.mu.Unlock()
	d := podDeletion{addr: p.addr, at: time.Now(), replicasNow: replicasNow, inFlight: -1}
	if st, err := gateReplicas(ps.gateAddr); err == nil {
		for _, r := range st {
			if r.ID == p.addr {
				d.inFlight = r.InFlight
			}
		}
	}
	d.hookStatus, d.hookBody, d.hookErr = preStopDrain(ps.gateAddr, p.addr, ps.grace)
	d.hookDone = time.Now()
	p.proc.stop()
	d.stopped = time.Now()
	ps.mu.Lock()
	ps.deleted = append(ps.deleted, d)
	ps.outputs = append(ps.outputs, p.addr+":\n"+p.proc.tail(3000))
	ps.pods[i] = nil
	ps.mu.Unlock()
}

// deletions lists the pods deleted so far, their hooks ended.
func (ps *podSet) deletions() []podDeletion {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	return slices.Clone(ps.deleted)
}

// runningAddrs lists the pods that run and are not being deleted.
func (ps *podSet) runningAddrs() []string {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	var out []string
	for _, p := range ps.pods {
		if p != nil && !p.deleting {
			out = append(out, p.addr)
		}
	}
	return out
}

// writeStatus sets the Deployment's status.replicas (and ready, available,
// updated) as its controller would: the HPA computes from it.
func (ps *podSet) writeStatus(n int) {
	patch := fmt.Sprintf(`{"status":{"replicas":%d,"readyReplicas":%d,"availableReplicas":%d,"updatedReplicas":%d}}`, n, n, n, n)
	u := fmt.Sprintf("%s/apis/apps/v1/namespaces/%s/deployments/%s/status", cp.apiURL, ps.ns, ps.name)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, u, bytes.NewReader([]byte(patch)))
	if err != nil {
		ps.t.Errorf("status of %s: %v", ps.name, err)
		return
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	req.Header.Set("Content-Type", "application/merge-patch+json")
	resp, err := apiClient.Do(req)
	if err != nil {
		ps.t.Errorf("status of %s: %v", ps.name, err)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		ps.t.Errorf("status of %s: %s %s", ps.name, resp.Status, b)
	}
}

// preStopDrain sends the request of the preStop hook in
// examples/gate-pool/ollama-values.yaml, byte for byte, from the pod's own
// address (the gate drains a replica named by IP only from that IP; bash's
// /dev/tcp, which the hook uses, cannot choose its source address on
// loopback, so the same bytes go through a dialer bound to it), and waits,
// at most grace, for the answer as the hook's `cat` does.
func preStopDrain(gateAddr, replica string, grace time.Duration) (int, string, error) {
	host, _, err := net.SplitHostPort(replica)
	if err != nil {
		return 0, "", err
	}
	dialer := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(host)}, Timeout: 5 * time.Second}
	c, err := dialer.Dial("tcp", gateAddr)
	if err != nil {
		return 0, "", fmt.Errorf("preStop: connecting to the gate from %s: %w", host, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(grace))
	if _, err := fmt.Fprintf(c, "POST /_gate/drain?replica=%s HTTP/1.1\r\nHost: gate\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", replica); err != nil {
		return 0, "", fmt.Errorf("preStop: %w", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, "", fmt.Errorf("preStop: reading the gate's answer: %w", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// gateReplica is one replica of a pool in GET /_gate/status.
type gateReplica struct {
	ID       string `json:"id"`
	State    string `json:"state"`
	Draining bool   `json:"draining"`
	InFlight int    `json:"in_flight"`
	Requests uint64 `json:"requests"`
}

// gateReplicas lists the replicas of every pool of the gate.
func gateReplicas(gateAddr string) ([]gateReplica, error) {
	backends, err := gateStatus(gateAddr)
	if err != nil {
		return nil, err
	}
	var out []gateReplica
	for _, name := range sortedKeys(backends) {
		out = append(out, backends[name].Replicas...)
	}
	return out, nil
}

// loopbackAddrs is host:port on 127.0.0.1 .. 127.0.0.n, one port held on all.
func loopbackAddrs(n int) []string {
	hosts := make([]string, n)
	for i := range hosts {
		hosts[i] = "127.0.0." + strconv.Itoa(i+1)
	}
	port := strconv.Itoa(heldPortOn(hosts...))
	out := make([]string, n)
	for i, h := range hosts {
		out[i] = net.JoinHostPort(h, port)
	}
	return out
}
