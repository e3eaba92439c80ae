package balance_test

import (
	"fmt"
	"testing"

	"github.com/openwebui-exporter/openwebui_exporter/gate/balance"
)

// r builds a replica: in flight, parallel slots, model loaded.
func r(id string, inFlight, parallel int, loaded bool) balance.Replica {
	return balance.Replica{ID: id, InFlight: inFlight, Parallel: parallel, Loaded: loaded}
}

func evicts(x balance.Replica) balance.Replica { x.Evicts = true; return x }

// A new conversation (or a request with none) is placed by the rules 2 to 5.
func TestChooseNewConversation(t *testing.T) {
	tests := []struct {
		name     string
		replicas []balance.Replica
		want     string
	}{
		{"the only one", []balance.Replica{r("a", 5, 1, false)}, "a"},
		{"a free replica beats a busy one", []balance.Replica{r("a", 1, 1, true), r("b", 0, 1, true)}, "b"},
		{"a free replica beats a busy one with fewer in flight", []balance.Replica{r("a", 1, 1, true), r("b", 1, 2, true)}, "b"},
		{"free without the model beats busy with it, when nothing else is loaded there", []balance.Replica{r("a", 1, 1, true), r("b", 0, 1, false)}, "b"},
		{"waiting behind one answer beats loading the model over another", []balance.Replica{r("a", 1, 1, true), evicts(r("b", 0, 1, false))}, "a"},
		{"waiting behind two answers ties with loading over another model: the model wins", []balance.Replica{r("a", 2, 1, true), evicts(r("b", 0, 1, false))}, "a"},
		{"loading over another model beats waiting behind three answers", []balance.Replica{r("a", 3, 1, true), evicts(r("b", 0, 1, false))}, "b"},
		{"among free ones, the model loaded wins over fewer in flight", []balance.Replica{r("a", 0, 4, false), r("b", 3, 4, true)}, "b"},
		{"among busy ones, a load over another model counts as two answers ahead", []balance.Replica{evicts(r("a", 1, 1, false)), r("b", 2, 1, true)}, "b"},
		{"among busy ones, a load on an empty replica counts as half an answer ahead", []balance.Replica{r("a", 1, 1, false), r("b", 2, 1, true)}, "a"},
		{"among busy ones, a shorter queue wins over the model loaded", []balance.Replica{r("a", 1, 1, false), r("b", 3, 1, true)}, "a"},
		{"then least in flight", []balance.Replica{r("a", 3, 1, true), r("b", 2, 1, true), r("c", 4, 1, true)}, "b"},
		{"least in flight per slot", []balance.Replica{r("a", 2, 4, true), r("b", 1, 1, true), r("c", 3, 4, true)}, "a"},
		{"parallel 0 counts as 1", []balance.Replica{r("a", 1, 0, true), r("b", 0, 0, true)}, "b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := balance.NewChooser(balance.Policy{}, 0)
			i := c.Choose(tt.replicas, "chat-1")
			if got := tt.replicas[i].ID; got != tt.want {
				t.Errorf("chose %s, want %s", got, tt.want)
			}
		})
	}
}

func TestChooseNone(t *testing.T) {
	c := balance.NewChooser(balance.Policy{}, 0)
	if i := c.Choose(nil, "x"); i != -1 {
		t.Errorf("no replica: chose %d, want -1", i)
	}
}

// Later turns go back to the replica that served the conversation, unless the
// move rule says otherwise.
func TestConversationAffinity(t *testing.T) {
	tests := []struct {
		name   string
		policy balance.Policy
		home   string // where turn 1 went (forced by the loads of turn 1)
		now    []balance.Replica
		want   string
	}{
		{"home free: stays although another has fewer in flight",
			balance.Policy{}, "b", []balance.Replica{r("a", 0, 2, true), r("b", 1, 2, true)}, "b"},
		{"home busy, another free: moves (default MoveQueue 1)",
			balance.Policy{}, "b", []balance.Replica{r("a", 0, 1, true), r("b", 1, 1, true)}, "a"},
		{"home busy, another free but must load the model: stays behind one answer",
			balance.Policy{}, "b", []balance.Replica{r("a", 0, 1, false), r("b", 1, 1, true)}, "b"},
		{"home busy, another free, MoveQueue 2: stays behind one answer",
			balance.Policy{MoveQueue: 2}, "b", []balance.Replica{r("a", 0, 1, true), r("b", 1, 1, true)}, "b"},
		{"home busy, another free, MoveQueue 2: moves from behind two",
			balance.Policy{MoveQueue: 2}, "b", []balance.Replica{r("a", 0, 1, true), r("b", 2, 1, true)}, "a"},
		{"all busy, as many ahead: stays",
			balance.Policy{}, "b", []balance.Replica{r("a", 2, 1, true), r("b", 2, 1, true)}, "b"},
		{"all busy, one fewer ahead: moves (default margin 1)",
			balance.Policy{}, "b", []balance.Replica{r("a", 1, 1, true), r("b", 2, 1, true)}, "a"},
		{"all busy, one fewer ahead, margin 2: stays",
			balance.Policy{MoveMargin: 2}, "b", []balance.Replica{r("a", 1, 1, true), r("b", 2, 1, true)}, "b"},
		{"all busy, two fewer ahead, margin 2: moves",
			balance.Policy{MoveMargin: 2}, "b", []balance.Replica{r("a", 1, 1, true), r("b", 3, 1, true)}, "a"},
		{"home free but without the model, another starts at once: moves",
			balance.Policy{}, "b", []balance.Replica{r("a", 0, 1, true), r("b", 0, 1, false)}, "a"},
		{"home gone from the eligible set: placed afresh",
			balance.Policy{}, "b", []balance.Replica{r("a", 1, 1, true), r("c", 0, 1, false)}, "c"},
		{"bounded load 125%: stays on a busy home while a replica is free",
			balance.Policy{LoadFactor: 1.25}, "b", []balance.Replica{r("a", 0, 1, true), r("b", 1, 1, true), r("c", 1, 1, true)}, "b"},
		{"bounded load 125%: moves over the bound",
			balance.Policy{LoadFactor: 1.25}, "b", []balance.Replica{r("a", 0, 1, true), r("b", 2, 1, true), r("c", 0, 1, true)}, "a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := balance.NewChooser(tt.policy, 0)
			// Turn 1: only the home may serve it.
			if i := c.Choose([]balance.Replica{r(tt.home, 0, 1, true)}, "chat-1"); i != 0 {
				t.Fatalf("turn 1: chose %d", i)
			}
			i := c.Choose(tt.now, "chat-1")
			if got := tt.now[i].ID; got != tt.want {
				t.Errorf("turn 2: chose %s, want %s", got, tt.want)
			}
			// The choice becomes the new home: turn 3 with every replica free goes there.
			free := make([]balance.Replica, len(tt.now))
			for j, x := range tt.now {
				free[j] = r(x.ID, 0, 1, true)
			}
			if got := free[c.Choose(free, "chat-1")].ID; got != tt.want {
				t.Errorf("turn 3 (all free): chose %s, want the new home %s", got, tt.want)
			}
		})
	}
}

// Equal replicas: a conversation's first replica is a hash of it (the same in
// every gate and after a restart), and conversations spread over replicas.
func TestTiesRendezvous(t *testing.T) {
	rs := []balance.Replica{r("a", 0, 1, true), r("b", 0, 1, true), r("c", 0, 1, true)}
	counts := map[string]int{}
	for n := range 300 {
		conv := fmt.Sprintf("chat-%d", n)
		first := rs[balance.NewChooser(balance.Policy{}, 0).Choose(rs, conv)].ID
		again := rs[balance.NewChooser(balance.Policy{}, 0).Choose(rs, conv)].ID
		if first != again {
			t.Fatalf("%s: two choosers chose %s and %s", conv, first, again)
		}
		counts[first]++
	}
	for _, x := range rs {
		if counts[x.ID] < 60 {
			t.Errorf("replica %s got %d of 300 conversations, want about 100: %v", x.ID, counts[x.ID], counts)
		}
	}
}

// Without a conversation, equal replicas take turns.
func TestTiesTakeTurns(t *testing.T) {
	rs := []balance.Replica{r("a", 0, 1, true), r("b", 0, 1, true), r("c", 0, 1, true)}
	c := balance.NewChooser(balance.Policy{}, 0)
	seen := map[string]int{}
	for range 6 {
		seen[rs[c.Choose(rs, "")].ID]++
	}
	if len(seen) != 3 || seen["a"] != 2 || seen["b"] != 2 || seen["c"] != 2 {
		t.Errorf("six requests without a conversation: %v, want 2 each", seen)
	}
}

// The memory is bounded: the least recently used conversation is forgotten.
func TestMemoryBound(t *testing.T) {
	c := balance.NewChooser(balance.Policy{}, 2)
	one := []balance.Replica{r("z", 0, 1, true)}
	for _, conv := range []string{"c1", "c2", "c3"} {
		c.Choose(one, conv)
	}
	rs := []balance.Replica{r("a", 0, 1, true), r("z", 1, 2, true)} // z is free but has more in flight
	if got := rs[c.Choose(rs, "c3")].ID; got != "z" {
		t.Errorf("c3 (remembered): chose %s, want its home z", got)
	}
	stayed, moved := c.Moves()
	if stayed != 1 || moved != 0 {
		t.Errorf("Moves() = %d stayed, %d moved; want 1, 0", stayed, moved)
	}
	// c1 was forgotten: placed afresh by least in flight.
	if got := rs[c.Choose(rs, "c1")].ID; got != "a" {
		t.Errorf("c1 (forgotten): chose %s, want a", got)
	}
}

// Forget drops a replica's conversations.
func TestForget(t *testing.T) {
	c := balance.NewChooser(balance.Policy{}, 0)
	c.Choose([]balance.Replica{r("z", 0, 1, true)}, "c1")
	c.Forget("z")
	rs := []balance.Replica{r("a", 0, 1, true), r("z", 1, 2, true)}
	if got := rs[c.Choose(rs, "c1")].ID; got != "a" {
		t.Errorf("after Forget(z): chose %s, want a", got)
	}
}
