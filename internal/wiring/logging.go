package wiring

import (
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	sloggokit "github.com/tjhop/slog-gokit"
	"google.golang.org/grpc/grpclog"
)

// LogKeys are the keys every log line starts with, in this order, whoever
// wrote it: the exporter (go-kit), the exporter-toolkit (slog) or net/http.
var LogKeys = []string{"level", "ts", "caller", "msg"}

// NewLogger builds the logger of the exporter and the slog logger handed to
// the exporter-toolkit and net/http, and routes gRPC's log to the same place
// (call it before gRPC is used). One level filter governs both, and both
// write the same keys: "ts" (UTC, RFC 3339 with nanoseconds) and "caller"
// (file:line), where the slog bridge alone would write "time" (local zone)
// and "caller" in another order.
func NewLogger(w io.Writer, format, lvl string) (log.Logger, *slog.Logger, error) {
	var l log.Logger
	switch format {
	case "logfmt":
		l = log.NewLogfmtLogger(log.NewSyncWriter(w))
	case "json":
		l = log.NewJSONLogger(log.NewSyncWriter(w))
	default:
		return nil, nil, fmt.Errorf("log format %q: want logfmt or json", format)
	}
	var allow level.Option
	switch lvl {
	case "debug":
		allow = level.AllowDebug()
	case "info":
		allow = level.AllowInfo()
	case "warn":
		allow = level.AllowWarn()
	case "error":
		allow = level.AllowError()
	default:
		return nil, nil, fmt.Errorf("log level %q: want debug, info, warn or error", lvl)
	}
	filtered := level.NewFilter(l, allow)
	logger := log.With(filtered, "ts", log.DefaultTimestampUTC, "caller", log.DefaultCaller)
	bridge := slog.New(sloggokit.NewGoKitHandler(sameKeys{filtered}, slog.LevelDebug))
	// gRPC has one global logger; it must be set before gRPC is used.
	grpclog.SetLoggerV2(grpcLogger{filtered})
	return logger, bridge, nil
}

// sameKeys rewrites a line of the slog bridge to the exporter's keys and
// order: level, ts, caller, msg, then the rest.
type sameKeys struct{ next log.Logger }

func (s sameKeys) Log(keyvals ...any) error {
	var lvl, ts, caller, msg any
	rest := make([]any, 0, len(keyvals))
	for i := 0; i+1 < len(keyvals); i += 2 {
		switch k, v := fmt.Sprint(keyvals[i]), keyvals[i+1]; k {
		case "level":
			lvl = v
		case "time":
			if t, ok := v.(time.Time); ok {
				ts = t.UTC().Format(time.RFC3339Nano)
			}
		case "caller":
			caller = v
		case "msg":
			msg = v
		default:
			rest = append(rest, keyvals[i], v)
		}
	}
	if ts == nil {
		ts = time.Now().UTC().Format(time.RFC3339Nano)
	}
	if caller == nil {
		caller = "unknown"
	}
	return s.next.Log(append([]any{"level", lvl, "ts", ts, "caller", caller, "msg", msg}, rest...)...)
}
