package cluster

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The suite's shared state, set up once by TestMain.
var (
	cp            *controlPlane
	repoRoot      string // the exporter's repository (CLUSTER_REPO_ROOT, default ../..)
	exporterBin   string // the exporter, built from the root module (or CLUSTER_EXPORTER_BINARY)
	fakeBin       string // cmd/fakeopenwebui (or CLUSTER_FAKE_BINARY)
	fakeOllamaBin string // cmd/fakeollama, the stand-in Ollama (or CLUSTER_FAKEOLLAMA_BINARY)
	workDir       string
)

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runSuite(m))
}

func runSuite(m *testing.M) int {
	var err error
	repoRoot, err = filepath.Abs(envOr("CLUSTER_REPO_ROOT", "../.."))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	workDir, err = os.MkdirTemp("", "cluster-suite-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	keep := os.Getenv("CLUSTER_KEEP_DIR") != ""
	defer func() {
		if keep {
			fmt.Fprintf(os.Stderr, "cluster: logs and state kept in %s\n", workDir)
		} else {
			os.RemoveAll(workDir)
		}
	}()

	if exporterBin, err = buildOrEnv("CLUSTER_EXPORTER_BINARY", ".", "openwebui_exporter"); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	if fakeBin, err = buildOrEnv("CLUSTER_FAKE_BINARY", "./cmd/fakeopenwebui", "fakeopenwebui"); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	if fakeOllamaBin, err = buildOrEnv("CLUSTER_FAKEOLLAMA_BINARY", "./cmd/fakeollama", "fakeollama"); err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	bin, err := loadBinaries()
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster:", err)
		return 1
	}
	cp, err = startControlPlane(bin, filepath.Join(workDir, "controlplane"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cluster: starting the control plane:", err)
		keep = true
		return 1
	}
	// Stop the control plane on SIGINT/SIGTERM too (t.Cleanup does not run
	// then); Pdeathsig covers a SIGKILLed test binary.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			fmt.Fprintln(os.Stderr, "cluster: interrupted; stopping the control plane")
			cp.stop()
			os.Exit(130)
		case <-stopped:
		}
	}()

	code := m.Run()
	close(stopped)
	cp.stop()
	if code != 0 {
		keep = true
	}
	return code
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// buildOrEnv returns $envName if set, else builds pkg of the root module.
func buildOrEnv(envName, pkg, name string) (string, error) {
	if p := os.Getenv(envName); p != "" {
		return filepath.Abs(p)
	}
	out := filepath.Join(workDir, "bin", name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s (in %s): %w\n%s", pkg, repoRoot, err, b)
	}
	return out, nil
}

type httpResponse struct {
	status int
	body   string
}

var httpClient = &http.Client{Timeout: 5 * time.Second}

func httpGet(url string) (httpResponse, error) {
	resp, err := httpClient.Get(url)
	if err != nil {
		return httpResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return httpResponse{resp.StatusCode, string(b)}, err
}

func httpPost(url string) error {
	resp, err := httpClient.Post(url, "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s %s", url, resp.Status, strings.TrimSpace(string(b)))
	}
	return nil
}
