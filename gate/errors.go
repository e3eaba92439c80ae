package gate

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
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
	codeBadPath     = "gate_bad_path"
	codeHop         = "gate_hop_answered"
	codeTLS         = "gate_tls"
	// codeShuttingDown: the replica's drain ended before the request was
	// delivered (503) or answered (504).
	codeShuttingDown = "gate_shutting_down"
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

// tlsFailure reports whether err is TLS failing with the backend (the
// request was not sent), and names it.
func tlsFailure(err error) (reason string, ok bool) {
	var (
		verify   *tls.CertificateVerificationError
		header   tls.RecordHeaderError
		alert    tls.AlertError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
	)
	switch {
	case errors.As(err, &verify):
		return "TLS: " + verify.Err.Error(), true
	case errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &invalid):
		return "TLS: " + err.Error(), true
	case errors.As(err, &header), strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return "TLS: the server does not speak TLS (an https URL for a plain HTTP server?)", true
	case errors.As(err, &alert):
		return "TLS: the server refused the handshake: " + alert.Error(), true
	}
	return "", false
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}
