package cluster

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// apiClient talks plain HTTP/JSON to the kube-apiserver (no client-go).
var apiClient = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}

// replicaEvent is one observed value of a Deployment's spec.replicas.
type replicaEvent struct {
	at       time.Time
	replicas int
}

// replicaWatcher follows a Deployment's spec.replicas through a watch on the
// API server, recording when each value was seen: the times the suite
// reports are those of the watch events, not of a polling loop.
type replicaWatcher struct {
	mu     sync.Mutex
	events []replicaEvent
	cancel context.CancelFunc
	done   chan struct{}
}

func watchReplicas(t *testing.T, ns, name string) *replicaWatcher {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	w := &replicaWatcher{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for ctx.Err() == nil {
			if err := w.watchOnce(ctx, ns, name); err != nil && ctx.Err() == nil {
				time.Sleep(200 * time.Millisecond)
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-w.done })
	if err := poll(30*time.Second, 20*time.Millisecond, func() (bool, error) { _, ok := w.current(); return ok, nil }); err != nil {
		t.Fatalf("watching deployment %s/%s: no event: %v", ns, name, err)
	}
	return w
}

func (w *replicaWatcher) watchOnce(ctx context.Context, ns, name string) error {
	u := fmt.Sprintf("%s/apis/apps/v1/namespaces/%s/deployments?watch=1&fieldSelector=%s",
		cp.apiURL, ns, url.QueryEscape("metadata.name="+name))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+cp.token)
	resp, err := apiClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("watch: %s", resp.Status)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var ev struct {
			Type   string `json:"type"`
			Object struct {
				Spec struct {
					Replicas *int `json:"replicas"`
				} `json:"spec"`
			} `json:"object"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil || ev.Object.Spec.Replicas == nil {
			continue
		}
		now := time.Now()
		w.mu.Lock()
		if n := len(w.events); n == 0 || w.events[n-1].replicas != *ev.Object.Spec.Replicas {
			w.events = append(w.events, replicaEvent{now, *ev.Object.Spec.Replicas})
		}
		w.mu.Unlock()
	}
	return sc.Err()
}

func (w *replicaWatcher) current() (int, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) == 0 {
		return 0, false
	}
	return w.events[len(w.events)-1].replicas, true
}

// waitFor waits until spec.replicas == want, seen at or after since, and
// returns when it was first seen.
func (w *replicaWatcher) waitFor(want int, since time.Time, timeout time.Duration) (time.Time, error) {
	var at time.Time
	err := poll(timeout, 10*time.Millisecond, func() (bool, error) {
		w.mu.Lock()
		defer w.mu.Unlock()
		for i, e := range w.events {
			if e.replicas != want {
				continue
			}
			// Counts if it was set after since, or was already the value at since.
			if !e.at.Before(since) || i == len(w.events)-1 || !w.events[i+1].at.Before(since) {
				at = e.at
				if at.Before(since) {
					at = since
				}
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		cur, _ := w.current()
		return at, fmt.Errorf("spec.replicas never became %d (it is %d): %w", want, cur, err)
	}
	return at, nil
}

// changesSince lists the values spec.replicas took after since.
func (w *replicaWatcher) changesSince(since time.Time) []replicaEvent {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []replicaEvent
	for _, e := range w.events {
		if e.at.After(since) {
			out = append(out, e)
		}
	}
	return out
}

// scaledObjectConditions summarises the ScaledObject's status conditions,
// e.g. "Ready=False(TriggerError) Active=False Fallback=True".
func scaledObjectConditions(ns, name string) string {
	out, err := cp.kubectl(nil, "get", "scaledobject", "-n", ns, name, "-o", "json")
	if err != nil {
		return err.Error()
	}
	var so struct {
		Status struct {
			Conditions []struct{ Type, Status, Reason string }
			Health     map[string]struct {
				NumberOfFailures int    `json:"numberOfFailures"`
				Status           string `json:"status"`
			} `json:"health"`
		}
	}
	if err := json.Unmarshal([]byte(out), &so); err != nil {
		return err.Error()
	}
	var parts []string
	for _, c := range so.Status.Conditions {
		s := c.Type + "=" + c.Status
		if c.Reason != "" && c.Status != "Unknown" {
			s += "(" + c.Reason + ")"
		}
		parts = append(parts, s)
	}
	for _, k := range sortedKeys(so.Status.Health) {
		h := so.Status.Health[k]
		parts = append(parts, fmt.Sprintf("health[%s]=%s/%d failures", k, h.Status, h.NumberOfFailures))
	}
	return strings.Join(parts, " ")
}

// applyObject creates or updates an object given as a Go value (JSON).
func applyObject(t *testing.T, ns string, obj any) {
	t.Helper()
	b, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cp.kubectl(b, "apply", "--server-side", "--force-conflicts", "--field-manager=cluster-suite", "-n", ns, "-f", "-"); err != nil {
		t.Fatalf("applying %s: %v", b, err)
	}
}

// stubOllama creates the Deployment KEDA scales. No pod ever runs (there is
// no kubelet nor controller-manager): only spec.replicas matters.
func stubOllama(t *testing.T, ns, name string, replicas int) {
	t.Helper()
	labels := map[string]any{"app.kubernetes.io/name": name}
	applyObject(t, ns, map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{
			"replicas": replicas,
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{"containers": []any{map[string]any{
					"name": "ollama", "image": "docker.io/ollama/ollama:latest",
				}}},
			},
		},
	})
}

// setReplicas sets spec.replicas directly (like kubectl scale).
func setReplicas(t *testing.T, ns, name string, n int) {
	t.Helper()
	if _, err := cp.kubectl(nil, "scale", "deployment", "-n", ns, name, fmt.Sprintf("--replicas=%d", n)); err != nil {
		t.Fatal(err)
	}
}
