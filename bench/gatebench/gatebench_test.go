package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const wrkOutput = `Running 5s test @ http://127.0.0.1:19401/api/chat
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.02ms    2.10ms  40.00ms   95.00%
  Latency Distribution
     50%  450.00us
     75%  800.00us
     90%    1.20ms
     99%    1.50s
  60000 requests in 5.00s, 20.00MB read
Requests/sec:  12000.50
Transfer/sec:      4.00MB
`

func TestWrkParsing(t *testing.T) {
	for _, tc := range []struct {
		pct  string
		want float64 // ms
	}{
		{"50%", 0.45},
		{"90%", 1.2},
		{"99%", 1500},
	} {
		got, err := wrkLatency(wrkOutput, tc.pct)
		if err != nil || got != tc.want {
			t.Errorf("wrkLatency(%s) = %v, %v; want %v", tc.pct, got, err, tc.want)
		}
	}
	if _, err := wrkLatency(wrkOutput, "99.9%"); err == nil {
		t.Error("a missing percentile gave no error")
	}
	if rps, err := wrkField(wrkOutput, `Requests/sec:\s+([0-9.]+)`); err != nil || rps != 12000.5 {
		t.Errorf("requests/s = %v, %v; want 12000.5", rps, err)
	}
}

func TestPercentileAndMedian(t *testing.T) {
	ms := func(ns ...int) []time.Duration {
		var d []time.Duration
		for _, n := range ns {
			d = append(d, time.Duration(n)*time.Millisecond)
		}
		return d
	}
	for _, tc := range []struct {
		xs   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 99, 7 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{ms(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 10, 1 * time.Millisecond},
	} {
		if got := percentile(tc.xs, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.xs, tc.p, got, tc.want)
		}
	}
	for _, tc := range []struct {
		xs   []float64
		want float64
	}{
		{nil, 0},
		{[]float64{3, 1, 2}, 2},
		{[]float64{4, 1, 3, 2}, 2.5},
	} {
		if got := median(tc.xs); got != tc.want {
			t.Errorf("median(%v) = %v, want %v", tc.xs, got, tc.want)
		}
	}
}

func TestReadArrivals(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		wantChats  int
		wantErr    bool
	}{
		{"ready then chats", "1000 ready\n1500 POST /api/chat\n2000 POST /api/chat\n", 2, false},
		{"a chat logged before ready", "900 POST /api/chat\n1000 ready\n", 1, false},
		{"no ready line", "1500 POST /api/chat\n", 0, true},
		{"not a number", "soon ready\n", 0, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, tc.name)
			if err := os.WriteFile(path, []byte(tc.text), 0o644); err != nil {
				t.Fatal(err)
			}
			ready, chats, err := readArrivals(path)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v, want an error: %v", err, tc.wantErr)
			}
			if err == nil && (ready != time.Unix(0, 1000) || len(chats) != tc.wantChats) {
				t.Errorf("ready %v, %d chats; want 1000 ns, %d", ready, len(chats), tc.wantChats)
			}
		})
	}
}

// The table's ratios: of what each proxy adds on latency rows, of the values
// on the throughput row, "–" where what one adds is not above 0.
func TestTableRatios(t *testing.T) {
	tb := newTable([]target{{"direct", ""}, {"gate", ""}, {"go-proxy", ""}, {"nginx", ""}})
	for _, v := range []struct {
		row    string
		target string
		value  float64
	}{
		{"p50 (ms)", "direct", 1}, {"p50 (ms)", "gate", 3}, {"p50 (ms)", "go-proxy", 2}, {"p50 (ms)", "nginx", 1.5},
		{"rate, req/s", "direct", 1000}, {"rate, req/s", "gate", 300}, {"rate, req/s", "go-proxy", 400}, {"rate, req/s", "nginx", 600},
		{"p99 (ms)", "direct", 5}, {"p99 (ms)", "gate", 6}, {"p99 (ms)", "go-proxy", 4}, {"p99 (ms)", "nginx", 7},
	} {
		tb.add(v.row, v.target, v.value)
	}
	var out strings.Builder
	tb.write(&out)
	for _, want := range []string{
		"| median over runs | direct | gate | go-proxy | nginx | gate added | go-proxy added | nginx added | gate / nginx | go-proxy / nginx | gate / go-proxy |",
		"| p50 (ms) | 1.000 | 3.000 | 2.000 | 1.500 | +2.000 | +1.000 | +0.500 | 4.00 | 2.00 | 2.00 |",
		"| rate, req/s | 1000.000 | 300.000 | 400.000 | 600.000 | -700.000 | -600.000 | -400.000 | 0.50 | 0.67 | 0.75 |",
		"| p99 (ms) | 5.000 | 6.000 | 4.000 | 7.000 | +1.000 | -1.000 | +2.000 | 0.50 | – | – |",
	} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("table lacks the line\n%s\ngot:\n%s", want, out.String())
		}
	}
}
