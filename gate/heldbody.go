package gate

import (
	"errors"
	"fmt"
	"io"
	"sync"
)

// heldBody is a held request's body in memory: a list of chunks, never one
// slice grown by doubling (whose copies took a 200 MiB chunked body to
// 530 MiB, issue 23). Without a Content-Length the chunks grow from 4 KiB to
// 1 MiB, and the last one is trimmed, so a body takes about its own size.
type heldBody struct {
	chunks [][]byte
	size   int64
}

const (
	firstHeldChunk = 4 << 10
	maxHeldChunk   = 1 << 20
)

// readHeldBody reads r to its end. length is the request's Content-Length
// (-1: unknown); reserve is asked before every byte of an unknown length is
// kept, and its refusal ends the read with errTooLarge.
func readHeldBody(r io.Reader, length int64, reserve func(n int64) bool) (*heldBody, error) {
	hb := &heldBody{}
	var cur []byte // the last chunk, filled up to its capacity
	for {
		if len(cur) == cap(cur) {
			cur = make([]byte, 0, hb.nextChunk(length))
			hb.chunks = append(hb.chunks, nil)
		}
		n, err := r.Read(cur[len(cur):cap(cur)])
		if n > 0 {
			if length < 0 && !reserve(int64(n)) {
				return nil, errTooLarge
			}
			cur = cur[:len(cur)+n]
			hb.chunks[len(hb.chunks)-1] = cur
			hb.size += int64(n)
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
	}
	if length >= 0 && hb.size != length {
		return nil, fmt.Errorf("the body has %d bytes, its Content-Length says %d: %w", hb.size, length, io.ErrUnexpectedEOF)
	}
	if last := len(hb.chunks) - 1; last >= 0 && cap(cur)-len(cur) > len(cur)/8 {
		// Let go of the unused end (an exact copy: append would round up).
		hb.chunks[last] = make([]byte, len(cur))
		copy(hb.chunks[last], cur)
		if len(cur) == 0 {
			hb.chunks = hb.chunks[:last]
		}
	}
	return hb, nil
}

// nextChunk is the capacity of the next chunk: what is left of a known
// length, else double the last chunk, within [firstHeldChunk, maxHeldChunk].
func (hb *heldBody) nextChunk(length int64) int {
	if length >= 0 {
		// One more byte than what is left: the read that finds the end
		// needs room to run into.
		return int(min(length-hb.size+1, maxHeldChunk))
	}
	if len(hb.chunks) == 0 {
		return firstHeldChunk
	}
	return min(2*cap(hb.chunks[len(hb.chunks)-1]), maxHeldChunk)
}

// reader reads the body from its start, and calls sent (once) when the last
// byte has been read. The chunks stay: a request that a hop answered for its
// sleeping backend is sent again, body and all.
func (hb *heldBody) reader(sent func()) io.Reader {
	return &heldBodyReader{chunks: hb.chunks, left: hb.size, sent: sent}
}

type heldBodyReader struct {
	chunks [][]byte // what is left to read: the body's own, never changed
	off    int      // read of chunks[0]
	left   int64
	once   sync.Once
	sent   func()
}

func (r *heldBodyReader) Read(p []byte) (int, error) {
	var n int
	for n < len(p) && len(r.chunks) > 0 {
		c := copy(p[n:], r.chunks[0][r.off:])
		n += c
		if r.off += c; r.off == len(r.chunks[0]) {
			r.chunks, r.off = r.chunks[1:], 0
		}
	}
	r.left -= int64(n)
	// A reader that wraps this one (a LimitReader) may stop at the length
	// and never ask for the EOF: the last byte read is the end too.
	if r.left == 0 {
		r.once.Do(r.sent)
		if n == 0 {
			return 0, io.EOF
		}
	}
	return n, nil
}
