// Command idlecost measures what one fetch costs with the idle-tab policy
// on (--activity.idle-timeout), by the number of active users and by the
// source Open WebUI's writes are read from:
//
//   - analytics: Open WebUI 0.10 and 0.11, one GET /api/v1/analytics/users;
//
//   - chat list: 0.12+, before 0.10, or ENABLE_ADMIN_ANALYTICS=false, one
//     GET /api/v1/chats/list/user/{id} per idle active user, 8 at a time.
//
//     go run ./bench/idlecost                              # 100, 1000, 5000 users; 0 and 10 ms
//     go run ./bench/idlecost -users 300 -latency 10ms -fetches 9
//
// What is real: the exporter's client (internal to the binary, called
// in-process), its HTTP requests over loopback, and the bounded
// concurrency. What is modelled: Open WebUI (internal/fakeopenwebui), with
// -latency added to every answer as the time its database takes; every
// user has an idle tab open (the worst case: nobody wrote, so everybody
// past the arrival grace is asked). Prints the median wall time of a fetch
// and the requests it made.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

func main() {
	users := flag.String("users", "100,1000,5000", "comma-separated numbers of active users (idle tabs)")
	latencies := flag.String("latency", "0,10ms", "comma-separated latencies added to every answer of the fake")
	fetches := flag.Int("fetches", 5, "fetches measured per row (the median is printed)")
	flag.Parse()
	fmt.Printf("idle-policy cost of one fetch, every active user an idle tab past the arrival grace; median of %d fetches; in-process client, fake Open WebUI over loopback\n", *fetches)
	fmt.Printf("%-10s %6s %8s %10s %13s %12s %11s %10s\n", "source", "users", "latency", "fetch", "policy off", "policy cost", "user pages", "write reqs")
	for _, l := range strings.Split(*latencies, ",") {
		latency, err := time.ParseDuration(strings.TrimSpace(l))
		if err != nil {
			fail(fmt.Errorf("-latency: %w", err))
		}
		for _, u := range strings.Split(*users, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(u))
			if err != nil || n < 1 {
				fail(fmt.Errorf("-users: want positive numbers, got %q", u))
			}
			for _, src := range []struct{ name, version string }{{"analytics", "0.11.0"}, {"chat list", "0.12.0"}} {
				off, err := measure(src.version, n, latency, *fetches, false)
				if err != nil {
					fail(fmt.Errorf("%s, %d users, %s, policy off: %w", src.name, n, latency, err))
				}
				on, err := measure(src.version, n, latency, *fetches, true)
				if err != nil {
					fail(fmt.Errorf("%s, %d users, %s: %w", src.name, n, latency, err))
				}
				fmt.Printf("%-10s %6d %8s %10s %13s %12s %11d %10d\n", src.name, n, latency, ms(on.fetch), ms(off.fetch), ms(on.fetch-off.fetch), on.pages, on.writeRequests)
			}
		}
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "idlecost:", err)
	os.Exit(1)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

type result struct {
	fetch                time.Duration // median wall time of a fetch
	pages, writeRequests int           // requests of the last fetch
}

// measure runs one exporter client in admin mode, with or without the
// idle policy (15m), against users idle tabs of a fake Open WebUI version.
func measure(version string, users int, latency time.Duration, fetches int, withPolicy bool) (result, error) {
	clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
	fake := fakeopenwebui.New(fakeopenwebui.Config{Version: version, Now: clock.Now, TabHeartbeats: true})
	key := fake.IssueAPIKey(fake.AddUser("exporter", "admin"))
	for i := range users {
		fake.Touch(fake.AddUserIfMissing(fmt.Sprintf("person-%05d", i)))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(latency)
		fake.ServeHTTP(w, r)
	}))
	defer srv.Close()
	base, _ := url.Parse(srv.URL)
	var policy *openwebui.IdlePolicy
	if withPolicy {
		var err error
		if policy, err = openwebui.NewIdlePolicy(15 * time.Minute); err != nil {
			return result{}, err
		}
	}
	client := openwebui.NewClient(openwebui.Config{BaseURL: base, Mode: openwebui.ModeAdmin, Now: clock.Now, IdlePolicy: policy,
		Token:      func() (string, error) { return key, nil },
		HTTPClient: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}})
	count := func() (openwebui.Count, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		return client.Count(ctx)
	}
	// Everybody arrives, then idles past the timeout with a fetch every 150 s.
	for t := time.Duration(0); t <= 15*time.Minute; t += 150 * time.Second {
		if t > 0 {
			clock.Advance(150 * time.Second)
		}
		if _, err := count(); err != nil {
			return result{}, err
		}
	}
	var walls []time.Duration
	var pages, writes int
	for range fetches {
		clock.Advance(30 * time.Second)
		fake.ResetRequests()
		start := time.Now()
		n, err := count()
		wall := time.Since(start)
		if err != nil {
			return result{}, err
		}
		if n.ActiveUsers != users || n.EngagedUsers != 0 || n.IdlePolicy != withPolicy {
			return result{}, fmt.Errorf("counted %d active, %d engaged; want %d and 0", n.ActiveUsers, n.EngagedUsers, users)
		}
		walls = append(walls, wall)
		pages = fake.Requests("/api/v1/users/")
		writes = fake.RequestsWithPrefix("/api/v1/chats/list/user/") + fake.Requests("/api/v1/analytics/users")
	}
	sort.Slice(walls, func(i, j int) bool { return walls[i] < walls[j] })
	return result{fetch: walls[len(walls)/2], pages: pages, writeRequests: writes}, nil
}
