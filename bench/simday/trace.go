package main

// The people: a seeded trace of a team's working day, and which of its
// messages go to the big model when there are two pools.

import (
	"math/rand/v2"
	"sort"
	"strconv"
	"time"
)

type kind int

const (
	open kind = iota
	closeTab
	send
)

type event struct {
	at     time.Duration // since midnight
	person string
	kind   kind
}

func count(tr []event, k kind) int {
	n := 0
	for _, e := range tr {
		if e.kind == k {
			n++
		}
	}
	return n
}

// trace is a seeded working day of a team:
//   - a quarter left a tab open the evening before (open at midnight);
//   - everybody arrives between 08:00 and 10:00 (opening a tab, or coming
//     back to the one left open: no signal to anybody);
//   - at work they write in bursts of 2-6 messages 30 s to 3 min apart; the
//     gaps between bursts average 45 min (3 h for the fifth who mostly read);
//   - lunch starts between 12:00 and 13:00 and lasts 30-60 min; 30% close
//     the tab for it, the others leave it open;
//   - they leave between 16:30 and 18:30; 35% leave the tab open overnight;
//   - one person opens Open WebUI from home around 21:00 and writes 3
//     messages, the first 1-2 min after opening it.
func trace(people int, seed uint64) []event {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	between := func(a, b time.Duration) time.Duration { return a + time.Duration(rng.Int64N(int64(b-a))) }
	var tr []event
	add := func(at time.Duration, p string, k kind) { tr = append(tr, event{at, p, k}) }
	bursts := func(p string, from, to, meanGap time.Duration) {
		t := from + time.Duration(rng.ExpFloat64()*float64(meanGap)/2)
		for t < to {
			for range 2 + rng.IntN(5) {
				if t >= to {
					break
				}
				add(t, p, send)
				t += between(30*time.Second, 3*time.Minute)
			}
			t += time.Duration(rng.ExpFloat64() * float64(meanGap))
		}
	}
	for i := range people {
		p := "person-" + strconv.Itoa(i+1)
		openOvernight := rng.Float64() < 0.25
		if openOvernight {
			add(0, p, open)
		}
		arrive := between(8*time.Hour, 10*time.Hour)
		if !openOvernight {
			add(arrive, p, open)
		}
		meanGap := 45 * time.Minute
		if rng.Float64() < 0.2 {
			meanGap = 3 * time.Hour
		}
		lunch := between(12*time.Hour, 13*time.Hour)
		back := lunch + between(30*time.Minute, 60*time.Minute)
		leave := between(16*time.Hour+30*time.Minute, 18*time.Hour+30*time.Minute)
		bursts(p, arrive, lunch, meanGap)
		if rng.Float64() < 0.3 {
			add(lunch, p, closeTab)
			add(back, p, open)
		}
		bursts(p, back, leave, meanGap)
		if rng.Float64() >= 0.35 {
			add(leave, p, closeTab)
		}
	}
	p := "person-" + strconv.Itoa(1+rng.IntN(people))
	evening := between(20*time.Hour+45*time.Minute, 21*time.Hour+15*time.Minute)
	add(evening, p, open)
	for k := range 3 { // the first a minute or two after opening Open WebUI
		add(evening+between(time.Minute, 2*time.Minute)+time.Duration(k)*2*time.Minute, p, send)
	}
	sort.SliceStable(tr, func(i, j int) bool { return tr[i].at < tr[j].at })
	return tr
}

// bigModel marks the messages of the trace that go to the big model: users
// people (picked by seed) send them, whole bursts at a time (a person keeps
// the model of a chat), until about share of all messages go there. A burst
// is a person's messages less than 3 min apart, as trace writes them.
func bigModel(tr []event, people, users int, share float64, seed uint64) (big []bool, who []string) {
	rng := rand.New(rand.NewPCG(seed, 0xb16))
	for _, i := range rng.Perm(people)[:min(users, people)] {
		who = append(who, "person-"+strconv.Itoa(i+1))
	}
	sort.Strings(who)
	var bursts [][]int
	last := map[string]int{} // person -> index in bursts of their current burst
	sends := 0
	for i, e := range tr {
		if e.kind != send {
			continue
		}
		sends++
		if !contains(who, e.person) {
			continue
		}
		b, ok := last[e.person]
		if ok && e.at-tr[bursts[b][len(bursts[b])-1]].at <= 3*time.Minute {
			bursts[b] = append(bursts[b], i)
			continue
		}
		last[e.person] = len(bursts)
		bursts = append(bursts, []int{i})
	}
	big = make([]bool, len(tr))
	want, got := int(share*float64(sends)+0.5), 0
	for _, b := range rng.Perm(len(bursts)) {
		if got >= want {
			break
		}
		for _, i := range bursts[b] {
			big[i] = true
		}
		got += len(bursts[b])
	}
	return big, who
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}
