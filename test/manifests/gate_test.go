package manifests

import (
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
)

// backendNameRE is --gate.backend's NAME (gate-spec: not _gate, which the
// pattern cannot match).
var backendNameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$`)

// gateBackend is one --gate.backend value, split the way the exporter does
// (gate.ParseBackend; its own tests check the values).
type gateBackend struct {
	name, url, wake, idle, warm, maxLoaded string
}

func parseGateBackend(v string) (gateBackend, bool) {
	var b gateBackend
	head, opts, _ := strings.Cut(v, ",")
	if name, u, ok := strings.Cut(head, "="); ok {
		b.name, b.url = name, u
	} else {
		b.url = head
		return b, opts == ""
	}
	b.wake = "arrival"
	for _, o := range strings.Split(opts, ",") {
		if o == "" {
			continue
		}
		k, val, _ := strings.Cut(o, "=")
		switch k {
		case "wake":
			b.wake = val
		case "idle":
			b.idle = val
		case "parallel", "people", "bind": // a pool's (the exporter checks their values)
		case "warm":
			b.warm = val
		case "max-loaded":
			b.maxLoaded = val
		default:
			return b, false
		}
	}
	return b, true
}

// checkGate: the gate's listen address is the container port named gate,
// its Service and headless Service select the pods and target that port, the
// backends are valid and unique, the state file is on a writable emptyDir,
// the peers flag names the headless Service with more than one replica, and
// a data-path component is not a single point of failure.
func checkGate(t *testing.T, s setup, want expect, dep *appsv1.Deployment, f map[string]string) {
	t.Helper()
	where := "Deployment " + dep.Name
	pod := dep.Spec.Template.Spec
	c := pod.Containers[0]
	var gatePort *corev1.ContainerPort
	for i, p := range c.Ports {
		if p.Name == "gate" {
			gatePort = &c.Ports[i]
		}
	}
	listen, on := f["gate.listen-address"]
	if on != want.gate {
		t.Fatalf("%s: --gate.listen-address=%q, want the gate %v", where, listen, want.gate)
	}
	if !want.gate {
		for name := range f {
			if strings.HasPrefix(name, "gate.") {
				t.Errorf("%s: --%s without the gate", where, name)
			}
		}
		if gatePort != nil {
			t.Errorf("%s: container port gate without the gate", where)
		}
		return
	}
	if gatePort == nil {
		t.Fatalf("%s: no container port named gate", where)
	}
	if _, port, err := net.SplitHostPort(listen); err != nil || port != strconv.Itoa(int(gatePort.ContainerPort)) {
		t.Errorf("%s: --gate.listen-address=%s, but the container port named gate is %d", where, listen, gatePort.ContainerPort)
	}

	// Backends, from the container's args (repeated --gate.backend).
	var backends []gateBackend
	for _, a := range c.Args {
		v, ok := strings.CutPrefix(a, "--gate.backend=")
		if !ok {
			continue
		}
		b, ok := parseGateBackend(v)
		if !ok {
			t.Errorf("%s: --gate.backend=%s: want URL or NAME=URL[,wake=arrival|request][,idle=DURATION][,parallel=N][,people=N][,bind=arrival|late][,warm=...][,max-loaded=N]", where, v)
			continue
		}
		backends = append(backends, b)
	}
	var names []string
	for _, b := range backends {
		if b.name == "" {
			if len(backends) != 1 {
				t.Errorf("%s: an unnamed --gate.backend beside others: the exporter refuses the mix", where)
			}
			continue
		}
		if !backendNameRE.MatchString(b.name) {
			t.Errorf("%s: backend name %q is not [a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?", where, b.name)
		}
		if slices.Contains(names, b.name) {
			// The same name again is another replica of a pool: NAME=URL, no options.
			if b.wake != "arrival" || b.idle != "" || strings.Contains(b.url, ",") {
				t.Errorf("%s: backend %q again with options: a pool's options go on its first --gate.backend", where, b.name)
			}
			continue
		}
		names = append(names, b.name)
		if b.wake != "arrival" && b.wake != "request" {
			t.Errorf("%s: backend %s: wake=%q, want arrival or request", where, b.name, b.wake)
		}
		if b.idle != "" && b.wake != "request" {
			t.Errorf("%s: backend %s: idle without wake=request", where, b.name)
		}
		if u := strings.TrimPrefix(b.url, "dns+"); !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			t.Errorf("%s: backend %s: url %q is not http(s)", where, b.name, u)
		}
	}
	if len(backends) == 0 {
		t.Errorf("%s: the gate without a --gate.backend", where)
	}
	if !slices.Equal(names, want.backends) {
		t.Errorf("%s: gate backends %v, want %v", where, names, want.backends)
	}

	// The state file: on a volume the non-root, read-only-root exporter can
	// write (an emptyDir), not a Secret or the image.
	if sf := f["gate.state-file"]; sf == "" {
		t.Errorf("%s: no --gate.state-file: a restarted gate forgets the model lists", where)
	} else {
		mounted := false
		for _, m := range c.VolumeMounts {
			if path.Dir(sf) != path.Clean(m.MountPath) {
				continue
			}
			for _, v := range pod.Volumes {
				if v.Name == m.Name {
					mounted = v.EmptyDir != nil && !m.ReadOnly && m.SubPath == ""
				}
			}
		}
		if !mounted {
			t.Errorf("%s: --gate.state-file=%s is not on a writable emptyDir mount", where, sf)
		}
	}

	// The readiness probe is the gate's: a pod whose gate does not answer
	// must leave the Service Open WebUI talks to.
	if p := c.ReadinessProbe; p == nil || p.HTTPGet == nil || p.HTTPGet.Port.String() != "gate" {
		t.Errorf("%s: want a readiness probe on the gate port", where)
	}

	// The drain: a stopped replica delivers what it holds for
	// --gate.drain-timeout, then answers the rest; the kubelet's SIGKILL must
	// come after that.
	drain, err := time.ParseDuration(f["gate.drain-timeout"])
	grace := pod.TerminationGracePeriodSeconds
	switch {
	case err != nil:
		t.Errorf("%s: --gate.drain-timeout=%q: want a duration (the default, the hold timeout plus 30 s, does not fit a grace period the chart does not compute)", where, f["gate.drain-timeout"])
	case grace == nil || time.Duration(*grace)*time.Second < drain+5*time.Second:
		t.Errorf("%s: terminationGracePeriodSeconds %v, want at least --gate.drain-timeout=%s plus 5 s: a held request would get EOF instead of an answer", where, grace, drain)
	}

	// The gate's Services.
	var gateSvc, headless *corev1.Service
	for _, d := range s.all("Service") {
		svc := d.Obj.(*corev1.Service)
		var port *corev1.ServicePort
		for i, p := range svc.Spec.Ports {
			if p.Name == "gate" {
				port = &svc.Spec.Ports[i]
			}
		}
		if port == nil {
			continue
		}
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(dep.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
			t.Errorf("%s: selector %v does not select the gate's pods", d, svc.Spec.Selector)
		}
		if !targets(port.TargetPort, []corev1.ContainerPort{*gatePort}) {
			t.Errorf("%s: port gate targets %s, not the container's gate port", d, port.TargetPort.String())
		}
		if svc.Spec.ClusterIP == corev1.ClusterIPNone {
			headless = svc
		} else {
			gateSvc = svc
		}
	}
	if gateSvc == nil {
		t.Errorf("no Service with a port named gate (what Open WebUI uses as Ollama)")
	}
	replicas := *dep.Spec.Replicas
	peers, hasPeers := f["gate.peers"]
	switch {
	case replicas > 1 && !hasPeers:
		t.Errorf("%s: %d replicas without --gate.peers: a request held by one replica is invisible to KEDA through the others", where, replicas)
	case hasPeers && headless == nil:
		t.Errorf("%s: --gate.peers=%s, but no headless Service is rendered", where, peers)
	case hasPeers:
		host, port, err := net.SplitHostPort(peers)
		wantHost := headless.Name + "." + headless.Namespace + ".svc"
		if err != nil || host != wantHost || port != strconv.Itoa(int(gatePortOf(headless))) {
			t.Errorf("%s: --gate.peers=%s, want %s:%d (the headless Service's gate port)", where, peers, wantHost, gatePortOf(headless))
		}
		if !headless.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: want publishNotReadyAddresses: a replica still holding requests keeps counting", headless.Name)
		}
	}
	if replicas < 2 {
		t.Errorf("%s: the gate is in Open WebUI's data path: want at least 2 replicas, found %d", where, replicas)
	} else if len(s.all("PodDisruptionBudget")) != 1 {
		t.Errorf("the gate is in Open WebUI's data path: want a PodDisruptionBudget")
	}
}

func gatePortOf(svc *corev1.Service) int32 {
	for _, p := range svc.Spec.Ports {
		if p.Name == "gate" {
			return p.Port
		}
	}
	return 0
}
