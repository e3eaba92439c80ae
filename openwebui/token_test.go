//go:build linux

package openwebui_test

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// TestTokenFile: what each state of the file gives. A file that answers is
// the truth, errors included; a file that hangs gives the last good token,
// and only the first caller waits for it.
func TestTokenFile(t *testing.T) {
	const good, rotated = "sk-0123456789abcdef0123456789abcdef", "sk-ffffffffffffffffffffffffffffffff"
	path := filepath.Join(t.TempDir(), "token")
	f := openwebui.NewTokenFile(path, 100*time.Millisecond, nil)
	write := func(s string) {
		os.Remove(path)
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hang := func() {
		os.Remove(path)
		if err := syscall.Mkfifo(path, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		what    string
		state   func()
		want    string
		wantErr string
	}{
		{"missing (a Secret not mounted yet)", func() {}, "", "no such file or directory"},
		{"written", func() { write(good + "\n") }, good, ""},
		{"rotated in place", func() { write(rotated) }, rotated, ""},
		{"emptied: an error, not the last good token", func() { write("\n") }, "", "the token is empty"},
		{"fixed", func() { write(good) }, good, ""},
		{"a path to a large file by mistake: an error, not read whole", func() { write(strings.Repeat("x", 1<<20)) }, "", "is larger than 65536 bytes: not a token file"},
		{"fixed again", func() { write(good) }, good, ""},
		{"hangs: the last good token", hang, good, ""},
		{"still hangs", func() {}, good, ""},
	}
	for _, step := range steps {
		step.state()
		got, err := f.Token()
		if step.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), step.wantErr) {
				t.Fatalf("%s: got (%q, %v), want the error %q", step.what, got, err, step.wantErr)
			}
			continue
		}
		if err != nil || got != step.want {
			t.Fatalf("%s: got (%q, %v), want %q", step.what, got, err, step.want)
		}
	}
	// Release the hung reader; its result is used from then on.
	w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.WriteString(rotated); err != nil {
		t.Fatal(err)
	}
	w.Close()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		// Each call may start a new read of the FIFO, which then hangs
		// again: write the file back as a regular one.
		write(rotated)
		if got, err := f.Token(); err == nil && got == rotated {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the token file's reader did not recover after the FIFO answered")
		}
	}
}

// A fresh TokenFile on a hanging file has no token to fall back on: an
// error that says what the file does.
func TestTokenFileHangingFromTheStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "token")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if w, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			w.Close()
		}
	})
	f := openwebui.NewTokenFile(path, 50*time.Millisecond, nil)
	for range 3 {
		if _, err := f.Token(); err == nil || !strings.Contains(err.Error(), "reading "+path+" has not finished after") || !strings.Contains(err.Error(), "a FIFO without a writer, or a hung NFS or FUSE mount?") {
			t.Fatalf("err = %v, want one saying the read hangs", err)
		}
	}
}
