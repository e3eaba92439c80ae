package balance_test

import (
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/gate/balance"
)

// What a gate believes a replica has loaded, after a sequence of /api/ps
// readings and routed requests.
func TestResident(t *testing.T) {
	t0 := time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC)
	keep := 5 * time.Minute
	type step struct {
		at      time.Duration // after t0
		observe []string      // an /api/ps reading
		route   string        // a request sent there (when observe is nil)
		done    string        // a request that ended there (when observe is nil and route "")
	}
	type ask struct {
		model         string
		loaded, other bool
	}
	cases := []struct {
		name     string
		capacity int
		steps    []step
		at       time.Duration
		want     []ask
	}{
		{"nothing known", 1, nil, 0, []ask{{"a", false, false}}},
		{"ps lists a", 1, []step{{observe: []string{"a"}}}, time.Second, []ask{{"a", true, false}, {"b", false, true}}},
		{"routing b to a GPU of one model unloads a", 1,
			[]step{{observe: []string{"a"}}, {at: time.Second, route: "b"}}, 2 * time.Second,
			[]ask{{"a", false, true}, {"b", true, false}}},
		{"with room for two, a stays beside b", 2,
			[]step{{observe: []string{"a"}}, {at: time.Second, route: "b"}}, 2 * time.Second,
			[]ask{{"a", true, true}, {"b", true, true}}},
		{"the third model unloads the least recently routed", 2,
			[]step{{route: "a"}, {at: time.Second, route: "b"}, {at: 2 * time.Second, route: "a"}, {at: 3 * time.Second, route: "c"}}, 4 * time.Second,
			[]ask{{"a", true, true}, {"b", false, true}, {"c", true, true}}},
		{"no bound (capacity 0): everything routed stays", 0,
			[]step{{route: "a"}, {route: "b"}, {route: "c"}}, time.Second,
			[]ask{{"a", true, true}, {"b", true, true}, {"c", true, true}}},
		{"routing the loaded model again unloads nothing", 1,
			[]step{{observe: []string{"a"}}, {route: "a"}, {route: "a"}}, time.Second,
			[]ask{{"a", true, false}}},
		{"a reading replaces what was routed and ended", 1,
			[]step{{route: "b"}, {done: "b"}, {at: time.Second, observe: []string{"a"}}}, 2 * time.Second,
			[]ask{{"a", true, false}, {"b", false, true}}},
		{"a reading keeps a request that still waits there: it will load its model", 1,
			[]step{{observe: []string{"a"}}, {route: "b"}, {at: time.Second, observe: []string{"a"}}}, 2 * time.Second,
			[]ask{{"a", false, true}, {"b", true, false}}},
		{"the requests still there count in the order they came", 1,
			[]step{{route: "a"}, {route: "b"}, {route: "a"}, {at: time.Second, observe: []string{"b"}}}, 2 * time.Second,
			[]ask{{"a", true, false}, {"b", false, true}}},
		{"one of two requests for b ended: the other still counts", 1,
			[]step{{route: "b"}, {route: "b"}, {done: "b"}, {at: time.Second, observe: []string{"a"}}}, 2 * time.Second,
			[]ask{{"a", false, true}, {"b", true, false}}},
		{"a reading is never cut to the capacity: it is what the replica has", 1,
			[]step{{observe: []string{"a", "b"}}}, time.Second,
			[]ask{{"a", true, true}, {"b", true, true}}},
		{"an empty reading: nothing loaded", 1,
			[]step{{route: "a"}, {done: "a"}, {at: time.Second, observe: []string{}}}, 2 * time.Second,
			[]ask{{"a", false, false}}},
		{"past the keep-alive it is unloaded", 1,
			[]step{{route: "a"}}, keep + time.Second,
			[]ask{{"a", false, false}}},
		{"a:latest listed is a asked", 1,
			[]step{{observe: []string{"a:latest"}}, {at: time.Second, route: "a"}}, 2 * time.Second,
			[]ask{{"a", true, false}}},
		{"a routed is a:latest asked", 1,
			[]step{{route: "a"}}, time.Second,
			[]ask{{"a:latest", true, false}}},
		{"a reading over the capacity keeps both while a request for one of them waits", 1,
			[]step{{route: "a"}, {at: time.Second, observe: []string{"a", "b"}}}, 2 * time.Second,
			[]ask{{"a", true, true}, {"b", true, true}}},
		{"routing a model the replica holds unloads nothing beside it", 1,
			[]step{{observe: []string{"a", "b"}}, {at: time.Second, route: "b"}}, 2 * time.Second,
			[]ask{{"a", true, true}, {"b", true, true}}},
		{"a new model beside a reading over the capacity unloads one, the least recent", 1,
			[]step{{observe: []string{"a", "b"}}, {at: time.Second, route: "c"}}, 2 * time.Second,
			[]ask{{"a", false, true}, {"b", true, true}, {"c", true, true}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Ollama names "a" and "a:latest" alike.
			r := balance.Resident{Capacity: tc.capacity, Same: func(model, name string) bool {
				return name == model || name == model+":latest" || model == name+":latest"
			}}
			for _, s := range tc.steps {
				at := t0.Add(s.at)
				switch {
				case s.observe != nil:
					r.Observe(s.observe, at.Add(keep))
				case s.route != "":
					r.Route(s.route, at.Add(keep))
				default:
					r.Done(s.done)
				}
			}
			for _, a := range tc.want {
				loaded, other := r.Loaded(t0.Add(tc.at), a.model)
				if loaded != a.loaded || other != a.other {
					t.Errorf("%s: loaded %v, another %v; want %v, %v", a.model, loaded, other, a.loaded, a.other)
				}
			}
		})
	}
}
