package cluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// Pinned versions; build-binaries.sh builds these (keep both in step).
const (
	kedaModule              = "github.com/kedacore/keda/v2"
	prometheusOperatorCRDs  = "github.com/prometheus-operator/prometheus-operator@v0.85.0"
	prometheusOperatorCRDir = "example/prometheus-operator-crd"
	// The chart can render cert-manager Certificates (the push trigger's TLS).
	certManagerCRDs = "github.com/cert-manager/cert-manager@v1.21.2"
)

// binaries are the control-plane programs, from build-binaries.sh.
type binaries struct {
	etcd, apiserver, kubectl, controllerManager, kedaOperator, kedaAdapter, kedaVersion string
}

// controlPlane is etcd + kube-apiserver + KEDA's operator on 127.0.0.1,
// and what scales a workload from 1 to N replicas: kube-controller-manager
// running only the HorizontalPodAutoscaler controller, and KEDA's metrics
// API server (the adapter) that serves it KEDA's values.
type controlPlane struct {
	bin         binaries
	dir         string
	kubeconfig  string
	apiURL      string  // https://127.0.0.1:PORT
	token       string  // a system:masters bearer token
	kubeVersion string  // the API server's, e.g. v1.36.3 (for helm --kube-version)
	procs       []*proc // in start order; stopped in reverse
}

// loadBinaries takes the binaries from CLUSTER_* variables, or runs
// build-binaries.sh (which reuses its cache) when they are not set.
func loadBinaries() (binaries, error) {
	vars := map[string]string{}
	names := []string{"CLUSTER_ETCD", "CLUSTER_KUBE_APISERVER", "CLUSTER_KUBECTL", "CLUSTER_KUBE_CONTROLLER_MANAGER",
		"CLUSTER_KEDA_OPERATOR", "CLUSTER_KEDA_ADAPTER", "CLUSTER_KEDA_VERSION"}
	missing := false
	for _, k := range names {
		vars[k] = os.Getenv(k)
		missing = missing || (vars[k] == "" && k != "CLUSTER_KEDA_VERSION")
	}
	if missing {
		fmt.Fprintln(os.Stderr, "cluster: CLUSTER_* binaries not set; running build-binaries.sh (reuses its cache)")
		cmd := exec.Command("./build-binaries.sh")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return binaries{}, fmt.Errorf("build-binaries.sh: %w", err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(line, "="); ok && strings.HasPrefix(k, "CLUSTER_") {
				vars[k] = v
			}
		}
	}
	b := binaries{etcd: vars["CLUSTER_ETCD"], apiserver: vars["CLUSTER_KUBE_APISERVER"], kubectl: vars["CLUSTER_KUBECTL"],
		controllerManager: vars["CLUSTER_KUBE_CONTROLLER_MANAGER"], kedaOperator: vars["CLUSTER_KEDA_OPERATOR"],
		kedaAdapter: vars["CLUSTER_KEDA_ADAPTER"], kedaVersion: vars["CLUSTER_KEDA_VERSION"]}
	for name, p := range map[string]string{"etcd": b.etcd, "kube-apiserver": b.apiserver, "kubectl": b.kubectl,
		"kube-controller-manager": b.controllerManager, "keda-operator": b.kedaOperator, "keda-adapter": b.kedaAdapter} {
		if fi, err := os.Stat(p); err != nil || fi.Mode()&0o111 == 0 {
			return b, fmt.Errorf("%s binary %q is missing or not executable: run test/cluster/build-binaries.sh", name, p)
		}
	}
	if b.kedaVersion == "" {
		return b, fmt.Errorf("CLUSTER_KEDA_VERSION is not set (build-binaries.sh prints it)")
	}
	return b, nil
}

// startControlPlane starts everything in dir. On error, what was started
// is already stopped.
func startControlPlane(bin binaries, dir string) (cp *controlPlane, err error) {
	cp = &controlPlane{bin: bin, dir: dir}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return cp, err
	}
	defer func() {
		if err != nil {
			cp.stop()
		}
	}()
	begin := time.Now()

	// etcd
	clientAddr, peerAddr := heldAddr(), heldAddr()
	etcd, err := cp.start("etcd", bin.etcd, nil,
		"--name=default", "--data-dir="+filepath.Join(dir, "etcd"),
		"--listen-client-urls=http://"+clientAddr, "--advertise-client-urls=http://"+clientAddr,
		"--listen-peer-urls=http://"+peerAddr, "--initial-advertise-peer-urls=http://"+peerAddr,
		"--initial-cluster=default=http://"+peerAddr, "--listen-metrics-urls=http://"+heldAddr(),
		"--log-level=warn", "--quota-backend-bytes=1073741824")
	if err != nil {
		return cp, err
	}
	if err := waitListening(etcd, clientAddr, 60*time.Second); err != nil {
		return cp, fmt.Errorf("etcd: %w", err)
	}

	// kube-apiserver: token auth (one system:masters token), RBAC, a
	// self-signed serving certificate in cert-dir.
	token := randomHex(16)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+`,cluster-suite,cluster-suite,"system:masters"`+"\n"), 0o600); err != nil {
		return cp, err
	}
	if err := writeServiceAccountKeys(dir); err != nil {
		return cp, err
	}
	// The aggregator's front proxy: it presents this client certificate to
	// an extension API server (KEDA's adapter), which then trusts the user
	// it names in X-Remote-User (the HPA controller's).
	frontProxy := filepath.Join(dir, "front-proxy")
	if err := writeCerts(frontProxy, "front-proxy-client"); err != nil {
		return cp, err
	}
	apiPort := heldPort()
	apiserver, err := cp.start("kube-apiserver", bin.apiserver, nil,
		"--etcd-servers=http://"+clientAddr, "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", apiPort), "--cert-dir="+filepath.Join(dir, "apiserver-certs"),
		"--token-auth-file="+filepath.Join(dir, "tokens.csv"), "--authorization-mode=RBAC",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file="+filepath.Join(dir, "sa.pub"),
		"--service-account-signing-key-file="+filepath.Join(dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24", "--enable-priority-and-fairness=false",
		"--requestheader-client-ca-file="+filepath.Join(frontProxy, "ca.crt"), "--requestheader-allowed-names=front-proxy-client",
		"--requestheader-username-headers=X-Remote-User", "--requestheader-group-headers=X-Remote-Group",
		"--requestheader-extra-headers-prefix=X-Remote-Extra-",
		"--proxy-client-cert-file="+filepath.Join(frontProxy, "tls.crt"), "--proxy-client-key-file="+filepath.Join(frontProxy, "tls.key"),
		"--v=0")
	if err != nil {
		return cp, err
	}
	cp.kubeconfig = filepath.Join(dir, "kubeconfig")
	cp.apiURL, cp.token = fmt.Sprintf("https://127.0.0.1:%d", apiPort), token
	kubeconfig := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: local
  cluster:
    server: https://127.0.0.1:%d
    insecure-skip-tls-verify: true
users:
- name: suite
  user:
    token: %s
contexts:
- name: local
  context: {cluster: local, user: suite}
current-context: local
`, apiPort, token)
	if err := os.WriteFile(cp.kubeconfig, []byte(kubeconfig), 0o600); err != nil {
		return cp, err
	}
	if err := poll(120*time.Second, 250*time.Millisecond, func() (bool, error) {
		if apiserver.exited() {
			return false, fmt.Errorf("kube-apiserver exited:\n%s", apiserver.tail(4000))
		}
		out, err := cp.kubectl(nil, "get", "--raw", "/readyz")
		return err == nil && strings.TrimSpace(out) == "ok", nil
	}); err != nil {
		return cp, fmt.Errorf("kube-apiserver not ready: %w", err)
	}
	ver, err := cp.kubectl(nil, "get", "--raw", "/version")
	if err != nil {
		return cp, err
	}
	var v struct{ GitVersion string }
	if err := json.Unmarshal([]byte(ver), &v); err != nil || v.GitVersion == "" {
		return cp, fmt.Errorf("kube-apiserver /version: %q %v", ver, err)
	}
	cp.kubeVersion = v.GitVersion
	fmt.Fprintf(os.Stderr, "cluster: etcd + kube-apiserver %s ready after %s\n", cp.kubeVersion, time.Since(begin).Round(time.Millisecond))

	// CRDs: KEDA's, prometheus-operator's and cert-manager's, from the module cache.
	kedaDir, err := moduleDir(kedaModule + "@v" + bin.kedaVersion)
	if err != nil {
		return cp, err
	}
	promOpDir, err := moduleDir(prometheusOperatorCRDs)
	if err != nil {
		return cp, err
	}
	certManagerDir, err := moduleDir(certManagerCRDs)
	if err != nil {
		return cp, err
	}
	crdFiles, _ := filepath.Glob(filepath.Join(kedaDir, "config/crd/bases/*.yaml"))
	for _, kind := range []string{"servicemonitors", "podmonitors", "prometheusrules"} {
		crdFiles = append(crdFiles, filepath.Join(promOpDir, prometheusOperatorCRDir, "monitoring.coreos.com_"+kind+".yaml"))
	}
	for _, kind := range []string{"certificates", "certificaterequests", "issuers", "clusterissuers"} {
		crdFiles = append(crdFiles, filepath.Join(certManagerDir, "deploy/crds/cert-manager.io_"+kind+".yaml"))
	}
	args := []string{"apply", "--server-side", "--field-manager=cluster-suite"}
	for _, f := range crdFiles {
		args = append(args, "-f", f)
	}
	if _, err := cp.kubectl(nil, args...); err != nil {
		return cp, fmt.Errorf("applying CRDs: %w", err)
	}
	if _, err := cp.kubectl(nil, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"); err != nil {
		return cp, fmt.Errorf("CRDs not established: %w", err)
	}
	if _, err := cp.kubectl(nil, "create", "namespace", "keda"); err != nil {
		return cp, err
	}

	// KEDA's operator, watching all namespaces.
	kedaCerts := filepath.Join(dir, "keda-certs")
	if err := writeKEDACerts(kedaCerts); err != nil {
		return cp, err
	}
	health, metricsService := heldAddr(), heldAddr()
	kedaEnv := []string{"KUBECONFIG=" + cp.kubeconfig, "KEDA_CLUSTER_OBJECT_NAMESPACE=keda", "POD_NAMESPACE=keda", "WATCH_NAMESPACE="}
	keda, err := cp.start("keda-operator", bin.kedaOperator, append(kedaEnv, "OPERATOR_NAME=keda-operator"),
		"--metrics-bind-address="+heldAddr(), "--health-probe-bind-address="+health,
		"--metrics-service-bind-address="+metricsService, "--cert-dir="+kedaCerts, "--ca-dir="+kedaCerts,
		"--enable-webhook-patching=false", "--enable-apiservice-patching=false", "--leader-elect=false",
		"--zap-log-level=info", "--zap-encoder=console")
	if err != nil {
		return cp, err
	}
	if err := poll(120*time.Second, 250*time.Millisecond, func() (bool, error) {
		if keda.exited() {
			return false, fmt.Errorf("keda-operator exited:\n%s", keda.tail(4000))
		}
		r, err := httpGet("http://" + health + "/readyz")
		return err == nil && r.status == 200, nil
	}); err != nil {
		return cp, fmt.Errorf("keda-operator not ready: %w", err)
	}
	if err := cp.startAutoscaling(kedaEnv, kedaCerts, metricsService); err != nil {
		return cp, err
	}
	fmt.Fprintf(os.Stderr, "cluster: control plane with KEDA %s operator and adapter, and the HPA controller, ready after %s\n", bin.kedaVersion, time.Since(begin).Round(time.Millisecond))
	return cp, nil
}

// hpaSyncPeriod is how often the HPA controller reconciles (15 s by
// default): short, so that 1 -> N follows the load within seconds.
const hpaSyncPeriod = time.Second

// startAutoscaling starts what scales a workload past one replica on a real
// cluster. KEDA's operator only scales between 0 and 1 (activation); from 1
// to N the HorizontalPodAutoscaler it creates for each ScaledObject does,
// reading KEDA's value through the external metrics API that KEDA's adapter
// serves, which asks the operator's metrics service (gRPC) for it.
//
// The API server reaches the adapter through an APIService whose Service is
// an ExternalName of 127.0.0.1 (there is no kube-proxy to route a ClusterIP).
// The aggregator proxies with its front-proxy client certificate and names
// the HPA controller's user in X-Remote-User; the adapter trusts that (it
// reads the front proxy's CA from kube-system/extension-apiserver-
// authentication) and asks the API server whether the user may read
// external metrics (a SubjectAccessReview): the suite's user may.
func (cp *controlPlane) startAutoscaling(kedaEnv []string, kedaCerts, metricsService string) error {
	adapterPort := heldPort()
	adapter, err := cp.start("keda-adapter", cp.bin.kedaAdapter, kedaEnv,
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", adapterPort), "--port=0",
		"--cert-dir="+kedaCerts, "--tls-cert-file="+filepath.Join(kedaCerts, "tls.crt"),
		"--tls-private-key-file="+filepath.Join(kedaCerts, "tls.key"),
		"--metrics-service-address="+metricsService,
		"--lister-kubeconfig="+cp.kubeconfig, "--authentication-kubeconfig="+cp.kubeconfig,
		"--authorization-kubeconfig="+cp.kubeconfig, "--zap-log-level=info", "--zap-encoder=console")
	if err != nil {
		return err
	}
	apiService := fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: keda-metrics-apiserver, namespace: keda}
spec:
  type: ExternalName
  externalName: 127.0.0.1
  ports: [{name: https, port: %d}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.external.metrics.k8s.io}
spec:
  service: {name: keda-metrics-apiserver, namespace: keda, port: %d}
  group: external.metrics.k8s.io
  version: v1beta1
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
`, adapterPort, adapterPort)
	if _, err := cp.kubectl([]byte(apiService), "apply", "--server-side", "--field-manager=cluster-suite", "-f", "-"); err != nil {
		return fmt.Errorf("registering KEDA's external metrics API: %w", err)
	}
	if err := poll(120*time.Second, 250*time.Millisecond, func() (bool, error) {
		if adapter.exited() {
			return false, fmt.Errorf("keda-adapter exited:\n%s", adapter.tail(4000))
		}
		_, err := cp.kubectl(nil, "get", "--raw", "/apis/external.metrics.k8s.io/v1beta1")
		return err == nil, nil
	}); err != nil {
		out, _ := cp.kubectl(nil, "get", "apiservice", "v1beta1.external.metrics.k8s.io", "-o", "jsonpath={.status.conditions}")
		return fmt.Errorf("KEDA's external metrics API not served: %w (APIService: %s)", err, out)
	}
	kcm, err := cp.start("kube-controller-manager", cp.bin.controllerManager, nil,
		"--kubeconfig="+cp.kubeconfig, "--controllers=horizontalpodautoscaling", "--leader-elect=false",
		"--bind-address=127.0.0.1", fmt.Sprintf("--secure-port=%d", heldPort()),
		"--horizontal-pod-autoscaler-sync-period="+hpaSyncPeriod.String(), "--v=1")
	if err != nil {
		return err
	}
	time.Sleep(time.Second)
	if kcm.exited() {
		return fmt.Errorf("kube-controller-manager exited:\n%s", kcm.tail(4000))
	}
	return nil
}

func (cp *controlPlane) start(name, bin string, env []string, args ...string) (*proc, error) {
	p, err := startProc(name, bin, env, args...)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "cluster: started %s (pid %d)\n", name, p.pid())
	cp.procs = append(cp.procs, p)
	return p, nil
}

// keda is the operator process (for its log).
func (cp *controlPlane) keda() *proc {
	for _, p := range cp.procs {
		if p.name == "keda-operator" {
			return p
		}
	}
	return nil
}

// stop stops every process in reverse start order and saves their logs.
func (cp *controlPlane) stop() {
	for i := len(cp.procs) - 1; i >= 0; i-- {
		p := cp.procs[i]
		p.stop()
		_ = os.WriteFile(filepath.Join(cp.dir, p.name+".log"), []byte(p.out.String()), 0o644)
		fmt.Fprintf(os.Stderr, "cluster: stopped %s (pid %d)\n", p.name, p.pid())
	}
	cp.procs = nil
}

// kubectl runs kubectl against the control plane.
func (cp *controlPlane) kubectl(stdin []byte, args ...string) (string, error) {
	return run([]string{"KUBECONFIG=" + cp.kubeconfig}, stdin, cp.bin.kubectl, append([]string{"--request-timeout=30s"}, args...)...)
}

// moduleDir downloads (or finds) a module in the module cache.
func moduleDir(modVersion string) (string, error) {
	out, err := run([]string{"GOFLAGS=-mod=mod"}, nil, "go", "mod", "download", "-json", modVersion)
	if err != nil {
		return "", fmt.Errorf("go mod download %s: %w", modVersion, err)
	}
	var m struct{ Dir, Error string }
	if err := json.Unmarshal([]byte(out), &m); err != nil || m.Dir == "" {
		return "", fmt.Errorf("go mod download %s: no directory (%v %s)", modVersion, err, m.Error)
	}
	return m.Dir, nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

// writeServiceAccountKeys writes the RSA pair that signs service account
// tokens (sa.key, sa.pub).
func writeServiceAccountKeys(dir string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "sa.key"), pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "sa.pub"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644)
}

// writeKEDACerts writes a CA and a serving certificate for keda-operator
// (tls.crt, tls.key, ca.crt, ca.key), which the operator insists on having
// for its gRPC server to the metrics adapter.
func writeKEDACerts(dir string) error {
	return writeCerts(dir, "keda-operator", "keda-operator", "keda-operator.keda", "keda-operator.keda.svc", "localhost")
}

// writeCerts writes a CA of its own and a certificate it signed for
// commonName (server and client use, for dnsNames and 127.0.0.1) into dir:
// ca.crt, ca.key, tls.crt, tls.key.
func writeCerts(dir, commonName string, dnsNames ...string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: commonName + "-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: commonName},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames:    dnsNames,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return err
	}
	files := map[string][]byte{
		"ca.crt":  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		"ca.key":  pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(caKey)}),
		"tls.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		"tls.key": pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return err
		}
	}
	return nil
}
