package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// kubectl runs kubectl against s and fails the test when it fails.
func kubectl(t *testing.T, c *cluster.Cluster, s *cluster.Server, stdin string, args ...string) string {
	t.Helper()
	out, errOut, code := c.Kubectl(s, stdin, args...)
	if code != 0 {
		t.Fatalf("kubectl %s (via %s): exit %d\n%s%s", strings.Join(args, " "), s.Name, code, out, errOut)
	}
	return out
}

// kubectlFails runs kubectl expecting it to fail with want in its output.
func kubectlFails(t *testing.T, c *cluster.Cluster, s *cluster.Server, want string, args ...string) {
	t.Helper()
	out, errOut, code := c.Kubectl(s, "", args...)
	if code == 0 || !strings.Contains(out+errOut, want) {
		t.Fatalf("kubectl %s: exit %d, want failure with %q:\n%s%s", strings.Join(args, " "), code, want, out, errOut)
	}
}

const webManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`

const ingressClassManifest = `apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: edge
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec:
  controller: example.com/edge
`

const badIngressManifest = `apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: bad}
spec:
  rules:
  - http:
      paths:
      - {path: cart, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`

func requireKubectl(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		t.Skip("kubectl is not installed")
	}
}

// TestKubectlAcrossServers drives the real kubectl against a 3-server
// cluster, writing through one server and reading through another.
func TestKubectlAcrossServers(t *testing.T) {
	requireKubectl(t)
	c := newCluster(t, 3, 41)
	c.Start()
	l := c.Leader(20 * time.Second)
	w, r := c.Others(l)[0], c.Others(l)[1]

	// The version decides which kubectl the dispatcher runs.
	if out := kubectl(t, c, r, "", "version", "-o", "json"); !strings.Contains(out, `"minor": "33"`) {
		t.Fatalf("server version is not 1.33:\n%s", out)
	}
	cluster.Eventually(t, 10*time.Second, func() error {
		out, _, _ := c.Kubectl(r, "", "get", "namespaces", "-o", "name")
		for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			if !strings.Contains(out, "namespace/"+ns+"\n") {
				return fmt.Errorf("namespace %s missing:\n%s", ns, out)
			}
		}
		return nil
	})

	if out := kubectl(t, c, w, webManifest, "apply", "-f", "-"); !strings.Contains(out, "deployment.apps/web created") || !strings.Contains(out, "service/web created") {
		t.Fatalf("apply:\n%s", out)
	}
	if out := kubectl(t, c, r, webManifest, "apply", "-f", "-"); !strings.Contains(out, "deployment.apps/web unchanged") {
		t.Fatalf("second apply through another server:\n%s", out)
	}
	if out := kubectl(t, c, w, webManifest, "apply", "--server-side", "-f", "-"); !strings.Contains(out, "serverside-applied") {
		t.Fatalf("server-side apply:\n%s", out)
	}
	out := kubectl(t, c, r, "", "get", "deployments", "-o", "wide")
	for _, col := range []string{"NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR", "busybox:1.36", "app=web"} {
		if !strings.Contains(out, col) {
			t.Fatalf("get deployments -o wide lacks %q:\n%s", col, out)
		}
	}
	out = kubectl(t, c, r, "", "get", "service", "web", "-o", "json")
	var svc struct {
		Spec struct {
			ClusterIP string `json:"clusterIP"`
		} `json:"spec"`
	}
	if err := json.Unmarshal([]byte(out), &svc); err != nil || !strings.HasPrefix(svc.Spec.ClusterIP, "10.96.") {
		t.Fatalf("service has no ClusterIP from 10.96.0.0/16 (%v):\n%s", err, out)
	}
	if out := kubectl(t, c, r, "", "get", "deployment", "web", "-o", "yaml"); !strings.Contains(out, "maxSurge: 25%") {
		t.Fatalf("deployment not defaulted:\n%s", out)
	}

	kubectl(t, c, w, "", "label", "deployment", "web", "tier=frontend")
	kubectl(t, c, w, "", "annotate", "deployment", "web", "owner=team-a")
	kubectl(t, c, w, "", "scale", "deployment", "web", "--replicas=5")
	kubectl(t, c, w, "", "patch", "deployment", "web", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"busybox:1.37"}]}}}}`)
	out = kubectl(t, c, r, "", "get", "deployment", "web", "-o", "jsonpath={.spec.replicas} {.metadata.labels.tier} {.metadata.annotations.owner} {.spec.template.spec.containers[0].image} {.metadata.generation}")
	if out != "5 frontend team-a busybox:1.37 3" {
		t.Fatalf("after label, annotate, scale and patch: %q, want %q", out, "5 frontend team-a busybox:1.37 3")
	}
	if out := kubectl(t, c, r, "", "get", "deployments", "-l", "tier in (frontend,backend)", "-o", "name"); out != "deployment.apps/web\n" {
		t.Fatalf("set-based selector: %q", out)
	}
	kubectl(t, c, r, "", "wait", "deployment/web", "--for=jsonpath={.spec.replicas}=5", "--timeout=10s")

	out = kubectl(t, c, r, "", "get", "all")
	if !strings.Contains(out, "deployment.apps/web") || !strings.Contains(out, "service/web") {
		t.Fatalf("get all:\n%s", out)
	}
	if out := kubectl(t, c, r, "", "describe", "deployment", "web"); !strings.Contains(out, "RollingUpdateStrategy:  25% max unavailable, 25% max surge") {
		t.Fatalf("describe:\n%s", out)
	}
	if out := kubectl(t, c, r, "", "explain", "deployment.spec.strategy.rollingUpdate"); !strings.Contains(out, "maxSurge") {
		t.Fatalf("explain:\n%s", out)
	}
	// No authentication or authorization yet: everyone may do everything,
	// and kubectl auth says so.
	if out := kubectl(t, c, r, "", "auth", "can-i", "delete", "deployments", "-n", "kube-system"); out != "yes\n" {
		t.Fatalf("auth can-i: %q", out)
	}
	if out := kubectl(t, c, r, "", "auth", "can-i", "--list"); !strings.Contains(out, "*.*") {
		t.Fatalf("auth can-i --list:\n%s", out)
	}
	if out := kubectl(t, c, r, "", "auth", "whoami"); !strings.Contains(out, "system:anonymous") || !strings.Contains(out, "system:unauthenticated") {
		t.Fatalf("auth whoami:\n%s", out)
	}
	// What kubectl cluster-info suggests for a closer look works.
	dump := t.TempDir()
	kubectl(t, c, r, "", "cluster-info", "dump", "--output-directory", dump)
	if _, err := os.Stat(filepath.Join(dump, "default", "replication-controllers.json")); err != nil {
		t.Fatalf("cluster-info dump wrote no replication controllers: %v", err)
	}

	// A watch through one server sees writes through another, in order.
	watch := exec.Command("kubectl", "--kubeconfig", c.Kubeconfig(r), "get", "configmaps", "-w", "--output-watch-events", "-o", "custom-columns=TYPE:.type,NAME:.object.metadata.name,V:.object.data.v", "--no-headers")
	var watchOut lockedBuffer
	watch.Stdout = &watchOut
	if err := watch.Start(); err != nil {
		t.Fatal(err)
	}
	defer watch.Process.Kill()
	kubectl(t, c, w, "", "create", "configmap", "watched", "--from-literal=v=1")
	kubectl(t, c, w, "", "patch", "configmap", "watched", "--type=merge", "-p", `{"data":{"v":"2"}}`)
	kubectl(t, c, w, "", "delete", "configmap", "watched")
	cluster.Eventually(t, 10*time.Second, func() error {
		got := strings.Fields(watchOut.String())
		want := []string{"ADDED", "watched", "1", "MODIFIED", "watched", "2", "DELETED", "watched", "2"}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			return fmt.Errorf("watch printed %q, want %q", got, want)
		}
		return nil
	})

	// A v1 List: kubectl validates it with the Protobuf OpenAPI v2.
	list := `{"apiVersion":"v1","kind":"List","items":[` +
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"listed-1"}},` +
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"listed-2"}}]}`
	if out := kubectl(t, c, w, list, "create", "-f", "-"); !strings.Contains(out, "configmap/listed-2 created") {
		t.Fatalf("create a List:\n%s", out)
	}
	kubectl(t, c, w, "", "delete", "configmap", "listed-1", "listed-2")

	// Ingresses: one that names no class gets the default IngressClass;
	// one whose path is not absolute is refused.
	kubectl(t, c, w, ingressClassManifest, "apply", "-f", "-")
	kubectl(t, c, w, "", "create", "ingress", "site", "--rule=shop.example/cart*=web:80,tls=shop-cert")
	if out := kubectl(t, c, r, "", "get", "ingress", "site", "-o", "jsonpath={.spec.ingressClassName}"); out != "edge" {
		t.Fatalf("the ingress's class: %q", out)
	}
	if out := kubectl(t, c, r, "", "get", "ingress", "site", "--no-headers"); len(strings.Fields(out)) != 6 || !strings.Contains(out, " shop.example ") || !strings.Contains(out, " 80, 443 ") {
		t.Fatalf("get ingress:\n%s", out)
	}
	kubectlFails(t, c, w, `spec.rules[0].http.paths[0].path: Invalid value: "cart": must be an absolute path`, "create", "-f", writeTemp(t, badIngressManifest))
	kubectl(t, c, w, "", "delete", "ingress", "site")
	kubectl(t, c, w, "", "delete", "ingressclass", "edge")

	kubectlFails(t, c, w, `deployments.apps "web" already exists`, "create", "deployment", "web", "--image=busybox")
	kubectlFails(t, c, w, "NotFound", "get", "deployment", "nosuch")
	kubectlFails(t, c, w, "must consist of lower case", "create", "configmap", "Bad_Name")
	kubectlFails(t, c, w, `unknown field "spec.bogus"`, "apply", "--dry-run=server", "--validate=strict", "--filename", writeTemp(t, strings.Replace(webManifest, "replicas: 2", "replicas: 2\n  bogus: 1", 1)))

	// Deletion with each propagation policy: the deployment goes, and its
	// replica set with it unless it is orphaned.
	for _, policy := range []string{"foreground", "orphan", "background"} {
		name := "del-" + policy
		kubectl(t, c, w, "", "create", "deployment", name, "--image=busybox")
		cluster.Eventually(t, 20*time.Second, func() error {
			if out := kubectl(t, c, r, "", "get", "replicasets", "-l", "app="+name, "-o", "name"); out == "" {
				return fmt.Errorf("no replica set for %s yet", name)
			}
			return nil
		})
		kubectl(t, c, w, "", "delete", "deployment", name, "--cascade="+policy)
		kubectlFails(t, c, r, "NotFound", "get", "deployment", name)
		cluster.Eventually(t, 20*time.Second, func() error {
			out := kubectl(t, c, r, "", "get", "replicasets", "-l", "app="+name, "-o", "jsonpath={.items[*].metadata.ownerReferences}")
			left := kubectl(t, c, r, "", "get", "replicasets", "-l", "app="+name, "-o", "name")
			if policy == "orphan" && (left == "" || out != "") {
				return fmt.Errorf("orphan delete: replica sets %q, owners %q", left, out)
			}
			if policy != "orphan" && left != "" {
				return fmt.Errorf("%s delete left %s", policy, left)
			}
			return nil
		})
	}
	kubectl(t, c, w, "", "delete", "replicasets", "-l", "app=del-orphan")
	kubectl(t, c, w, "", "delete", "--filename", writeTemp(t, webManifest))
	cluster.Eventually(t, 20*time.Second, func() error {
		// What the cluster keeps itself, as on Kubernetes: the kubernetes
		// Service.
		if out := kubectl(t, c, r, "", "get", "all", "-o", "name"); out != "service/kubernetes\n" {
			return fmt.Errorf("left after delete -f:\n%s", out)
		}
		return nil
	})
}

// TestKubectlWhileLeaderDies creates objects with kubectl through a
// follower of a 5-server cluster while the leader is killed: every create
// kubectl reported is there afterwards.
func TestKubectlWhileLeaderDies(t *testing.T) {
	requireKubectl(t)
	c := newCluster(t, 5, 41)
	c.Start()
	l := c.Leader(20 * time.Second)
	via := c.Others(l)[0]
	var mu sync.Mutex
	var created []string
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			name := fmt.Sprintf("cm-%d", i)
			if _, _, code := c.Kubectl(via, "", "create", "configmap", name, "--from-literal=i="+name); code == 0 {
				mu.Lock()
				created = append(created, name)
				mu.Unlock()
			}
		}
	}()
	count := func() int { mu.Lock(); defer mu.Unlock(); return len(created) }
	cluster.Eventually(t, 30*time.Second, func() error {
		if n := count(); n < 5 {
			return fmt.Errorf("%d created", n)
		}
		return nil
	})
	l.Kill()
	c.Leader(20 * time.Second)
	before := count()
	cluster.Eventually(t, 30*time.Second, func() error {
		if n := count() - before; n < 5 {
			return fmt.Errorf("%d created since the leader died", n)
		}
		return nil
	})
	close(stop)
	<-done
	out := kubectl(t, c, c.Others(l)[1], "", "get", "configmaps", "-o", "name")
	for _, name := range created {
		if !strings.Contains(out, "configmap/"+name+"\n") {
			t.Errorf("kubectl created %s, but it is not listed", name)
		}
	}
	t.Logf("%d configmaps created across the failover", len(created))
}

// lockedBuffer is a bytes.Buffer a process writes while the test reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	p := t.TempDir() + "/manifest.yaml"
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
