package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// chatBody is the small non-streaming request: a one-chunk answer, no wait.
const chatBody = `{"model":"tiny:1b","messages":[{"role":"user","content":"hi"}],"stream":false,"options":{"num_predict":1}}`

// wrkScript makes wrk POST chatBody.
const wrkScript = `wrk.method = "POST"
wrk.body = '%s'
wrk.headers["Content-Type"] = "application/json"
`

type wrkResult struct {
	rps, p50, p99 float64 // requests/s, milliseconds
}

// runWrk loads url/api/chat with wrk and reads its --latency percentiles;
// any non-2xx answer or socket error fails the run.
func runWrk(dir, url string, threads, conns int, duration string) (wrkResult, error) {
	script := filepath.Join(dir, "chat.lua")
	if err := os.WriteFile(script, []byte(fmt.Sprintf(wrkScript, chatBody)), 0o644); err != nil {
		return wrkResult{}, err
	}
	out, err := exec.Command("wrk", "-t"+strconv.Itoa(threads), "-c"+strconv.Itoa(conns), "-d"+duration,
		"--latency", "-s", script, url+"/api/chat").CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w\n%s", url, err, out)
	}
	text := string(out)
	if strings.Contains(text, "Non-2xx") || strings.Contains(text, "Socket errors") {
		return wrkResult{}, fmt.Errorf("wrk %s: errors:\n%s", url, text)
	}
	var r wrkResult
	if r.rps, err = wrkField(text, `Requests/sec:\s+([0-9.]+)`); err != nil {
		return r, err
	}
	if r.p50, err = wrkLatency(text, "50%"); err != nil {
		return r, err
	}
	if r.p99, err = wrkLatency(text, "99%"); err != nil {
		return r, err
	}
	return r, nil
}

func wrkField(text, pattern string) (float64, error) {
	m := regexp.MustCompile(pattern).FindStringSubmatch(text)
	if m == nil {
		return 0, fmt.Errorf("wrk output without %s:\n%s", pattern, text)
	}
	return strconv.ParseFloat(m[1], 64)
}

// wrkLatency reads a line such as "     99%    2.10ms" as milliseconds.
func wrkLatency(text, pct string) (float64, error) {
	m := regexp.MustCompile(`(?m)^\s+` + regexp.QuoteMeta(pct) + `\s+([0-9.]+)(us|ms|s)\s*$`).FindStringSubmatch(text)
	if m == nil {
		return 0, fmt.Errorf("wrk output without the %s latency:\n%s", pct, text)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	switch m[2] {
	case "us":
		v /= 1000
	case "s":
		v *= 1000
	}
	return v, err
}
