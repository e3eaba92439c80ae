package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"github.com/prometheus/exporter-toolkit/web"
)

// reloadOnSIGHUP re-reads what can change without a restart, each time the
// process gets SIGHUP, and keeps serving. Without it SIGHUP would end the
// process at once (exit 129, no graceful shutdown).
//
//   - The token file: read now, so that a rotation shows in the log at once
//     (it is re-read on every fetch anyway). Env TOKEN cannot change.
//   - The web config: exporter-toolkit v0.20.0 re-reads the file itself, on
//     every request (basic-auth users, headers) and on every new TLS
//     connection (TLS settings, certificates); here it is only validated, so
//     that a broken edit is logged now rather than on the next request. What
//     it reads once at start-up (whether TLS is on, HTTP/2, rate_limit)
//     needs a restart.
//
// The handler is installed before it returns, so that no SIGHUP after it
// ends the process; the reloads run in a goroutine until ctx ends.
func reloadOnSIGHUP(ctx context.Context, token func() (string, error), tokenFromFile bool, webConfigFile string, logger log.Logger) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go reload(ctx, hup, token, tokenFromFile, webConfigFile, logger)
}

func reload(ctx context.Context, hup chan os.Signal, token func() (string, error), tokenFromFile bool, webConfigFile string, logger log.Logger) {
	defer signal.Stop(hup)
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
		}
		kv := []any{"msg", "SIGHUP: re-read the configuration"}
		if tokenFromFile {
			if _, err := token(); err != nil {
				kv = append(kv, "token_file", "not readable", "token_err", err)
			} else {
				kv = append(kv, "token_file", "ok")
			}
		} else {
			kv = append(kv, "token", "from env TOKEN, which needs a restart to change")
		}
		if webConfigFile != "" {
			if err := web.Validate(webConfigFile); err != nil {
				kv = append(kv, "web_config", "invalid", "web_config_err", err)
			} else {
				kv = append(kv, "web_config", "ok (TLS on/off, HTTP/2 and rate_limit need a restart)")
			}
		}
		level.Info(logger).Log(kv...)
	}
}
