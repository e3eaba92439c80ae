package fakeopenwebui

import (
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeclock"
)

// Clock is a settable clock that tests share between the fake Open WebUI and
// the exporter, so minutes can pass at once.
type Clock = fakeclock.Clock

// NewClock returns a Clock standing at t.
func NewClock(t time.Time) *Clock { return fakeclock.New(t) }
