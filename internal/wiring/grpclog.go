package wiring

import (
	"fmt"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
	"google.golang.org/grpc/grpclog"
)

// grpcLogger writes gRPC's own log lines (KEDA's connections to the external
// scaler: failed TLS handshakes, broken transports) with the exporter's keys.
// gRPC's informational lines are debug lines here: at the default level they
// stay as silent as with gRPC's default logger, and --log.level=debug shows
// them when a KEDA connection needs explaining.
type grpcLogger struct{ next log.Logger }

func (g grpcLogger) log(lvl func(log.Logger) log.Logger, msg string) {
	lvl(g.next).Log("ts", time.Now().UTC().Format(time.RFC3339Nano), "caller", grpcCaller(), "msg", strings.TrimRight(msg, "\n"))
}

func (g grpcLogger) Info(args ...any)   { g.log(level.Debug, fmt.Sprint(args...)) }
func (g grpcLogger) Infoln(args ...any) { g.log(level.Debug, fmt.Sprintln(args...)) }
func (g grpcLogger) Infof(format string, args ...any) {
	g.log(level.Debug, fmt.Sprintf(format, args...))
}
func (g grpcLogger) Warning(args ...any)   { g.log(level.Warn, fmt.Sprint(args...)) }
func (g grpcLogger) Warningln(args ...any) { g.log(level.Warn, fmt.Sprintln(args...)) }
func (g grpcLogger) Warningf(format string, args ...any) {
	g.log(level.Warn, fmt.Sprintf(format, args...))
}
func (g grpcLogger) Error(args ...any)   { g.log(level.Error, fmt.Sprint(args...)) }
func (g grpcLogger) Errorln(args ...any) { g.log(level.Error, fmt.Sprintln(args...)) }
func (g grpcLogger) Errorf(format string, args ...any) {
	g.log(level.Error, fmt.Sprintf(format, args...))
}

// gRPC's Fatal must not return (grpclog.LoggerV2).
func (g grpcLogger) Fatal(args ...any)   { g.Error(args...); exit() }
func (g grpcLogger) Fatalln(args ...any) { g.Errorln(args...); exit() }
func (g grpcLogger) Fatalf(format string, args ...any) {
	g.Errorf(format, args...)
	exit()
}

// V reports whether verbose lines of level l are wanted: none beyond 0.
func (g grpcLogger) V(l int) bool { return l <= 0 }

var exit = func() { panic("grpc: fatal error (see the log line before)") }

// grpcCaller is the file:line in gRPC that logged, past grpclog's wrappers.
func grpcCaller() string {
	pcs := make([]uintptr, 16)
	frames := runtime.CallersFrames(pcs[:runtime.Callers(3, pcs)])
	for {
		f, more := frames.Next()
		if !strings.Contains(f.Function, "grpclog") && !strings.Contains(f.Function, "/internal/wiring.") &&
			!strings.Contains(f.Function, "internal/channelz.") && f.File != "" {
			return filepath.Base(f.File) + ":" + strconv.Itoa(f.Line)
		}
		if !more {
			return "grpc"
		}
	}
}

var _ grpclog.LoggerV2 = grpcLogger{}
