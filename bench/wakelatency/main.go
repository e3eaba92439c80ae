// Command wakelatency measures how fast the external-push scaler tells KEDA
// that somebody arrived: with a StreamIsActive stream open and nobody active
// in a fake Open WebUI, it marks a human active at t0 and records when the
// stream delivers true. Everything is real except Open WebUI: the exporter's
// client, shared cache, push loop and gRPC server, over loopback, in real
// time.
//
//	go run ./bench/wakelatency                  # 25 runs, --keda.push-interval=1s, cache TTL 60s
//	go run ./bench/wakelatency -n 50 -push-interval 500ms
//	go run ./bench/wakelatency -message          # a message typed into an idle tab, idle-tab policy on
//
// With -message the exporter counts in admin mode with the idle-tab policy
// (15 min); one person has a tab open that went idle (the fake's clock jumps
// 15 min), and t0 is the moment they send a chat message.
//
// Each t0 falls at a random point of the push loop's cycle, as real arrivals
// do. It prints the median and p99 (nearest rank), and beside them the
// computed worst case of the metrics-api path (not measured).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/openwebui-exporter/openwebui_exporter/demand"
	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/keda"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
	"github.com/openwebui-exporter/openwebui_exporter/snapshot"
)

func main() {
	runs := flag.Int("n", 25, "number of wake-ups to measure (at least 20)")
	interval := flag.Duration("push-interval", time.Second, "--keda.push-interval")
	ttl := flag.Duration("cache-ttl", time.Minute, "--cache.ttl of the exporter (the push loop does not wait for it)")
	oldTTL := flag.Duration("old-cache-ttl", time.Minute, "cache TTL of the metrics-api comparison (computed)")
	oldPolling := flag.Duration("old-polling-interval", 120*time.Second, "KEDA pollingInterval of the metrics-api comparison (computed)")
	message := flag.Bool("message", false, "measure a message from an idle tab (admin mode, --activity.idle-timeout=15m) instead of an arrival")
	flag.Parse()
	if *runs < 20 {
		fmt.Fprintln(os.Stderr, "-n must be at least 20")
		os.Exit(2)
	}
	if err := run(*runs, *interval, *ttl, *oldTTL, *oldPolling, *message); err != nil {
		fmt.Fprintln(os.Stderr, "wakelatency:", err)
		os.Exit(1)
	}
}

func run(runs int, interval, ttl, oldTTL, oldPolling time.Duration, message bool) error {
	// Open WebUI: the fake, over loopback HTTP. Its clock runs in real time,
	// and jumps ahead when a tab is to go idle (-message).
	var offset atomic.Int64
	now := func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	fake := fakeopenwebui.New(fakeopenwebui.Config{Now: now, TabHeartbeats: message})
	role, mode := "user", openwebui.ModeUsage
	var policy *openwebui.IdlePolicy
	const idle = 15 * time.Minute
	if message {
		role, mode = "admin", openwebui.ModeAdmin
		policy, _ = openwebui.NewIdlePolicy(idle)
	}
	token := fake.IssueAPIKey(fake.AddUser("exporter", role))
	fake.SetActiveHumans(0)
	httpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	httpServer := &http.Server{Handler: fake, ReadHeaderTimeout: 5 * time.Second}
	go httpServer.Serve(httpLn)
	defer httpServer.Close()

	// The exporter, wired as main.go wires it.
	base, _ := url.Parse("http://" + httpLn.Addr().String())
	client := openwebui.NewClient(openwebui.Config{BaseURL: base, Token: func() (string, error) { return token, nil },
		Mode: mode, IdlePolicy: policy, Now: now})
	cache := snapshot.New(snapshot.Config{Fetch: client.Count, TTL: ttl, MaxStale: 2 * time.Minute, Timeout: 2500 * time.Millisecond})
	server, err := keda.ListenGRPC("127.0.0.1:0", keda.NewScaler(demand.New(cache, nil), interval, nil), nil)
	if err != nil {
		return err
	}
	go server.Serve()
	defer server.Shutdown(context.Background())

	// KEDA: one stream, as the external-push trigger holds it.
	conn, err := grpc.NewClient(server.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(runs)*(3*interval+10*time.Second))
	defer cancel()
	stream, err := pb.NewExternalScalerClient(conn).StreamIsActive(ctx, &pb.ScaledObjectRef{
		Name: "ollama", Namespace: "ai", ScalerMetadata: map[string]string{"scalerAddress": server.Addr().String()},
	})
	if err != nil {
		return err
	}
	recv := func(want bool) error {
		msg, err := stream.Recv()
		if err != nil {
			return err
		}
		if msg.GetResult() != want {
			return fmt.Errorf("stream said %v, want %v", msg.GetResult(), want)
		}
		return nil
	}
	if err := recv(false); err != nil { // the state right after the stream opens
		return fmt.Errorf("first message: %w", err)
	}
	goIdle := func() error { // (-message) the tab is open and idle past the timeout
		offset.Add(int64(idle))
		return recv(false)
	}
	if message {
		fake.SetActiveHumans(1) // opens the tab: an arrival
		if err := recv(true); err != nil {
			return fmt.Errorf("arrival: %w", err)
		}
		if err := goIdle(); err != nil {
			return fmt.Errorf("going idle: %w", err)
		}
		fake.SetOllamaDown(true)
		fmt.Printf("wake latency of a message from an idle tab (admin mode, --activity.idle-timeout=%s), external-push: push interval %s, cache TTL %s, %d runs, in-process fake Open WebUI over loopback\n", idle, interval, ttl, runs)
	} else {
		fmt.Printf("wake latency, external-push: push interval %s, cache TTL %s, %d runs, in-process fake Open WebUI over loopback\n", interval, ttl, runs)
	}
	var samples []time.Duration
	for i := range runs {
		time.Sleep(rand.N(interval)) // arrive at a random point of the cycle
		t0 := time.Now()
		if message {
			fake.Send("human-1")
		} else {
			fake.SetActiveHumans(1)
		}
		if err := recv(true); err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		d := time.Since(t0)
		samples = append(samples, d)
		fmt.Printf("  run %2d: %s\n", i+1, d.Round(time.Millisecond))
		if message {
			if err := goIdle(); err != nil {
				return fmt.Errorf("run %d, going idle: %w", i+1, err)
			}
			continue
		}
		fake.SetActiveHumans(0)
		if err := recv(false); err != nil {
			return fmt.Errorf("run %d, leaving: %w", i+1, err)
		}
	}
	if err := ctx.Err(); err != nil {
		return errors.New("ran out of time")
	}

	slices.Sort(samples)
	median := samples[len(samples)/2]
	if len(samples)%2 == 0 {
		median = (samples[len(samples)/2-1] + samples[len(samples)/2]) / 2
	}
	p99 := samples[(99*len(samples)+99)/100-1] // nearest rank: ceil(0.99 n)
	target := interval + 500*time.Millisecond
	verdict := "met"
	if p99 > target {
		verdict = "MISSED"
	}
	fmt.Printf("external-push (measured): median %s, p99 %s, max %s; target p99 <= push interval + 0.5s = %s: %s\n",
		median.Round(time.Millisecond), p99.Round(time.Millisecond), samples[len(samples)-1].Round(time.Millisecond), target, verdict)
	fmt.Printf("metrics-api (computed worst case, not measured): cache TTL %s + KEDA pollingInterval %s = %s\n",
		oldTTL, oldPolling, oldTTL+oldPolling)
	return nil
}
