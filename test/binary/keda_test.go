package binary

import (
	"context"
	"errors"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/openwebui-exporter/openwebui_exporter/internal/fakeopenwebui"
	"github.com/openwebui-exporter/openwebui_exporter/internal/harness"
	pb "github.com/openwebui-exporter/openwebui_exporter/keda/externalscaler"
)

// TestKEDASIGTERM runs the binary with the gRPC server on: a push stream
// says true for the one active human, and SIGTERM ends it cleanly and lets
// the process exit 0.
func TestKEDASIGTERM(t *testing.T) {
	bin := exporterBinary(t)
	fake := fakeopenwebui.New(fakeopenwebui.Config{})
	token := fake.IssueAPIKey(fake.AddUser("exporter", "user"))
	fake.SetActiveHumans(1)
	upstream := httptest.NewServer(fake)
	defer upstream.Close()

	grpcAddr := harness.HeldAddr()
	cmd := exec.Command(bin, "--web.listen-address="+harness.HeldAddr(), "--keda.listen-address="+grpcAddr, "--keda.push-interval=200ms")
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "API_URL=" + upstream.URL, "TOKEN=" + token}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	cmd.Stdout, cmd.Stderr = logFile, logFile
	logs := func() string { b, _ := os.ReadFile(logFile.Name()); return string(b) }
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		cmd.Process.Kill()
		<-exited
	}()

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// WaitForReady: the process may not listen yet.
	stream, err := pb.NewExternalScalerClient(conn).StreamIsActive(ctx, &pb.ScaledObjectRef{Name: "ollama", Namespace: "ai"}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if msg, err := stream.Recv(); err != nil || !msg.GetResult() {
		t.Fatalf("first message: %v, %v; want true", msg, err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
		t.Errorf("stream after SIGTERM: %v, want a clean end (io.EOF)", err)
	}
	select {
	case err := <-exited:
		exited <- err // for the deferred Kill
		if err != nil {
			t.Errorf("exit after SIGTERM: %v\n%s", err, logs())
		}
	case <-ctx.Done():
		t.Fatalf("no exit after SIGTERM:\n%s", logs())
	}
}
