package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"syscall"
)

// Error codes of the OpenAI-shaped errors (the "code" field); Ollama-shaped
// errors carry only the message.
const (
	codeHoldTimeout = "gate_hold_timeout"
	codeTooMany     = "gate_too_many_held"
	codeTooLarge    = "gate_held_bytes"
	codeProxy       = "gate_proxy_error"
	codeNotFound    = "gate_not_found"
	codeLearning    = "gate_learning"
)

// writeError answers in the backend's own error shape, so that Open WebUI shows
// the message as written: paths under /v1/ get OpenAI's
// {"error":{"message","type","code"}}, every other path Ollama's {"error":"..."}.
func writeError(w http.ResponseWriter, backendPath string, status int, code, msg string) {
	var body []byte
	if isOpenAIPath(backendPath) {
		body, _ = json.Marshal(map[string]any{"error": map[string]any{
			"message": msg,
			"type":    errorType(status),
			"code":    code,
		}})
	} else {
		body, _ = json.Marshal(map[string]string{"error": msg})
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("X-Gate-Error", code)
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

func isOpenAIPath(p string) bool { return p == "/v1" || strings.HasPrefix(p, "/v1/") }

func errorType(status int) string {
	switch status {
	case http.StatusNotFound:
		return "invalid_request_error"
	default:
		return "server_error"
	}
}

// dialFailure reports whether err is a failure to connect (nothing of the
// request can have been sent), and names it the way the gate reports it.
func dialFailure(err error) (reason string, ok bool) {
	var op *net.OpError
	if !errors.As(err, &op) || op.Op != "dial" {
		return "", false
	}
	return dialReason(err), true
}

func dialReason(err error) string {
	var dns *net.DNSError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.As(err, &dns) && dns.IsNotFound:
		return "no such host"
	case errors.As(err, &dns):
		return "name lookup failed: " + dns.Err
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return "dial timeout"
	case errors.Is(err, syscall.EHOSTUNREACH):
		return "no route to host"
	case errors.Is(err, syscall.ENETUNREACH):
		return "network unreachable"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	}
	return "connect failed: " + err.Error()
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// resetMessage says why a request whose connections were closed before it
// was read is not sent again: too many tries, or a body too large to keep.
func resetMessage(name string, tries int, tooLarge bool) string {
	if tooLarge {
		return fmt.Sprintf("gate: backend %q closed the connection before it read the request, and the body was over %d KiB, more than the gate keeps to send it again", name, replayLimit>>10)
	}
	return fmt.Sprintf("gate: backend %q closed %d connections before it read the request (a listen backlog too small for the burst?); the request was not answered", name, tries)
}
