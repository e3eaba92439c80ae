package cluster

import (
	"context"
	"testing"
	"time"
)

// TestIdleTabLetsOllamaSleep: with the idle-tab policy on, a person whose
// tab stays open but who sends nothing stops counting after the idle
// timeout, so Ollama goes to 0; a chat message brings it back.
func TestIdleTabLetsOllamaSleep(t *testing.T) {
	const idle = 5 * time.Second
	s := newStack(t, triggerPush, scenarioTuning(nil), stackOptions{
		exporters: 1,
		fakeArgs:  []string{"--admin"},
		extraArgs: append([]string{"--openwebui.count-mode=admin", "--activity.idle-timeout=" + idle.String()}, scenarioArgs...),
	})
	// An open tab: its heartbeat keeps last_active_at fresh every second.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	tab := make(chan struct{})
	go func() {
		defer close(tab)
		for ctx.Err() == nil {
			_ = httpPost(s.fakeURL + "/_fake/active?name=alice")
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-tab })

	sent := time.Now()
	if err := httpPost(s.fakeURL + "/_fake/send?name=alice"); err != nil {
		t.Fatal(err)
	}
	took := s.wake(sent, wakeTimeout)
	t.Logf("alice sent a message: 0 -> 1 after %s", took.Round(time.Millisecond))
	woke := sent.Add(took).Add(time.Millisecond)
	at, err := s.replicas.waitFor(0, woke, idle+cooldown+wakeTimeout)
	if err != nil {
		t.Fatalf("the tab stayed open and idle, but Ollama did not go to 0: %v (exporter: %s)", err, s.activeUsers())
	}
	if at.Sub(sent) < idle+cooldown-pollEvery {
		t.Fatalf("Ollama went to 0 %s after the last message, before idle timeout %s + cooldown %s", at.Sub(sent), idle, cooldown)
	}
	t.Logf("tab open and idle: 1 -> 0 after %s (idle timeout %s, cooldownPeriod %s)", at.Sub(sent).Round(time.Millisecond), idle, cooldown)
	again := time.Now()
	if err := httpPost(s.fakeURL + "/_fake/send?name=alice"); err != nil {
		t.Fatal(err)
	}
	took = s.wake(again, wakeTimeout)
	t.Logf("a message from the idle tab: 0 -> 1 after %s", took.Round(time.Millisecond))
}
