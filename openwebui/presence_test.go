package openwebui_test

import (
	"context"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/openwebui"
)

// Which credential reads Open WebUI's DEFAULT_MODELS: an admin's (API key or
// JWT) from the admin config; any account's JWT from /api/config; an API key
// of a plain user nowhere (get_app_config does not decode API keys).
func TestDefaultModels(t *testing.T) {
	for _, tc := range []struct {
		name, role, cred, defaults string
		want                       []string
		wantErr                    string
	}{
		{"admin API key", "admin", "apikey", "llama3.1:8b, qwen3:32b", []string{"llama3.1:8b", "qwen3:32b"}, ""},
		{"admin JWT", "admin", "jwt", "llama3.1:8b", []string{"llama3.1:8b"}, ""},
		{"user JWT reads /api/config", "user", "jwt", "llama3.1:70b", []string{"llama3.1:70b"}, ""},
		{"none set", "admin", "apikey", "", nil, ""},
		{"user API key cannot read it", "user", "apikey", "llama3.1:8b", nil, "/api/v1/configs/models"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
			fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now, DefaultModels: tc.defaults})
			id := fake.AddUser("exporter", tc.role)
			token := fake.IssueAPIKey(id)
			if tc.cred == "jwt" {
				token = fake.IssueJWT(id)
			}
			client := newClient(t, fake, clock, openwebui.ModeUsage, func() string { return token })
			got, err := client.DefaultModels(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("got (%v, %v), want an error naming %s", got, err, tc.wantErr)
				}
				if strings.Contains(err.Error(), token) {
					t.Errorf("the error shows the token: %v", err)
				}
				return
			}
			if err != nil || !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got (%v, %v), want %v", got, err, tc.want)
			}
		})
	}
}

// Who is here: the ids of the latest admin-mode count, the exporter's own
// account left out; unknown in usage mode (a number, no ids).
func TestPresence(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mode   openwebui.Mode
		wantOK bool
	}{
		{"admin mode reads ids", openwebui.ModeAdmin, true},
		{"usage mode has none", openwebui.ModeUsage, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := fakeopenwebui.NewClock(time.Unix(1_785_000_000, 0))
			fake := fakeopenwebui.New(fakeopenwebui.Config{Version: "0.11.0", Now: clock.Now})
			role := "user"
			if tc.mode == openwebui.ModeAdmin {
				role = "admin"
			}
			key := fake.IssueAPIKey(fake.AddUser("exporter", role))
			alice, bob := fake.AddUser("alice", "user"), fake.AddUser("bob", "user")
			fake.Touch(alice)
			fake.Touch(bob)
			p := openwebui.NewPresence(newClient(t, fake, clock, tc.mode, func() string { return key }))
			if _, ok := p.Present(); ok {
				t.Fatal("Present is known before any count")
			}
			if _, err := p.Fetch(context.Background()); err != nil {
				t.Fatal(err)
			}
			ids, ok := p.Present()
			if ok != tc.wantOK {
				t.Fatalf("Present ok = %v, want %v", ok, tc.wantOK)
			}
			sort.Strings(ids)
			want := []string{alice, bob}
			sort.Strings(want)
			if ok && !reflect.DeepEqual(ids, want) {
				t.Errorf("Present = %v, want alice and bob %v (not the exporter)", ids, want)
			}
		})
	}
}
