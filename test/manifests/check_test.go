package manifests

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"path"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	cmv1 "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	kedav1alpha1 "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"golang.org/x/crypto/bcrypt"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	sigsyaml "sigs.k8s.io/yaml"
)

// expect is what a rendering must contain: the set-up it was asked for.
type expect struct {
	namespace    string            // of every object
	trigger      string            // the ScaledObject's trigger type; "" for none
	basicAuth    bool              // the exporter requires basic auth
	webTLS       bool              // the exporter serves HTTPS
	grpcTLS      bool              // the push trigger uses mutual TLS
	minReplicas  int32             // of the exporter
	external     map[string]bool   // Secrets the user creates, referenced but not rendered
	extraKinds   []string          // kinds beyond Deployment, Service and ScaledObject that must be there
	flags        map[string]string // exporter flags that must have these values
	gate         bool              // the wake gate is on (--gate.listen-address)
	backends     []string          // the gate's named backends, in flag order; nil: the one unnamed backend
	targetValues map[string]string // backend -> the targetValue of its ScaledObject's trigger (a pool's is its parallel); nil: not checked
	scaleDown    map[string]int32  // backend -> its HPA's scale-down stabilization (spec.advanced); 0: none set
}

// setup indexes a rendering by kind and name.
type setup struct {
	objs []Decoded
}

func (s setup) all(kind string) []Decoded {
	var out []Decoded
	for _, o := range s.objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (s setup) get(kind, name string) metav1Object {
	for _, o := range s.objs {
		if o.Kind == kind && o.Obj.GetName() == name {
			return o.Obj
		}
	}
	return nil
}

type metav1Object = interface {
	GetName() string
	GetNamespace() string
	GetLabels() map[string]string
}

// secretKey returns a rendered Secret's key; ok is false when the Secret is
// the user's (external) and so cannot be read here.
func (s setup) secretKey(t *testing.T, want expect, where, name, key string) (value string, ok bool) {
	t.Helper()
	sec, _ := s.get("Secret", name).(*corev1.Secret)
	if sec == nil {
		if !want.external[name] && !s.certManagerSecret(name) {
			t.Errorf("%s: Secret %q is neither rendered, nor issued by a rendered Certificate, nor one the user creates", where, name)
		}
		return "", false
	}
	if v, found := sec.StringData[key]; found {
		return v, true
	}
	if v, found := sec.Data[key]; found {
		return string(v), true
	}
	t.Errorf("%s: Secret %s has no key %q", where, name, key)
	return "", false
}

func (s setup) certManagerSecret(name string) bool {
	for _, c := range s.all("Certificate") {
		if c.Obj.(*cmv1.Certificate).Spec.SecretName == name {
			return true
		}
	}
	return false
}

// flags parses a container's args: every one must be a --flag of the
// exporter, given once unless repeatable.
func flags(t *testing.T, where string, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			t.Errorf("%s: argument %q is not a --long flag", where, a)
			continue
		}
		name, value, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		switch {
		case exporterFlags[name]:
		case strings.HasPrefix(name, "gate.") && !gateInBinary:
			// The binary predates the gate (gateflags.go not merged yet):
			// only the gate's flags go unchecked, and TestMain says so.
		default:
			t.Errorf("%s: %q is not a flag of the exporter (see --help-long)", where, a)
		}
		if _, dup := out[name]; dup && !repeatable[name] && !(name == "gate.backend" && !gateInBinary) {
			t.Errorf("%s: --%s given twice: the exporter refuses to start", where, name)
		}
		out[name] = value
	}
	return out
}

// fileSecret resolves a file path in a container to the Secret and key it is
// mounted from. A subPath mount is an error: the kubelet never updates it.
func fileSecret(t *testing.T, where string, pod corev1.PodSpec, c corev1.Container, file string) (secret, key string) {
	t.Helper()
	for _, m := range c.VolumeMounts {
		if path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		if m.SubPath != "" {
			t.Errorf("%s: %s is mounted with subPath: a rotated Secret never reaches the exporter", where, file)
		}
		for _, v := range pod.Volumes {
			if v.Name == m.Name {
				if v.Secret == nil {
					t.Errorf("%s: volume %s holding %s is not a Secret", where, v.Name, file)
					return "", ""
				}
				for _, item := range v.Secret.Items {
					if item.Path == path.Base(file) {
						return v.Secret.SecretName, item.Key
					}
				}
				return v.Secret.SecretName, path.Base(file)
			}
		}
		t.Errorf("%s: volumeMount %s has no volume", where, m.Name)
		return "", ""
	}
	t.Errorf("%s: no volumeMount holds %s", where, file)
	return "", ""
}

// checkSetup checks that a rendering is a complete, consistent set-up: the
// exporter's flags exist, its files come from Secrets, the Service, the
// ServiceMonitor and the KEDA trigger point at each other, and credentials
// on both sides match.
func checkSetup(t *testing.T, s setup, want expect) {
	t.Helper()
	for _, o := range s.objs {
		if ns := o.Obj.GetNamespace(); ns != want.namespace {
			t.Errorf("%s: namespace %q, want %q (a ScaledObject must sit next to its workload; Secrets next to their users)", o, ns, want.namespace)
		}
	}
	for _, kind := range want.extraKinds {
		if len(s.all(kind)) == 0 {
			t.Errorf("no %s rendered", kind)
		}
	}

	// The exporter.
	deps := s.all("Deployment")
	if len(deps) != 1 {
		t.Fatalf("want one Deployment (the exporter), found %d", len(deps))
	}
	dep := deps[0].Obj.(*appsv1.Deployment)
	where := deps[0].String()
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		t.Fatalf("%s: want one container, found %d", where, len(pod.Containers))
	}
	c := pod.Containers[0]
	f := flags(t, where, c.Args)
	for name, value := range want.flags {
		if got, ok := f[name]; !ok || got != value {
			t.Errorf("%s: --%s=%q, want %q", where, name, got, value)
		}
	}
	checkNames(t, s)
	if version, err := os.ReadFile(repoRoot + "/VERSION"); err != nil {
		t.Error(err)
	} else if want := "ghcr.io/openwebui-exporter/openwebui_exporter:" + strings.TrimSpace(string(version)); c.Image != want {
		t.Errorf("%s: image %s, want %s (VERSION)", where, c.Image, want)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < want.minReplicas {
		t.Errorf("%s: replicas %v, want at least %d", where, dep.Spec.Replicas, want.minReplicas)
	}
	sel, err := metav1LabelSelector(dep.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not select its pods' labels %v (%v)", where, dep.Spec.Selector, dep.Spec.Template.Labels, err)
	}
	for _, e := range c.Env {
		if e.Name == "TOKEN" || e.Name == "API_URL" {
			t.Errorf("%s: env %s: the token comes from a mounted file, the URL from --openwebui.url", where, e.Name)
		}
	}
	if u, err := url.Parse(f["openwebui.url"]); err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		t.Errorf("%s: --openwebui.url=%q is not an http(s) URL", where, f["openwebui.url"])
	}
	if tf := f["openwebui.token-file"]; tf == "" {
		t.Errorf("%s: no --openwebui.token-file", where)
	} else if name, key := fileSecret(t, where, pod, c, tf); name != "" {
		if tok, ok := s.secretKey(t, want, where+" token file", name, key); ok && !strings.HasPrefix(tok, "sk-") {
			t.Errorf("%s: the token Secret %s holds %q, want an API key (sk-...)", where, name, tok)
		}
	}
	checkSecurity(t, where, pod, c)

	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	listen := ":8080"
	if v, ok := f["web.listen-address"]; ok {
		listen = v
	}
	if _, port, err := net.SplitHostPort(listen); err != nil || port != strconv.Itoa(int(ports["http"])) {
		t.Errorf("%s: --web.listen-address=%s, but the container port named http is %d", where, listen, ports["http"])
	}

	// The web config: basic auth and TLS on the HTTP port.
	var webUsers map[string]string
	webTLS := false
	if wc := f["web.config.file"]; wc != "" {
		name, key := fileSecret(t, where, pod, c, wc)
		if raw, ok := s.secretKey(t, want, where+" web config", name, key); ok {
			var cfg struct {
				TLS *struct {
					CertFile string `json:"cert_file"`
					KeyFile  string `json:"key_file"`
				} `json:"tls_server_config"`
				Users map[string]string `json:"basic_auth_users"`
			}
			if err := sigsyaml.UnmarshalStrict([]byte(raw), &cfg); err != nil {
				t.Errorf("%s: web config: %v", where, err)
			}
			webUsers = cfg.Users
			if cfg.TLS != nil {
				webTLS = true
				for _, file := range []string{cfg.TLS.CertFile, cfg.TLS.KeyFile} {
					fileSecret(t, where+" web TLS", pod, c, file)
				}
			}
		}
	}
	if (len(webUsers) > 0) != want.basicAuth {
		t.Errorf("%s: basic auth users %v, want basic auth %v", where, keys(webUsers), want.basicAuth)
	}
	if webTLS != want.webTLS {
		t.Errorf("%s: HTTPS %v, want %v", where, webTLS, want.webTLS)
	}
	webProbes := []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe}
	if want.gate {
		webProbes = webProbes[:1] // readiness is the gate's (checkGate)
	}
	for _, probe := range webProbes {
		switch {
		case probe == nil:
			t.Errorf("%s: a probe is missing", where)
		case probe.HTTPGet != nil && want.basicAuth:
			t.Errorf("%s: httpGet probe on %s: basic auth answers it with 401", where, probe.HTTPGet.Path)
		case probe.HTTPGet != nil && (probe.HTTPGet.Scheme == corev1.URISchemeHTTPS) != want.webTLS:
			t.Errorf("%s: probe scheme %s, want HTTPS %v", where, probe.HTTPGet.Scheme, want.webTLS)
		case probe.HTTPGet != nil && probe.HTTPGet.Port.String() != "http":
			t.Errorf("%s: probe port %s, want http", where, probe.HTTPGet.Port.String())
		}
	}
	login := func(where, user, password string) {
		t.Helper()
		hash, ok := webUsers[user]
		if !ok {
			t.Errorf("%s: user %q is not in the web config's basic_auth_users %v", where, user, keys(webUsers))
			return
		}
		if err := bcrypt.CompareHashAndPassword([]byte(hash), []byte(password)); err != nil {
			t.Errorf("%s: the password of %q does not match its bcrypt hash in the web config: %v", where, user, err)
		}
	}

	// The Service.
	// The exporter's Service is the one with the http port; the gate's are
	// checked in checkGate.
	var svcs []Decoded
	for _, d := range s.all("Service") {
		for _, p := range d.Obj.(*corev1.Service).Spec.Ports {
			if p.Name == "http" {
				svcs = append(svcs, d)
				break
			}
		}
	}
	if len(svcs) != 1 {
		t.Fatalf("want one Service with a port named http (the exporter's), found %d", len(svcs))
	}
	svc := svcs[0].Obj.(*corev1.Service)
	svcPorts := map[string]corev1.ServicePort{}
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) {
		t.Errorf("%s: selector %v does not select the exporter's pods %v", svcs[0], svc.Spec.Selector, dep.Spec.Template.Labels)
	}
	for _, p := range svc.Spec.Ports {
		svcPorts[p.Name] = p
		if !targets(p.TargetPort, c.Ports) {
			t.Errorf("%s: port %s targets %s, which is no container port", svcs[0], p.Name, p.TargetPort.String())
		}
	}
	if _, ok := svcPorts["http"]; !ok {
		t.Errorf("%s: no port named http", svcs[0])
	}
	svcHost := svc.Name + "." + svc.Namespace + ".svc"

	// Certificates: issued by a rendered Issuer or one the user names, and
	// valid for the name the clients connect to.
	serverCertSecret := ""
	if cf := f["keda.tls.cert-file"]; cf != "" {
		serverCertSecret, _ = fileSecret(t, where, pod, c, cf)
	}
	for _, d := range s.all("Certificate") {
		cert := d.Obj.(*cmv1.Certificate)
		ref := cert.Spec.IssuerRef
		if (ref.Kind == "" || ref.Kind == "Issuer") && s.get("Issuer", ref.Name) == nil && !want.external["Issuer/"+ref.Name] {
			t.Errorf("%s: issuerRef %s is not rendered", d, ref.Name)
		}
		if slices.Contains(cert.Spec.Usages, cmv1.UsageServerAuth) && !slices.Contains(cert.Spec.DNSNames, svcHost) {
			t.Errorf("%s: server certificate without DNS name %s, which clients connect to", d, svcHost)
		}
	}

	// The ServiceMonitor scrapes the Service's http port, logging in if needed.
	for _, d := range s.all("ServiceMonitor") {
		sm := d.Obj.(*monitoringv1.ServiceMonitor)
		smSel, err := metav1LabelSelector(&sm.Spec.Selector)
		if err != nil || !smSel.Matches(labels.Set(svc.Labels)) {
			t.Errorf("%s: selector %v does not select the Service's labels %v", d, sm.Spec.Selector, svc.Labels)
		}
		if ns := sm.Spec.NamespaceSelector; !ns.Any && len(ns.MatchNames) > 0 && !slices.Contains(ns.MatchNames, svc.Namespace) {
			t.Errorf("%s: namespaceSelector %v leaves out the Service's namespace %s", d, ns.MatchNames, svc.Namespace)
		}
		if len(sm.Spec.Endpoints) == 0 {
			t.Errorf("%s: no endpoints", d)
		}
		for _, e := range sm.Spec.Endpoints {
			if _, ok := svcPorts[e.Port]; !ok || e.Port == "" {
				t.Errorf("%s: endpoint port %q is not a port name of the Service", d, e.Port)
			}
			if e.Path != "" && e.Path != "/metrics" {
				t.Errorf("%s: path %q, want /metrics", d, e.Path)
			}
			scheme := ""
			if e.Scheme != nil {
				scheme = strings.ToLower(string(*e.Scheme))
			}
			if (scheme == "https") != want.webTLS {
				t.Errorf("%s: scheme %q, want HTTPS %v", d, scheme, want.webTLS)
			}
			if want.webTLS {
				if e.TLSConfig == nil || e.TLSConfig.CA.Secret == nil {
					t.Errorf("%s: HTTPS without a CA to trust", d)
				} else {
					s.secretKey(t, want, d.String()+" tlsConfig.ca", e.TLSConfig.CA.Secret.Name, e.TLSConfig.CA.Secret.Key)
					if sn := e.TLSConfig.ServerName; sn == nil || *sn != svcHost {
						t.Errorf("%s: tlsConfig.serverName %v, want %s (a DNS name of the certificate)", d, sn, svcHost)
					}
				}
			}
			if want.basicAuth {
				if e.BasicAuth == nil {
					t.Errorf("%s: no basicAuth, but the exporter requires it", d)
					continue
				}
				user, ok1 := s.secretKey(t, want, d.String()+" basicAuth", e.BasicAuth.Username.Name, e.BasicAuth.Username.Key)
				pass, ok2 := s.secretKey(t, want, d.String()+" basicAuth", e.BasicAuth.Password.Name, e.BasicAuth.Password.Key)
				if ok1 && ok2 {
					login(d.String(), user, pass)
				}
			} else if e.BasicAuth != nil {
				t.Errorf("%s: basicAuth set, but the exporter has no users", d)
			}
		}
	}

	// The alerts' job label is the Service's name (the ServiceMonitor default).
	for _, d := range s.all("PrometheusRule") {
		rule := d.Obj.(*monitoringv1.PrometheusRule)
		found := false
		for _, g := range rule.Spec.Groups {
			for _, r := range g.Rules {
				if strings.Contains(r.Expr.String(), `up{job="`+svc.Name+`"} == 0`) && strings.Contains(r.Expr.String(), `absent(up{job="`+svc.Name+`"})`) {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("%s: no exporter-down alert on up{job=%q}", d, svc.Name)
		}
		checkGateAlerts(t, d.String(), rule, want.gate)
	}

	// The dashboard is the one of examples/grafana.
	for _, d := range s.all("ConfigMap") {
		cm := d.Obj.(*corev1.ConfigMap)
		for key, body := range cm.Data {
			if !strings.HasSuffix(key, ".json") {
				continue
			}
			want, err := os.ReadFile(repoRoot + "/examples/grafana/" + key)
			if err != nil {
				t.Errorf("%s: %s: %v", d, key, err)
			} else if !jsonEqual(t, []byte(body), want) {
				t.Errorf("%s: %s differs from examples/grafana/%s", d, key, key)
			}
		}
	}

	// KEDA.
	sos := s.all("ScaledObject")
	if want.trigger == "" {
		if len(sos) != 0 {
			t.Errorf("want no ScaledObject, found %d", len(sos))
		}
		checkNothingDangles(t, s)
		checkGate(t, s, want, dep, f)
		checkPDBs(t, s, want, dep)
		return
	}
	wantSOs := max(1, len(want.backends))
	if len(sos) != wantSOs {
		t.Fatalf("want %d ScaledObject(s), one per gate backend, found %d", wantSOs, len(sos))
	}
	scaledTargets := map[string]string{}
	scaledBackends := map[string]string{}
	for _, d := range sos {
		so := d.Obj.(*kedav1alpha1.ScaledObject)
		sow := d.String()
		if ref := so.Spec.ScaleTargetRef; ref != nil {
			key := ref.Kind + "/" + ref.Name
			if other, dup := scaledTargets[key]; dup {
				t.Errorf("%s: scaleTargetRef %s is also %s's: KEDA allows one ScaledObject per workload", sow, key, other)
			}
			scaledTargets[key] = sow
		}
		if so.Spec.ScaleTargetRef == nil || so.Spec.ScaleTargetRef.Name == "" {
			t.Errorf("%s: no scaleTargetRef", sow)
		}
		if fb := so.Spec.Fallback; fb == nil || fb.FailureThreshold < 1 || fb.Replicas < 1 {
			t.Errorf("%s: fallback %+v, want failureThreshold and replicas >= 1: without it KEDA freezes scaling while the count is unknown", sow, so.Spec.Fallback)
		}
		if len(so.Spec.Triggers) == 0 || so.Spec.Triggers[0].Type != want.trigger {
			t.Fatalf("%s: want %s as the first trigger, found %+v", sow, want.trigger, so.Spec.Triggers)
		}
		tr := so.Spec.Triggers[0]
		md := tr.Metadata
		backend := triggerBackend(t, sow, tr)
		if other, dup := scaledBackends[backend]; dup {
			t.Errorf("%s: backend %q is also scaled by %s", sow, backend, other)
		}
		scaledBackends[backend] = sow
		if backend != "" && !slices.Contains(want.backends, backend) {
			t.Errorf("%s: its trigger asks for backend %q, which is not one of the gate's %v", sow, backend, want.backends)
		}
		if backend == "" && len(want.backends) > 0 {
			t.Errorf("%s: its trigger names no backend, but the gate has the named backends %v", sow, want.backends)
		}
		for _, each := range so.Spec.Triggers {
			checkMetadataKeys(t, sow, each)
		}
		if tv, ok := want.targetValues[backend]; ok && md["targetValue"] != tv {
			t.Errorf("%s: targetValue %q, want %q", sow, md["targetValue"], tv)
		}
		if w, ok := want.scaleDown[backend]; ok {
			var got int32
			if a := so.Spec.Advanced; a != nil && a.HorizontalPodAutoscalerConfig != nil && a.HorizontalPodAutoscalerConfig.Behavior != nil &&
				a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown != nil && a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds != nil {
				got = *a.HorizontalPodAutoscalerConfig.Behavior.ScaleDown.StabilizationWindowSeconds
			}
			if got != w {
				t.Errorf("%s: scale-down stabilization %d s (spec.advanced), want %d", sow, got, w)
			}
		}
		authParams := s.triggerAuth(t, want, sow, tr)

		switch tr.Type {
		case "metrics-api":
			u, err := url.Parse(md["url"])
			if err != nil {
				t.Fatalf("%s: url: %v", sow, err)
			}
			if q := u.Query(); len(q) > 1 || (len(q) == 1 && !q.Has("backend")) {
				t.Errorf("%s: url %s: the exporter reads no query parameter but backend", sow, u)
			}
			if u.Hostname() != svcHost || u.Port() != strconv.Itoa(int(svcPorts["http"].Port)) || u.Path != "/active_users" {
				t.Errorf("%s: url %s, want %s:%d (the Service's http port) and path /active_users", sow, u, svcHost, svcPorts["http"].Port)
			}
			if (u.Scheme == "https") != want.webTLS {
				t.Errorf("%s: url scheme %s, want HTTPS %v", sow, u.Scheme, want.webTLS)
			}
			if md["format"] != "json" || md["valueLocation"] != "active_users" || md["activationTargetValue"] != "0" {
				t.Errorf("%s: want format json, valueLocation active_users, activationTargetValue \"0\"; got %v", sow, md)
			}
			modes := splitModes(md["authMode"])
			if slices.Contains(modes, "basic") != want.basicAuth {
				t.Errorf("%s: authMode %q, want basic %v", sow, md["authMode"], want.basicAuth)
			}
			if want.basicAuth {
				login(sow+" TriggerAuthentication", authParams["username"], authParams["password"])
			}
			if want.webTLS {
				// KEDA's metrics-api scaler applies a CA only with authMode tls,
				// which needs a client certificate as well.
				if !slices.Contains(modes, "tls") {
					t.Errorf("%s: HTTPS without authMode tls: KEDA would not trust the exporter's CA", sow)
				}
				for _, p := range []string{"ca", "cert", "key"} {
					if _, ok := authParams[p]; !ok {
						t.Errorf("%s: TriggerAuthentication without parameter %s", sow, p)
					}
				}
			}
		case "external-push":
			host, port, err := net.SplitHostPort(md["scalerAddress"])
			grpc, ok := svcPorts["grpc"]
			if err != nil || !ok || host != svcHost || port != strconv.Itoa(int(grpc.Port)) {
				t.Errorf("%s: scalerAddress %q, want %s:<the Service's grpc port> (Service ports %v)", sow, md["scalerAddress"], svcHost, keys(svcPorts))
			}
			if _, lport, err := net.SplitHostPort(f["keda.listen-address"]); err != nil || lport != strconv.Itoa(int(ports["grpc"])) {
				t.Errorf("%s: --keda.listen-address=%q, want the container port named grpc (%d)", where, f["keda.listen-address"], ports["grpc"])
			}
			if ok && !targets(grpc.TargetPort, []corev1.ContainerPort{{Name: "grpc", ContainerPort: ports["grpc"]}}) {
				t.Errorf("%s: the Service's grpc port targets %s, not the container's grpc port", svcs[0], grpc.TargetPort.String())
			}
			tlsOn := md["enableTLS"] == "true"
			if tlsOn != want.grpcTLS || (f["keda.tls.cert-file"] != "") != want.grpcTLS || (f["keda.tls.client-ca-file"] != "") != want.grpcTLS {
				t.Errorf("%s: enableTLS %q, exporter TLS flags %q/%q; want mutual TLS %v on both sides", sow, md["enableTLS"], f["keda.tls.cert-file"], f["keda.tls.client-ca-file"], want.grpcTLS)
			}
			if want.grpcTLS {
				for _, p := range []string{"caCert", "tlsClientCert", "tlsClientKey"} {
					if _, ok := authParams[p]; !ok {
						t.Errorf("%s: TriggerAuthentication without parameter %s", sow, p)
					}
				}
				if serverCertSecret == "" {
					t.Errorf("%s: no server certificate mounted", where)
				}
			}
			if *dep.Spec.Replicas >= 2 && len(s.all("PodDisruptionBudget")) != 1 {
				t.Errorf("push: want a PodDisruptionBudget for the exporter's %d replicas, found %d", *dep.Spec.Replicas, len(s.all("PodDisruptionBudget")))
			}
		case "prometheus":
			if md["ignoreNullValues"] != "false" {
				t.Errorf("%s: ignoreNullValues %q, want \"false\": an empty result must not read as 0", sow, md["ignoreNullValues"])
			}
			wantQuery := "max(openwebui_active_users)"
			if backend != "" {
				wantQuery = `max(openwebui_backend_demand{backend="` + backend + `"})`
			}
			if q := strings.Join(strings.Fields(md["query"]), ""); q != wantQuery {
				t.Errorf("%s: query %q, want %s", sow, md["query"], wantQuery)
			}
			if md["activationThreshold"] != "0" || md["threshold"] == "" {
				t.Errorf("%s: want threshold and activationThreshold \"0\"", sow)
			}
		}
	}
	for _, b := range want.backends {
		if _, ok := scaledBackends[b]; !ok {
			t.Errorf("gate backend %s has no ScaledObject", b)
		}
	}
	checkNothingDangles(t, s)
	checkGate(t, s, want, dep, f)
	checkPDBs(t, s, want, dep)
}

// checkPDBs: a PodDisruptionBudget selects the exporter's pods and can be
// satisfied: minAvailable below the replicas (else no node drain ever
// evicts one), maxUnavailable above 0.
func checkPDBs(t *testing.T, s setup, want expect, dep *appsv1.Deployment) {
	t.Helper()
	replicas := int(*dep.Spec.Replicas)
	for _, d := range s.all("PodDisruptionBudget") {
		pdb := d.Obj.(*policyv1.PodDisruptionBudget)
		if sel, err := metav1LabelSelector(pdb.Spec.Selector); err != nil || !sel.Matches(labels.Set(dep.Spec.Template.Labels)) {
			t.Errorf("%s: selector does not select the exporter's pods", d)
		}
		if m := pdb.Spec.MinAvailable; m != nil && m.Type == intstr.Int && int(m.IntVal) >= replicas {
			t.Errorf("%s: minAvailable %d with %d replica(s) blocks every node drain", d, m.IntVal, replicas)
		}
		if m := pdb.Spec.MaxUnavailable; m != nil && m.Type == intstr.Int && m.IntVal < 1 {
			t.Errorf("%s: maxUnavailable %d blocks every node drain", d, m.IntVal)
		}
	}
}

// triggerBackend is the gate backend a trigger asks for: the push trigger's
// backend metadata, the metrics-api url's ?backend=, the prometheus query's
// backend label; "" for none (Open WebUI's count, the unnamed backend).
func triggerBackend(t *testing.T, where string, tr kedav1alpha1.ScaleTriggers) string {
	t.Helper()
	switch tr.Type {
	case "external-push":
		return tr.Metadata["backend"]
	case "metrics-api":
		u, err := url.Parse(tr.Metadata["url"])
		if err != nil {
			t.Errorf("%s: url: %v", where, err)
			return ""
		}
		return u.Query().Get("backend")
	case "prometheus":
		if m := backendLabelRE.FindStringSubmatch(tr.Metadata["query"]); m != nil {
			return m[1]
		}
	}
	return ""
}

var backendLabelRE = regexp.MustCompile(`openwebui_backend_demand\{backend="([^"]*)"\}`)

// checkNames: every object name is what the API server and KEDA accept
// (a Service's a DNS-1035 label; every other name a DNS-1123 subdomain and,
// being copied into label values by KEDA and cert-manager, at most 63
// characters), and cert-manager's commonName limit of 64.
func checkNames(t *testing.T, s setup) {
	t.Helper()
	for _, d := range s.objs {
		name := d.Obj.GetName()
		var errs []string
		if d.Kind == "Service" {
			errs = validation.IsDNS1035Label(name)
		} else {
			errs = validation.IsDNS1123Subdomain(name)
			if len(name) > validation.LabelValueMaxLength {
				errs = append(errs, fmt.Sprintf("longer than %d characters", validation.LabelValueMaxLength))
			}
		}
		if len(errs) > 0 {
			t.Errorf("%s: name %q: %s", d, name, strings.Join(errs, "; "))
		}
		if cert, ok := d.Obj.(*cmv1.Certificate); ok && len(cert.Spec.CommonName) > 64 {
			t.Errorf("%s: commonName %q is %d characters, over cert-manager's 64", d, cert.Spec.CommonName, len(cert.Spec.CommonName))
		}
	}
}

// triggerAuth resolves a trigger's TriggerAuthentication to its parameters'
// values (empty for Secrets the user or cert-manager creates).
func (s setup) triggerAuth(t *testing.T, want expect, where string, tr kedav1alpha1.ScaleTriggers) map[string]string {
	t.Helper()
	params := map[string]string{}
	if tr.AuthenticationRef == nil {
		return params
	}
	if tr.AuthenticationRef.Kind != "" && tr.AuthenticationRef.Kind != "TriggerAuthentication" {
		return params
	}
	ta, _ := s.get("TriggerAuthentication", tr.AuthenticationRef.Name).(*kedav1alpha1.TriggerAuthentication)
	if ta == nil {
		if !want.external["TriggerAuthentication/"+tr.AuthenticationRef.Name] {
			t.Errorf("%s: authenticationRef %s is not rendered", where, tr.AuthenticationRef.Name)
		}
		return params
	}
	if len(ta.Spec.SecretTargetRef) == 0 {
		t.Errorf("%s: TriggerAuthentication %s has no secretTargetRef", where, ta.Name)
	}
	for _, ref := range ta.Spec.SecretTargetRef {
		v, _ := s.secretKey(t, want, where+" TriggerAuthentication "+ta.Name, ref.Name, ref.Key)
		params[ref.Parameter] = v
	}
	return params
}

// triggerKeys are the metadata keys each scaler reads (KEDA v2.21): a key
// outside them is ignored by KEDA, so it is a mistake here. authMode and
// authModes are both read by KEDA 2.21's shared auth config, but the
// documented key differs per scaler, and older KEDA reads only that one.
var triggerKeys = map[string][]string{
	"metrics-api":   {"url", "format", "valueLocation", "targetValue", "activationTargetValue", "unsafeSsl", "timeout", "authMode", "aggregateFromKubeServiceEndpoints", "aggregationType"},
	"external-push": {"scalerAddress", "enableTLS", "unsafeSsl", "caCert", "targetValue", "activationValue", "backend"},
	"prometheus":    {"serverAddress", "query", "threshold", "activationThreshold", "ignoreNullValues", "namespace", "customHeaders", "queryParameters", "unsafeSsl", "timeout", "authModes"},
	"cron":          {"timezone", "start", "end", "desiredReplicas"},
}

func checkMetadataKeys(t *testing.T, where string, tr kedav1alpha1.ScaleTriggers) {
	t.Helper()
	allowed, ok := triggerKeys[tr.Type]
	if !ok {
		t.Errorf("%s: trigger type %s is not one this test knows", where, tr.Type)
		return
	}
	for k := range tr.Metadata {
		if !slices.Contains(allowed, k) {
			t.Errorf("%s: %s trigger metadata key %q is not one it reads (%v)", where, tr.Type, k, allowed)
		}
	}
}

func splitModes(s string) []string {
	var out []string
	for _, m := range strings.Split(s, ",") {
		if m = strings.TrimSpace(m); m != "" {
			out = append(out, m)
		}
	}
	return out
}

// checkSecurity: non-root with a numeric user, read-only root, no
// privilege escalation, every capability dropped.
func checkSecurity(t *testing.T, where string, pod corev1.PodSpec, c corev1.Container) {
	t.Helper()
	psc, sc := pod.SecurityContext, c.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Errorf("%s: want runAsNonRoot with a numeric non-root runAsUser (the image's USER is a name)", where)
	}
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: want readOnlyRootFilesystem", where)
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: want allowPrivilegeEscalation: false", where)
	}
	if sc == nil || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("%s: want capabilities.drop [ALL]", where)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: want automountServiceAccountToken: false (the exporter never calls the Kubernetes API)", where)
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Cpu().IsZero() {
		t.Errorf("%s: want resources (memory limit, cpu request)", where)
	}
}

func targets(p intstr.IntOrString, ports []corev1.ContainerPort) bool {
	for _, cp := range ports {
		if (p.Type == intstr.String && p.StrVal == cp.Name) || (p.Type == intstr.Int && p.IntVal == cp.ContainerPort) {
			return true
		}
	}
	return false
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func jsonEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var va, vb any
	if err := json.Unmarshal(a, &va); err != nil {
		t.Errorf("dashboard: %v", err)
		return false
	}
	if err := json.Unmarshal(b, &vb); err != nil {
		t.Errorf("dashboard: %v", err)
		return false
	}
	return reflect.DeepEqual(va, vb)
}

// metav1LabelSelector converts a selector; an empty one selects everything,
// which is never what a manifest here means, so it is an error.
func metav1LabelSelector(s *metav1.LabelSelector) (labels.Selector, error) {
	if s == nil || (len(s.MatchLabels) == 0 && len(s.MatchExpressions) == 0) {
		return nil, errors.New("empty selector")
	}
	return metav1.LabelSelectorAsSelector(s)
}

// checkNothingDangles: every Secret rendered, and every Secret a Certificate
// fills, is used by something (a pod volume, a TriggerAuthentication, the
// ServiceMonitor, a CA Issuer): a Secret nobody reads is a mistake in the
// wiring, or credentials handed out for nothing.
func checkNothingDangles(t *testing.T, s setup) {
	t.Helper()
	used := map[string]bool{}
	for _, d := range s.all("Deployment") {
		for _, v := range d.Obj.(*appsv1.Deployment).Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				used[v.Secret.SecretName] = true
			}
		}
	}
	for _, d := range s.all("TriggerAuthentication") {
		for _, ref := range d.Obj.(*kedav1alpha1.TriggerAuthentication).Spec.SecretTargetRef {
			used[ref.Name] = true
		}
	}
	for _, d := range s.all("ServiceMonitor") {
		for _, e := range d.Obj.(*monitoringv1.ServiceMonitor).Spec.Endpoints {
			if e.BasicAuth != nil {
				used[e.BasicAuth.Username.Name], used[e.BasicAuth.Password.Name] = true, true
			}
			if e.TLSConfig != nil && e.TLSConfig.CA.Secret != nil {
				used[e.TLSConfig.CA.Secret.Name] = true
			}
		}
	}
	for _, d := range s.all("Issuer") {
		if ca := d.Obj.(*cmv1.Issuer).Spec.CA; ca != nil {
			used[ca.SecretName] = true
		}
	}
	for _, d := range s.all("Secret") {
		if !used[d.Obj.GetName()] {
			t.Errorf("%s: nothing reads this Secret", d)
		}
	}
	for _, d := range s.all("Certificate") {
		if name := d.Obj.(*cmv1.Certificate).Spec.SecretName; !used[name] {
			t.Errorf("%s: nothing reads its Secret %s", d, name)
		}
	}
}

// gateRulesFile is the gate's rule group, which the chart includes as it
// stands and test/e2e tests with promtool.
const gateRulesFile = "charts/openwebui-exporter/alerts/gate.rules.yaml"

// checkGateAlerts: with the gate, the PrometheusRule carries the group of
// gateRulesFile unchanged; without it, no gate alerts.
func checkGateAlerts(t *testing.T, where string, rule *monitoringv1.PrometheusRule, gate bool) {
	t.Helper()
	raw, err := os.ReadFile(repoRoot + "/" + gateRulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var file struct {
		Groups []monitoringv1.RuleGroup `json:"groups"`
	}
	if err := sigsyaml.UnmarshalStrict(raw, &file); err != nil || len(file.Groups) != 1 {
		t.Fatalf("%s: want one rule group: %v", gateRulesFile, err)
	}
	want := file.Groups[0]
	var got *monitoringv1.RuleGroup
	for i := range rule.Spec.Groups {
		if rule.Spec.Groups[i].Name == want.Name {
			got = &rule.Spec.Groups[i]
		}
	}
	switch {
	case !gate && got != nil:
		t.Errorf("%s: the gate's alerts (group %s) without the gate", where, want.Name)
	case gate && got == nil:
		t.Errorf("%s: no group %s: the gate's alerts are missing", where, want.Name)
	case gate && !reflect.DeepEqual(*got, want):
		t.Errorf("%s: group %s differs from %s:\n got %+v\nwant %+v", where, want.Name, gateRulesFile, *got, want)
	}
}
