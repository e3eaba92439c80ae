package gate

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"testing"
)

// A held body comes back byte for byte, whatever its size and framing, as
// often as it is sent, and calls sent once at its last byte.
func TestHeldBodyRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{1, firstHeldChunk - 1, firstHeldChunk, firstHeldChunk + 1, 3*maxHeldChunk + 7} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.IntN(256))
		}
		for _, framing := range []struct {
			name   string
			length int64
		}{{"Content-Length", int64(size)}, {"chunked", -1}} {
			var reserved int64
			hb, err := readHeldBody(io.LimitReader(bytes.NewReader(data), int64(size)), framing.length, func(n int64) bool { reserved += n; return true })
			if err != nil {
				t.Fatalf("%d bytes, %s: %v", size, framing.name, err)
			}
			if framing.length < 0 && reserved != int64(size) {
				t.Errorf("%d bytes, %s: reserved %d", size, framing.name, reserved)
			}
			var kept int
			for _, c := range hb.chunks {
				kept += cap(c)
			}
			if kept > size+size/8+1 {
				t.Errorf("%d bytes, %s: %d bytes kept in %d chunks, want about the size", size, framing.name, kept, len(hb.chunks))
			}
			sent := 0
			got, err := io.ReadAll(iotestOneByte(hb.reader(func() { sent++ }), size))
			if err != nil || !bytes.Equal(got, data) {
				t.Errorf("%d bytes, %s: read back %d bytes (%v), want the body unchanged", size, framing.name, len(got), err)
			}
			if sent != 1 {
				t.Errorf("%d bytes, %s: sent called %d times, want once", size, framing.name, sent)
			}
			// Sent again (a hop answered for the sleeping backend): the same bytes.
			if again, err := io.ReadAll(hb.reader(func() {})); err != nil || !bytes.Equal(again, data) {
				t.Errorf("%d bytes, %s: read a second time: %d bytes (%v), want the body unchanged", size, framing.name, len(again), err)
			}
		}
	}
}

// iotestOneByte reads small bodies a byte at a time (every boundary) and
// large ones in 32 KiB reads, like the transport.
func iotestOneByte(r io.Reader, size int) io.Reader {
	if size > 64<<10 {
		return r
	}
	return oneByte{r}
}

type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	return o.r.Read(p[:1])
}

func TestHeldBodyRefusals(t *testing.T) {
	if _, err := readHeldBody(bytes.NewReader(make([]byte, 100)), -1, func(int64) bool { return false }); !errors.Is(err, errTooLarge) {
		t.Errorf("a refused reservation: %v, want errTooLarge", err)
	}
	if _, err := readHeldBody(bytes.NewReader(make([]byte, 10)), 20, func(int64) bool { return true }); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("a body shorter than its Content-Length: %v, want io.ErrUnexpectedEOF", err)
	}
}
