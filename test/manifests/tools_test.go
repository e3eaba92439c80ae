package manifests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// repoRoot is the exporter's repository, two levels up from this module.
var repoRoot = func() string {
	abs, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		panic(err)
	}
	return abs
}()

// The binaries the tests run: from $HELM, $KUSTOMIZE and $EXPORTER (what
// .ci/chart.sh passes, cached builds), or built here from the repository's
// pinned modfiles.
var bins struct {
	helm, kustomize, exporter string
}

// exporterFlags are the exporter's long flag names, from --help-long;
// repeatable names the flags that may be given more than once.
var exporterFlags, repeatable map[string]bool

// gateInBinary: the exporter has the wake gate's flags (--gate.listen-address).
// Until gateflags.go is merged, a build of main lacks them: the gate's flags
// are then the only ones not checked against --help-long.
var gateInBinary bool

var helpFlagRE = regexp.MustCompile(`(?m)^\s+(?:-\w, )?--(\[no-\])?([a-z0-9][a-z0-9.\-]*)(=\S*)?( \.\.\.)?`)

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "manifests-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := 1
	if err := learnTools(dir); err != nil {
		fmt.Fprintln(os.Stderr, "setup:", err)
	} else {
		code = m.Run()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func learnTools(dir string) error {
	var err error
	if bins.helm, err = binary(dir, "HELM", "helm", "-modfile=tools/helm.mod", "helm.sh/helm/v3/cmd/helm"); err != nil {
		return err
	}
	if bins.kustomize, err = binary(dir, "KUSTOMIZE", "kustomize", "-modfile=tools/kustomize.mod", "sigs.k8s.io/kustomize/kustomize/v5"); err != nil {
		return err
	}
	if bins.exporter, err = binary(dir, "EXPORTER", "openwebui_exporter", "."); err != nil {
		return err
	}
	help, err := exec.Command(bins.exporter, "--help-long").CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s --help-long: %w\n%s", bins.exporter, err, help)
	}
	exporterFlags, repeatable = map[string]bool{}, map[string]bool{}
	for _, m := range helpFlagRE.FindAllStringSubmatch(string(help), -1) {
		exporterFlags[m[2]] = true
		if m[1] != "" {
			exporterFlags["no-"+m[2]] = true
		}
		if m[4] != "" {
			repeatable[m[2]] = true
		}
	}
	gateInBinary = exporterFlags["gate.listen-address"]
	if !gateInBinary {
		fmt.Fprintf(os.Stderr, "NOTE: %s --help-long lists no --gate.* flags (the gate is not merged into this build): the chart's and examples' gate flags are not checked against it\n", bins.exporter)
	}
	if !exporterFlags["openwebui.token-file"] || !exporterFlags["web.config.file"] {
		return fmt.Errorf("--help-long lists no --openwebui.token-file or --web.config.file: the pattern no longer matches\n%s", help)
	}
	return nil
}

// binary returns $env, or builds the package from the repository root.
func binary(dir, env, name string, buildArgs ...string) (string, error) {
	if p := os.Getenv(env); p != "" {
		return p, nil
	}
	out := filepath.Join(dir, name)
	args := append([]string{"build", "-o", out}, buildArgs...)
	cmd := exec.Command("go", args...)
	cmd.Dir = repoRoot
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go %s (set $%s to skip the build): %w\n%s", strings.Join(args, " "), env, err, b)
	}
	return out, nil
}

// run runs a binary and returns its stdout; stderr goes into the error.
func run(bin string, args ...string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Dir = repoRoot
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %w\n%s%s", filepath.Base(bin), strings.Join(args, " "), err, stderr.Bytes(), stdout.Bytes())
	}
	return stdout.Bytes(), nil
}
