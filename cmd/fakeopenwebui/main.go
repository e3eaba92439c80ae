// Command fakeopenwebui runs the fake Open WebUI server of
// internal/fakeopenwebui as a process, for demos and end-to-end tests.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3000", "address to listen on")
	version := flag.String("version", "0.11.0", "Open WebUI version to model")
	humans := flag.Int("humans", 2, "number of initially active human users (kept active by a 30 s heartbeat)")
	token := flag.String("token", "sk-0123456789abcdef0123456789abcdef", "credential of the 'exporter' account (sk-... = API key, else JWT)")
	admin := flag.Bool("admin", false, "give the 'exporter' account the admin role")
	publicCount := flag.Bool("public-count", true, "ENABLE_PUBLIC_ACTIVE_USERS_COUNT (0.6.42+)")
	analytics := flag.Bool("admin-analytics", true, "ENABLE_ADMIN_ANALYTICS (0.8.0+): GET /api/v1/analytics/users")
	chatAccess := flag.Bool("admin-chat-access", true, "ENABLE_ADMIN_CHAT_ACCESS: GET /api/v1/chats/list/user/{user_id}")
	interval := flag.Duration("status-update-interval", 0, "DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL: last_active_at is written at most once per interval per process and user (0: every request)")
	processes := flag.Int("processes", 1, "Open WebUI processes sharing the database, each with its own write throttle; requests go to them in turn")
	flag.Parse()
	if *interval < 0 || *processes < 1 {
		log.Fatal("-status-update-interval must not be negative, -processes must be at least 1")
	}
	cfg := fakeopenwebui.Config{Version: *version, PublicActiveUsersCountDisabled: !*publicCount,
		DisableAdminAnalytics: !*analytics, DisableAdminChatAccess: !*chatAccess,
		StatusUpdateInterval: *interval, Processes: *processes}
	if err := run(*listen, cfg, *humans, *token, *admin); err != nil {
		log.Fatal(err)
	}
}

func run(listen string, cfg fakeopenwebui.Config, humans int, token string, admin bool) error {
	version := cfg.Version
	fake := fakeopenwebui.New(cfg)
	role := "user"
	if admin {
		role = "admin"
	}
	fake.RegisterToken(fake.AddUser("exporter", role), token)
	fake.SetActiveHumans(humans)

	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	kind := "API key"
	if !strings.HasPrefix(token, "sk-") {
		kind = "JWT"
	}
	base := "http://" + ln.Addr().String()
	log.Printf("fake Open WebUI %s listening on %s; account 'exporter' (%s, %s %s); %d active humans; "+
		"try: curl -H 'Authorization: Bearer %s' %s/api/usage; control: curl -X POST '%s/_fake/humans?active=0'; a chat message: curl -X POST '%s/_fake/send?name=alice'",
		version, base, role, kind, token, humans, token, base, base, base)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go fake.HeartbeatEvery(ctx, 30*time.Second) // an idle open tab sends a socket heartbeat every 30 s

	srv := &http.Server{Handler: fake, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
