package main

import (
	"testing"
	"time"
)

func TestFirstMessages(t *testing.T) {
	tr := []event{
		{0, "a", open}, // a tab left open overnight: no arrival
		{8 * time.Hour, "b", open},
		{8*time.Hour + 30*time.Minute, "a", send},
		{8*time.Hour + 40*time.Minute, "b", send}, // b's first: moved within 10 s..20 s of 08:00
		{8*time.Hour + 50*time.Minute, "b", send},
	}
	out, firsts := firstMessages(tr, [2]time.Duration{10 * time.Second, 20 * time.Second}, 1)
	if len(firsts) != 1 {
		t.Fatalf("firsts %v, want b's only", firsts)
	}
	for i, arrived := range firsts {
		e := out[i]
		if e.person != "b" || arrived != 8*time.Hour || e.at < 8*time.Hour+10*time.Second || e.at > 8*time.Hour+20*time.Second {
			t.Errorf("first message %+v (arrived %s), want b's between 08:00:10 and 08:00:20", e, arrived)
		}
	}
}

// One person arrives at a sleeping pool and writes well after start-up and
// load: without warming the message waits for the whole load, with it none.
func TestWarmDayOnePerson(t *testing.T) {
	for _, tc := range []struct {
		warm bool
		want time.Duration
	}{{false, 40 * time.Second}, {true, 0}} {
		s := warmSpec{people: 1, seed: 1, startup: 30 * time.Second, loads: map[string]time.Duration{small8b: 8 * time.Second, big70b: 40 * time.Second},
			models: [2]string{small8b, big70b}, maxLoaded: 2, keepAlive: 5 * time.Minute, answer: 20 * time.Second, cooldown: 300 * time.Second,
			polling: 30 * time.Second, push: time.Second, firstAfter: [2]time.Duration{3 * time.Minute, 3 * time.Minute}, bigShare: 1, idle: 15 * time.Minute, warm: tc.warm}
		r := warmDay(s)
		if len(r.firsts) == 0 {
			t.Fatal("no first message")
		}
		for _, f := range r.firsts {
			if !f.done || f.model != big70b || f.loadWait != tc.want {
				t.Errorf("warm %v: first message %+v, want a load wait of %s", tc.warm, f, tc.want)
			}
		}
		if tc.warm && r.warmups == 0 {
			t.Error("no warm-up")
		}
	}
}
