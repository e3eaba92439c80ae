package binary

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
)

// TestThrottledOpenWebUI is issue 22's "done when", through the binary:
// Open WebUI at DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL=300 (its docs'
// production setting), one person with a tab open, the exporter in admin
// mode told or not, and in usage mode (the default) not told: 15 minutes of
// reads every 20 s (on the stand-in's clock) all answer 200 with that one
// person, never 0 and never the exporter; not told, it logs one warning
// naming the setting. (Told, usage mode refuses: TestBadConfigurationStopsStartup.)
func TestThrottledOpenWebUI(t *testing.T) {
	const interval = 300 * time.Second
	for _, tc := range []struct {
		mode string
		told bool
	}{{"admin", false}, {"admin", true}, {"usage", false}} {
		told := tc.told
		t.Run(fmt.Sprintf("%s/told=%v", tc.mode, told), func(t *testing.T) {
			clock := fakeopenwebui.NewClock(time.Now())
			fake := fakeopenwebui.New(fakeopenwebui.Config{Now: clock.Now, TabHeartbeats: true, StatusUpdateInterval: interval})
			role := "user"
			if tc.mode == "admin" {
				role = "admin"
			}
			token := fake.IssueAPIKey(fake.AddUser("exporter", role))
			fake.Touch(fake.AddUser("alice", "user"))
			srv := httptest.NewServer(fake)
			t.Cleanup(srv.Close)
			// The stand-in's clock jumps ahead of this host's: the hidden
			// --openwebui.max-clock-skew lets the exporter take its Date.
			args := []string{"--openwebui.count-mode=" + tc.mode, "--cache.ttl=0", "--cache.max-stale=0", "--openwebui.max-clock-skew=1h"}
			if told {
				args = append(args, "--openwebui.status-update-interval=300")
			}
			p := startExporter(t, []string{"API_URL=" + srv.URL, "TOKEN=" + token}, args...)
			client := &http.Client{Timeout: 10 * time.Second}
			for at := time.Duration(0); at <= 15*time.Minute; at += 20 * time.Second {
				if status, body := fetch(t, client, "http://"+p.addr+"/active_users"); status != http.StatusOK || body != `{"active_users":1}` {
					t.Fatalf("%s: %d %s, want 200 with alice", at, status, body)
				}
				clock.Advance(20 * time.Second)
			}
			_, metrics := fetch(t, client, "http://"+p.addr+"/metrics")
			// Usage mode times its hold with the exporter's own clock, which
			// this test cannot compress: its interval is tested in package
			// openwebui, on one clock.
			if tc.mode == "admin" && !strings.Contains(metrics, "\nopenwebui_activity_write_interval_seconds 300\n") {
				t.Errorf("openwebui_activity_write_interval_seconds is not 300:\n%s\n%s", metrics, p.output)
			}
			warnings := 0
			for _, line := range strings.Split(p.output.String(), "\n") {
				if strings.HasPrefix(line, "level=warn") && strings.Contains(line, "DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL") {
					warnings++
				}
			}
			switch {
			case told && warnings != 0:
				t.Errorf("told, it warned:\n%s", p.output)
			case !told && tc.mode == "admin" && (warnings != 1 || !strings.Contains(p.output.String(), "seen=5m0s")):
				t.Errorf("not told: want one warning with seen=5m0s:\n%s", p.output)
			case !told && warnings != 1:
				t.Errorf("not told: want one warning:\n%s", p.output)
			}
		})
	}
}
