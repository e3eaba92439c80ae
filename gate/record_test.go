package gate

import (
	"bytes"
	"io"
	"runtime"
	"testing"
)

// A direct pass records what the transport takes of the client's body until
// the status line (a hop may answer instead). The recording must take about
// the body's size, as a held body does (heldbody.go): a slice grown by append
// reallocates and copies, and leaves up to as much again unused and
// uncounted by --gate.max-held-bytes.
func TestARecordedBodyTakesAboutItsSize(t *testing.T) {
	const size = 32 << 20
	body := bytes.Repeat([]byte("x"), size)
	var reserved int
	tb := &trackingBody{r: bytes.NewReader(body)}
	tb.record(func(n int) bool { reserved += n; return true }, func(n int) { reserved -= n })

	buf := make([]byte, 32<<10) // the transport's copy buffer
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{tb}, buf); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if reserved != size {
		t.Errorf("reserved %d bytes, want %d", reserved, size)
	}
	// What the recording keeps: its bytes and the last chunk's room.
	var kept int
	for _, c := range tb.rec.chunks {
		kept += cap(c)
	}
	if kept > size+size/8 {
		t.Errorf("recording a %d MiB body keeps %d MiB, want about its size", size>>20, kept>>20)
	}
	// What it allocated on the way (an appended slice's copies: 164 MiB
	// for this body), with room for whatever else the process allocates
	// meanwhile.
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > size+size/2 {
		t.Errorf("recording a %d MiB body allocated %d MiB, want about its size", size>>20, alloc>>20)
	}
	rec, ok := tb.takeReplay()
	if !ok {
		t.Fatal("no replay")
	}
	got, err := io.ReadAll(replayBody(rec.reader(func() {}), io.NopCloser(bytes.NewReader(nil))))
	if err != nil || !bytes.Equal(got, body) {
		t.Errorf("the replay gave %d bytes (err %v), want the %d recorded", len(got), err, size)
	}
	if reserved != 0 {
		t.Errorf("%d bytes still reserved after the replay was taken", reserved)
	}
}
