package gate

import (
	"io"
	"net/http"
	"testing"
)

func TestDialFailureReasons(t *testing.T) {
	// A real refused dial (nothing listens on port 1 of loopback) is a dial
	// failure the gate holds for; a failure after connecting is not.
	tr := NewTransport()
	req, _ := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/api/version", nil)
	res, err := tr.RoundTrip(req)
	if err == nil {
		res.Body.Close()
		t.Skip("something listens on 127.0.0.1:1")
	}
	if reason, ok := dialFailure(err); !ok || reason != "connection refused" {
		t.Errorf("dialFailure(%v) = %q, %v; want connection refused, true", err, reason, ok)
	}
	if _, ok := dialFailure(io.ErrUnexpectedEOF); ok {
		t.Error("an EOF after connecting counts as a dial failure")
	}
}
