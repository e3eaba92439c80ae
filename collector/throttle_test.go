package collector_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

const helpWriteInterval = "# HELP openwebui_activity_write_interval_seconds The interval of Open WebUI's activity-write throttle (DATABASE_USER_ACTIVE_STATUS_UPDATE_INTERVAL) the count assumed: --openwebui.status-update-interval, or what the exporter saw of its own writes if longer (3600 while it sees the throttle but cannot measure it). Admin mode counts users written within 180 s plus this; usage mode, only once it saw a throttle, answers its largest count of the last 180 s plus this. Cached for up to 1m.\n# TYPE openwebui_activity_write_interval_seconds gauge\n"

// openwebui_activity_write_interval_seconds is what admin mode assumed of
// Open WebUI's write throttle (issue 22): 0 without one; 3600 once it sees
// one it was not told of (its own stamp did not move with its request),
// until it has measured it. Usage mode shows it only once its own account
// was inactive right after its own request (T > 180 s): at 240 s.
func TestActivityWriteIntervalExposition(t *testing.T) {
	cases := []struct {
		name     string
		interval time.Duration
		mode     openwebui.Mode
		want     []string // after each fetch, a TTL apart; "" absent
	}{
		{"admin, no throttle", 0, openwebui.ModeAdmin, []string{"0", "0", "0"}},
		{"admin, T=300 not told", 300 * time.Second, openwebui.ModeAdmin, []string{"0", "3600", "3600"}},
		{"usage, no throttle", 0, openwebui.ModeUsage, []string{"", "", "", "", ""}},
		{"usage, T=300 not told", 300 * time.Second, openwebui.ModeUsage, []string{"", "", "", "", "3600"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			role := "user"
			if tc.mode == openwebui.ModeAdmin {
				role = "admin"
			}
			s := newSetup(t, options{role: role, mode: tc.mode, humans: 1,
				fake: fakeopenwebui.Config{StatusUpdateInterval: tc.interval}})
			for i, want := range tc.want {
				if i > 0 {
					s.clock.Advance(ttl)
				}
				expect := ""
				if want != "" {
					expect = helpWriteInterval + fmt.Sprintf("openwebui_activity_write_interval_seconds %s\n", want)
				}
				if err := testutil.CollectAndCompare(s.metrics, strings.NewReader(expect), "openwebui_activity_write_interval_seconds"); err != nil {
					t.Errorf("fetch %d: %v", i+1, err)
				}
			}
		})
	}
}
