package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// procs are the processes the benchmark started; stopAll ends them.
var procs []*exec.Cmd

// start runs bin with args (and env added to the environment), its stderr
// into a log file under dir, and remembers it for stopAll.
func start(dir, name, bin string, env []string, args ...string) (*exec.Cmd, error) {
	logf, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	procs = append(procs, cmd)
	return cmd, nil
}

// stop ends one process with SIGTERM (SIGKILL after 5 s) and waits for it.
func stop(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil || cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func stopAll() {
	for i := len(procs) - 1; i >= 0; i-- {
		stop(procs[i])
	}
	procs = nil
}

// waitHTTP polls url until it answers 200 (and, if want is not empty, a
// body that contains want), 10 s at most.
func waitHTTP(url, want string) error {
	client := &http.Client{Timeout: time.Second}
	var last string
	for i := 0; i < 200; i++ {
		resp, err := client.Get(url)
		if err == nil {
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK && strings.Contains(string(body), want) {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("%s did not answer 200 %q within 10 s (last: %s)", url, want, last)
}

// nginxConf is nginx as a plain reverse proxy for streaming answers:
// no buffering either way, HTTP/1.1 and keep-alive to the upstream, every
// path it writes inside its own directory.
const nginxConf = `worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	client_body_temp_path %[1]s/body;
	proxy_temp_path %[1]s/proxy;
	fastcgi_temp_path %[1]s/fastcgi;
	uwsgi_temp_path %[1]s/uwsgi;
	scgi_temp_path %[1]s/scgi;
	upstream backend {
		%[3]s
		keepalive 64;
	}
	server {
		listen %[2]s;
		location / {
			proxy_pass http://backend;
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_buffering off;
			proxy_request_buffering off;
			proxy_read_timeout 1h;
		}
	}
}
`

// startNginx runs nginx in the foreground on listen, proxying to backends
// (round robin over several),
// with a config under dir; as root it drops to nobody first (nginx is
// not to run as root here).
func startNginx(dir, nginx, listen string, backends ...string) (*exec.Cmd, error) {
	servers := ""
	for _, b := range backends {
		servers += "server " + b + ";\n\t\t"
	}
	ndir := filepath.Join(dir, "nginx")
	if err := os.MkdirAll(ndir, 0o777); err != nil {
		return nil, fmt.Errorf("nginx directory: %w", err)
	}
	conf := filepath.Join(ndir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(fmt.Sprintf(nginxConf, ndir, listen, servers)), 0o644); err != nil {
		return nil, fmt.Errorf("nginx config: %w", err)
	}
	args := []string{"-p", ndir, "-c", conf, "-e", filepath.Join(ndir, "error.log"), "-g", "daemon off;"}
	bin := nginx
	if os.Geteuid() == 0 {
		// nobody must reach the directory: mktemp made its parent 0700.
		for d := ndir; d != "/" && d != "."; d = filepath.Dir(d) {
			if d == filepath.Dir(dir) {
				break
			}
			_ = os.Chmod(d, 0o777)
		}
		if err := os.Chown(ndir, 65534, 65534); err != nil {
			return nil, fmt.Errorf("nginx directory: %w", err)
		}
		_ = os.Chown(conf, 65534, 65534)
		args = append([]string{"--reuid=65534", "--regid=65534", "--clear-groups", nginx}, args...)
		bin = "setpriv"
	}
	return start(dir, "nginx", bin, nil, args...)
}
