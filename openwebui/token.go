package openwebui

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-kit/log"
	"github.com/go-kit/log/level"
)

// StaticToken returns a token source for a fixed credential (env TOKEN).
func StaticToken(token string) (func() (string, error), error) {
	token, err := checkToken(token)
	if err != nil {
		return nil, err
	}
	return func() (string, error) { return token, nil }, nil
}

// TokenReadTimeout bounds how long a caller waits for the token file. It is
// well under a second, so that /readyz answers within one whatever the file
// does, and leaves most of a fetch's timeout to Open WebUI.
const TokenReadTimeout = 500 * time.Millisecond

// TokenFile reads the token from a file on every call, so that a Kubernetes
// Secret rotated in place is used from the next fetch on.
//
// A read can block for ever: a FIFO without a writer, a hung NFS or FUSE
// mount. So the file is read by at most one goroutine at a time, callers wait
// for it at most TokenReadTimeout (and not at all once it is overdue), and
// while it hangs they get the last token that was read successfully. A hung
// read costs one goroutine and one OS thread, however often it is asked.
//
// A file that is missing or invalid is an error, also at start-up: the
// exporter starts anyway and /readyz answers 503 until the file is readable
// (a Secret may be mounted a moment late).
type TokenFile struct {
	path    string
	timeout time.Duration
	logger  log.Logger

	mu      sync.Mutex
	good    string        // the last token read successfully, "" if none
	lastErr error         // the error of the last completed read, nil if it succeeded
	reading chan struct{} // closed when the running read completes; nil when none runs
	since   time.Time     // when the running read started
	warned  bool          // the running read was logged as overdue
}

// NewTokenFile returns a TokenFile for path; it reads nothing yet. A timeout
// of 0 means TokenReadTimeout; logger may be nil.
func NewTokenFile(path string, timeout time.Duration, logger log.Logger) *TokenFile {
	if timeout <= 0 {
		timeout = TokenReadTimeout
	}
	if logger == nil {
		logger = log.NewNopLogger()
	}
	return &TokenFile{path: path, timeout: timeout, logger: logger}
}

// Token reads the file (or joins the read under way) and returns the token.
func (f *TokenFile) Token() (string, error) {
	f.mu.Lock()
	if f.reading == nil {
		f.reading, f.since, f.warned = make(chan struct{}), time.Now(), false
		go f.read(f.reading)
	}
	done, wait := f.reading, f.timeout-time.Since(f.since)
	f.mu.Unlock()

	if wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-done:
		case <-t.C:
		}
		t.Stop()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-done:
		if f.lastErr != nil {
			return "", f.lastErr
		}
		return f.good, nil
	default:
	}
	// Still reading, past the deadline.
	overdue := fmt.Errorf("reading %s has not finished after %s (a FIFO without a writer, or a hung NFS or FUSE mount?)", f.path, time.Since(f.since).Round(100*time.Millisecond))
	if !f.warned {
		f.warned = true
		if f.good != "" {
			level.Warn(f.logger).Log("msg", "the token file hangs; using the last token read from it until it answers", "err", overdue)
		} else {
			level.Warn(f.logger).Log("msg", "the token file hangs and no token was read from it yet", "err", overdue)
		}
	}
	if f.good != "" {
		return f.good, nil
	}
	return "", overdue
}

// maxTokenFileBytes bounds what is read of the token file: an API key is 35
// bytes and a JWT well under a kilobyte, while a path that names /dev/zero
// or a log file by mistake would otherwise be read whole into memory.
const maxTokenFileBytes = 64 << 10

// read runs in its own goroutine: it may never return.
func (f *TokenFile) read(done chan struct{}) {
	b, err := readAtMost(f.path, maxTokenFileBytes)
	var token string
	if err == nil {
		token, err = checkToken(string(b))
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if err != nil {
		f.lastErr = err
	} else {
		f.good, f.lastErr = token, nil
	}
	if f.warned {
		level.Info(f.logger).Log("msg", "the token file answers again", "ok", err == nil)
	}
	f.reading = nil
	close(done)
}

// utf8BOM is what Windows editors write before the text of a file.
const utf8BOM = "\uFEFF"

// checkToken trims surrounding white space (files end in a newline) and a
// leading byte-order mark, and rejects what cannot be a header value. Its
// errors never quote the token.
func checkToken(token string) (string, error) {
	token = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(token), utf8BOM))
	if token == "" {
		return "", errors.New("the token is empty")
	}
	if strings.HasPrefix(token, "Bearer ") {
		return "", errors.New(`the token starts with "Bearer ": give the token alone`)
	}
	for i := 0; i < len(token); {
		r, size := utf8.DecodeRuneInString(token[i:])
		switch {
		case r == ' ' || r == '\t' || r == '\n' || r == '\r':
			return "", fmt.Errorf("the token contains white space at byte %d: give one token alone", i)
		case r < 0x21 || r > 0x7e:
			// API keys are sk- and hex, JWTs base64url and dots: printable
			// ASCII. Anything else is an editor's or a copy's leftover (a
			// zero-width space, a non-breaking space, a control character)
			// that would make the token look like another one.
			what := fmt.Sprintf("U+%04X", r)
			if r == utf8.RuneError && size == 1 {
				what = fmt.Sprintf("byte 0x%02X, not UTF-8", token[i])
			}
			return "", fmt.Errorf("the token contains a non-printable or non-ASCII character (%s) at byte %d; a token is printable ASCII: check the file or variable for invisible characters", what, i)
		}
		i += size
	}
	return token, nil
}

// readAtMost reads the file, or fails if it is larger than limit bytes.
func readAtMost(path string, limit int64) ([]byte, error) {
	file, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	b, err := io.ReadAll(io.LimitReader(file, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a token file", path, limit)
	}
	return b, nil
}
