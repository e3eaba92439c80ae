package collector_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

const helpEngaged = "# HELP openwebui_engaged_users Active users who arrived or wrote a chat message within --activity.idle-timeout, not counting the exporter's own account; what KEDA scales by. Only with the idle-tab policy on; absent while the count is unknown. Cached for up to 1m.\n# TYPE openwebui_engaged_users gauge\n"

// With the idle-tab policy on, openwebui_active_users keeps Open WebUI's
// definition and openwebui_engaged_users shows who counts for KEDA; the gap
// between them is GPU time saved. Unknown is still absent, never 0.
func TestEngagedUsersExposition(t *testing.T) {
	s := newSetup(t, options{role: "admin", mode: openwebui.ModeAdmin, humans: 3, idle: 15 * time.Minute,
		fake: fakeopenwebui.Config{TabHeartbeats: true}})
	expect := func(active, engaged int) string {
		return helpActive + fmt.Sprintf("openwebui_active_users %d\n", active) +
			helpEngaged + fmt.Sprintf("openwebui_engaged_users %d\n", engaged) + helpUp + "openwebui_up 1\n"
	}
	steps := []struct {
		name string
		do   func()
		want string
	}{
		{"two open Open WebUI", func() { s.activate(2) }, expect(2, 2)},
		{"their tabs idle past the timeout", func() {
			// Scraped every TTL: a gap of over 180 s without a fetch
			// would count everybody as just arrived.
			for range 15 {
				s.clock.Advance(ttl)
				testutil.CollectAndCount(s.metrics)
			}
		}, expect(2, 0)},
		{"one of them writes", func() { s.clock.Advance(ttl); s.fake.Send("human-1") }, expect(2, 1)},
		{"Open WebUI fails", func() {
			s.fake.SetOverride(func(w http.ResponseWriter, _ *http.Request) { http.Error(w, "bad gateway", http.StatusBadGateway) })
			s.clock.Advance(ttl)
		}, expectUnknown},
	}
	for _, st := range steps {
		st.do()
		if err := testutil.CollectAndCompare(s.metrics, strings.NewReader(st.want),
			"openwebui_up", "openwebui_active_users", "openwebui_engaged_users"); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
}

// With the policy off (the default), there is no openwebui_engaged_users.
func TestNoEngagedUsersWithThePolicyOff(t *testing.T) {
	for _, mode := range []openwebui.Mode{openwebui.ModeUsage, openwebui.ModeAdmin} {
		s := newSetup(t, options{role: "admin", mode: mode, humans: 2})
		s.activate(2)
		if err := testutil.CollectAndCompare(s.metrics, strings.NewReader(expectCount(2)),
			"openwebui_up", "openwebui_active_users", "openwebui_engaged_users"); err != nil {
			t.Errorf("%s mode: %v", mode, err)
		}
	}
}
