package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"

	"github.com/pontoon-dev/pontoon/node/localimage"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

const busybox = "pontoon.local/busybox:latest"

// TestDevRunsPods walks the README's example on `pontoon dev`, with real
// containerd, runc, CNI plugins and kubectl, inside a network namespace:
// a pod runs and gets an address; exec (with its exit code), logs,
// port-forward and cp work through the API; a crashing container backs
// off, a missing image is reported; the node's pods outlive a restart of
// `pontoon dev` untouched; a deletion is graceful; and the cleanup leaves
// nothing behind.
func TestDevRunsPods(t *testing.T) {
	d := cluster.StartDev(t, bin, "pontoon-e2e-dev")
	cs := d.Clientset()
	ctx := context.Background()
	kubectl := func(args ...string) string {
		t.Helper()
		out, errOut, code := d.Kubectl("", args...)
		if code != 0 {
			t.Fatalf("kubectl %s: exit %d: %s%s", strings.Join(args, " "), code, out, errOut)
		}
		return out
	}

	// The kubernetes Service, as kube-apiserver keeps it: the first
	// address of the service range, the servers as its endpoints.
	cluster.Eventually(t, 20*time.Second, func() error {
		svc, err := cs.CoreV1().Services("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return err
		}
		ep, err := cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if svc.Spec.ClusterIP != "10.96.0.1" || svc.Spec.Ports[0].Port != 443 || len(ep.Subsets) != 1 ||
			ep.Subsets[0].Addresses[0].IP != "127.0.0.1" || ep.Subsets[0].Ports[0].Port != 6443 {
			return fmt.Errorf("the kubernetes service: %+v, endpoints %+v", svc.Spec, ep.Subsets)
		}
		return nil
	})

	kubectl("run", "web", "--image="+busybox, "--", "httpd", "-f", "-p", "8080")
	web := waitPod(t, cs, "web", "a running pod with an address", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" && cluster.PodReady(p)
	})
	if !strings.HasPrefix(web.Status.PodIP, "10.244.") || web.Status.HostIP != "127.0.0.1" {
		t.Fatalf("pod IP %s, host IP %s", web.Status.PodIP, web.Status.HostIP)
	}

	if out := kubectl("exec", "web", "--", "ls", "/"); !strings.Contains(out, "bin\n") {
		t.Fatalf("exec ls /: %q", out)
	}
	if out := kubectl("exec", "web", "--", "env"); !strings.Contains(out, "KUBERNETES_SERVICE_HOST=10.96.0.1\n") || !strings.Contains(out, "KUBERNETES_SERVICE_PORT=443\n") {
		t.Fatalf("the pod's environment has no kubernetes service: %s", out)
	}
	// The API through the kubernetes Service, by its DNS name, though the
	// server listens on 127.0.0.1.
	if out := kubectl("exec", "web", "--", "wget", "-qO-", "http://kubernetes.default:443/version"); !strings.Contains(out, `"gitVersion"`) {
		t.Fatalf("the API from a pod through kubernetes.default: %q", out)
	}
	if _, _, code := d.Kubectl("", "exec", "web", "--", "sh", "-c", "exit 3"); code != 3 {
		t.Fatalf("exec of exit 3 ended with %d", code)
	}
	kubectl("exec", "web", "--", "sh", "-c", "echo hello from web > /index.html")

	// kubectl cp uses tar in the container.
	src := filepath.Join(t.TempDir(), "note.txt")
	if err := os.WriteFile(src, []byte("copied\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	kubectl("cp", src, "web:/tmp/note.txt")
	if out := kubectl("exec", "web", "--", "cat", "/tmp/note.txt"); out != "copied\n" {
		t.Fatalf("after kubectl cp the file holds %q", out)
	}

	pf := d.Netns.Command("kubectl", "--kubeconfig", d.Kubeconfig(), "port-forward", "pod/web", "18080:8080")
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pf.Process.Kill(); pf.Wait() })
	cluster.Eventually(t, 20*time.Second, func() error {
		out, errOut, code := d.Netns.Run("busybox", "wget", "-qO-", "http://127.0.0.1:18080/")
		if code != 0 || out != "hello from web\n" {
			return fmt.Errorf("through port-forward: %q %s", out, errOut)
		}
		return nil
	})
	checkStreamProtocols(t, &rest.Config{Host: "http://" + d.Netns.Forward(t, cluster.DevAPI)}, "web", "hello from web\n")
	// pods/proxy reaches the pod from the server.
	if out := kubectl("get", "--raw", "/api/v1/namespaces/default/pods/web:8080/proxy/"); out != "hello from web\n" {
		t.Fatalf("through pods/proxy: %q", out)
	}
	// Links in HTML come back rewritten to go through the proxy again.
	kubectl("exec", "web", "--", "sh", "-c", `echo '<a href="/next">next</a>' > /links.html`)
	if out := kubectl("get", "--raw", "/api/v1/namespaces/default/pods/web:8080/proxy/links.html"); out != `<a href="/api/v1/namespaces/default/pods/web:8080/proxy/next">next</a>`+"\n" {
		t.Fatalf("an HTML link through pods/proxy: %q", out)
	}
	// services/proxy picks one of the Service's endpoints, by port number
	// or name.
	kubectl("expose", "pod", "web", "--name=web-svc", "--port=80", "--target-port=8080")
	cluster.Eventually(t, 20*time.Second, func() error {
		out, errOut, code := d.Kubectl("", "get", "--raw", "/api/v1/namespaces/default/services/http:web-svc:80/proxy/")
		if code != 0 || out != "hello from web\n" {
			return fmt.Errorf("through services/proxy: %q %s", out, errOut)
		}
		return nil
	})
	kubectl("create", "service", "clusterip", "nobody", "--tcp=80")
	cluster.Eventually(t, 20*time.Second, func() error {
		if _, errOut, code := d.Kubectl("", "get", "--raw", "/api/v1/namespaces/default/services/nobody/proxy/"); code == 0 || !strings.Contains(errOut, "ServiceUnavailable") || !strings.Contains(errOut, "no endpoints available for service") {
			return fmt.Errorf("services/proxy to a Service without endpoints: %d %s", code, errOut)
		}
		return nil
	})

	kubectl("run", "hello", "--image="+busybox, "--restart=Never", "--", "sh", "-c", "echo hello; echo to stderr >&2")
	waitPod(t, cs, "hello", "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if out := kubectl("logs", "hello"); !strings.Contains(out, "hello\n") || !strings.Contains(out, "to stderr\n") {
		t.Fatalf("logs: %q", out)
	}
	if out := kubectl("logs", "hello", "--tail=1", "--timestamps"); strings.Count(out, "\n") != 1 || !strings.Contains(out, "Z ") {
		t.Fatalf("logs --tail=1 --timestamps: %q", out)
	}

	// Volumes: what the pod reads is there before it starts; a volume the
	// node cannot provide keeps the pod waiting, never running without it.
	hostDir := t.TempDir()
	kubectl("create", "configmap", "settings", "--from-literal=colour=blue", "--from-literal=size=large")
	// stringData is merged into data and never stored, as kube-apiserver
	// does.
	if _, errOut, code := d.Kubectl("apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {password: s3cret}\n", "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply a secret with stringData: %s", errOut)
	}
	if sec, err := cs.CoreV1().Secrets("default").Get(ctx, "creds", metav1.GetOptions{}); err != nil || string(sec.Data["password"]) != "s3cret" || sec.StringData != nil {
		t.Fatalf("a secret applied with stringData: %+v %v", sec, err)
	}
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: vols, labels: {tier: back}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: `+busybox+`
    command: [sh, -c, 'cat /cm/colour /cm/deep/size /s/password /info/labels; stat -L -c %a /cm/colour; echo x > /scratch/f; cat /scratch/f; echo y > /host/out; ls /mem']
    volumeMounts:
    - {name: cm, mountPath: /cm}
    - {name: s, mountPath: /s}
    - {name: info, mountPath: /info}
    - {name: scratch, mountPath: /scratch}
    - {name: mem, mountPath: /mem}
    - {name: host, mountPath: /host}
  volumes:
  - name: cm
    configMap: {name: settings, defaultMode: 0400, items: [{key: colour, path: colour}, {key: size, path: deep/size}]}
  - name: s
    secret: {secretName: creds}
  - name: info
    downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}
  - name: scratch
    emptyDir: {}
  - name: mem
    emptyDir: {medium: Memory, sizeLimit: 1Mi}
  - name: host
    hostPath: {path: `+hostDir+`, type: Directory}
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("pod with volumes: %s", errOut)
	}
	waitPod(t, cs, "vols", "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if out := kubectl("logs", "vols"); out != "bluelarges3crettier=\"back\"400\nx\n" {
		t.Fatalf("what the pod read from its volumes: %q", out)
	}
	if b, err := os.ReadFile(filepath.Join(hostDir, "out")); err != nil || string(b) != "y\n" {
		t.Fatalf("the hostPath volume holds %q, %v", b, err)
	}
	// A running pod sees its ConfigMap change, and its labels.
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: live, labels: {tier: back}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: `+busybox+`
    command: [sleep, "3600"]
    volumeMounts: [{name: cm, mountPath: /cm}, {name: info, mountPath: /info}]
  volumes:
  - {name: cm, configMap: {name: settings}}
  - {name: info, downwardAPI: {items: [{path: labels, fieldRef: {fieldPath: metadata.labels}}]}}
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("pod live: %s", errOut)
	}
	waitPod(t, cs, "live", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	kubectl("patch", "configmap", "settings", "-p", `{"data":{"colour":"green"}}`)
	kubectl("label", "pod", "live", "tier=front", "--overwrite")
	cluster.Eventually(t, 30*time.Second, func() error {
		out, errOut, _ := d.Kubectl("", "exec", "live", "--", "cat", "/cm/colour", "/info/labels")
		if out != "greentier=\"front\"" {
			return fmt.Errorf("the running pod's volumes hold %q %s", out, errOut)
		}
		return nil
	})
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: nfs}
spec:
  containers:
  - {name: c, image: `+busybox+`, volumeMounts: [{name: v, mountPath: /v}]}
  volumes:
  - {name: v, nfs: {server: 192.0.2.1, path: /x}}
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("pod with an nfs volume: %s", errOut)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=nfs,reason=FailedMount"})
		if err != nil || len(evs.Items) == 0 {
			return fmt.Errorf("no FailedMount event for the nfs volume: %v", err)
		}
		return nil
	})
	// The status follows the event.
	waitPod(t, cs, "nfs", "waiting for its volume", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return p.Status.Phase == corev1.PodPending && len(s) == 1 && s[0].State.Waiting != nil && s[0].State.Waiting.Reason == "ContainerCreating"
	})

	// How pods end: a termination message from its file or, failing that,
	// from the log; a deadline that fails the pod.
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: ends}
spec:
  restartPolicy: Never
  activeDeadlineSeconds: 4
  containers:
  - {name: file, image: `+busybox+`, command: [sh, -c, 'echo bye > /dev/termination-log; exit 1']}
  - {name: logs, image: `+busybox+`, command: [sh, -c, 'echo from the log; exit 2'], terminationMessagePolicy: FallbackToLogsOnError}
  - {name: sleeper, image: `+busybox+`, command: [sleep, "3600"]}
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	ends := waitPod(t, cs, "ends", "failed past its deadline", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodFailed && p.Status.Reason == "DeadlineExceeded"
	})
	for _, c := range ends.Status.ContainerStatuses {
		want := map[string]string{"file": "bye\n", "logs": "from the log\n"}[c.Name]
		if term := c.State.Terminated; want != "" && (term == nil || term.Message != want) {
			t.Fatalf("container %s ended with %+v, want the message %q", c.Name, term, want)
		}
	}

	kubectl("run", "crash", "--image="+busybox, "--", "sh", "-c", "echo dying; exit 2")
	crash := waitPod(t, cs, "crash", "CrashLoopBackOff after a restart", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount >= 1 && s[0].State.Waiting != nil && s[0].State.Waiting.Reason == "CrashLoopBackOff"
	})
	if last := crash.Status.ContainerStatuses[0].LastTerminationState.Terminated; last == nil || last.ExitCode != 2 || last.Reason != "Error" {
		t.Fatalf("crash's last state: %+v", last)
	}
	if out := kubectl("logs", "crash", "--previous"); out != "dying\n" {
		t.Fatalf("logs --previous: %q", out)
	}

	kubectl("run", "missing", "--image=pontoon.local/missing:1")
	waitPod(t, cs, "missing", "ErrImagePull or ImagePullBackOff", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].State.Waiting != nil && (s[0].State.Waiting.Reason == "ErrImagePull" || s[0].State.Waiting.Reason == "ImagePullBackOff")
	})
	if _, errOut, code := d.Kubectl("", "logs", "missing"); code == 0 || !strings.Contains(errOut, "is waiting to start") {
		t.Fatalf("logs of a pod that never started: exit %d, %q", code, errOut)
	}

	// An archive imported by hand is used whatever the pull policy: no
	// registry has it. One put in the images directory is imported at the
	// next start.
	writeArchive := func(path, name string) {
		t.Helper()
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := localimage.Write(ctx, f, localimage.Image{Name: name, Cmd: []string{"sleep", "3600"}}, localimage.BusyboxPath); err != nil {
			t.Fatal(err)
		}
	}
	archive := filepath.Join(t.TempDir(), "extra.tar")
	writeArchive(archive, "pontoon.local/extra:1")
	agentDir := filepath.Join(d.DataDir, "agent")
	if out, errOut, code := d.Netns.Run(bin, "image", "import", archive, "--data-dir", agentDir); code != 0 || out != "pontoon.local/extra:1\n" {
		t.Fatalf("pontoon image import: exit %d: %q %s", code, out, errOut)
	}
	kubectl("run", "extra", "--image=pontoon.local/extra:1", "--image-pull-policy=Always")
	waitPod(t, cs, "extra", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	writeArchive(filepath.Join(agentDir, "images", "atstart.tar"), "pontoon.local/atstart:1")

	// Ctrl-C stops the node, not its pods; the next start takes them up
	// again as they are.
	before := web.Status.ContainerStatuses[0].ContainerID
	d.Stop()
	d.Start()
	d.WaitReady(60 * time.Second)
	kubectl("run", "atstart", "--image=pontoon.local/atstart:1")
	waitPod(t, cs, "atstart", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	cluster.Consistently(t, 3*time.Second, func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s := p.Status.ContainerStatuses; p.Status.Phase != corev1.PodRunning || s[0].ContainerID != before || s[0].RestartCount != 0 {
			return fmt.Errorf("after a restart of pontoon dev, web is %s with %+v", p.Status.Phase, s)
		}
		return nil
	})
	if out := kubectl("exec", "web", "--", "cat", "/tmp/note.txt"); out != "copied\n" {
		t.Fatalf("after the restart the container's file holds %q", out)
	}

	// httpd as PID 1 ignores SIGTERM: it is killed at the end of the grace
	// period, and the pod is gone then.
	start := time.Now()
	kubectl("delete", "pod", "web", "--grace-period=3")
	if took := time.Since(start); took < 2*time.Second {
		t.Fatalf("a 3 s graceful deletion of a pod ignoring SIGTERM took %v", took)
	}
	kubectl("delete", "pod", "hello", "crash", "missing", "extra", "atstart", "vols", "live", "nfs", "ends", "--grace-period=1")
	cluster.Eventually(t, 30*time.Second, func() error {
		out, _, _ := d.Netns.Run("ls", filepath.Join(d.DataDir, "agent", "pods"))
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("pod log dirs left: %s", out)
		}
		return nil
	})
}

// readPID reads a pid file.
func readPID(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return pid
}

// waitPod waits until the pod named name in default satisfies ok.
func waitPod(t *testing.T, cs kubernetes.Interface, name, what string, ok func(*corev1.Pod) bool) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	cluster.Eventually(t, 60*time.Second, func() error {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !ok(p) {
			return fmt.Errorf("pod %s is not %s: %s %+v", name, what, p.Status.Phase, p.Status.ContainerStatuses)
		}
		pod = p
		return nil
	})
	return pod
}

// TestAgentJoinsByGossip: `pontoon agent` as its own process finds the
// server through the gossip address it is given, registers its node and
// runs a pod, whose logs come back through the server.
func TestAgentJoinsByGossip(t *testing.T) {
	d := cluster.StartSplitDev(t, bin, "pontoon-e2e-agent", "--node-labels", "tier=edge")
	cs := d.Clientset()
	n, err := cs.CoreV1().Nodes().Get(context.Background(), "dev", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if n.Labels["tier"] != "edge" || n.Labels[corev1.LabelHostname] != "dev" || n.Status.NodeInfo.ContainerRuntimeVersion == "" ||
		n.Status.Allocatable.Pods().Value() != 110 || n.Spec.PodCIDR == "" {
		t.Fatalf("the node as the agent registered it: %+v %+v", n.Labels, n.Status)
	}
	if _, err := cs.CoordinationV1().Leases(corev1.NamespaceNodeLease).Get(context.Background(), "dev", metav1.GetOptions{}); err != nil {
		t.Fatalf("the node's lease: %v", err)
	}
	if out, errOut, code := d.Kubectl("", "run", "hello", "--image="+busybox, "--restart=Never", "--", "echo", "hello"); code != 0 {
		t.Fatalf("kubectl run: %s%s", out, errOut)
	}
	waitPod(t, cs, "hello", "Succeeded", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodSucceeded })
	if out, errOut, code := d.Kubectl("", "logs", "hello"); code != 0 || out != "hello\n" {
		t.Fatalf("logs: exit %d: %q %s", code, out, errOut)
	}

	// Streams with stdin: exec -i feeds a shell; attach follows a
	// container's output.
	if out, errOut, code := d.Kubectl("", "run", "ticker", "--image="+busybox, "--", "sh", "-c", "while true; do echo tick; sleep 1; done"); code != 0 {
		t.Fatalf("kubectl run: %s%s", out, errOut)
	}
	waitPod(t, cs, "ticker", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if out, errOut, code := d.Kubectl("echo from stdin | tr a-z A-Z\n", "exec", "-i", "ticker", "--", "sh"); code != 0 || out != "FROM STDIN\n" {
		t.Fatalf("exec -i: exit %d: %q %s", code, out, errOut)
	}
	// exec -it, from a terminal (script(1) gives kubectl one): the
	// command gets a terminal of its own, and its exit code comes back.
	out, errOut, code := d.Netns.Run("script", "-qec", "kubectl --kubeconfig "+d.Kubeconfig()+" exec -it ticker -- sh -c 'tty; exit 3'", "/dev/null")
	if code != 3 || !strings.Contains(out, "/dev/pts/") {
		t.Fatalf("exec -it: exit %d: %q %s", code, out, errOut)
	}
	out, _, _ = d.Netns.Run("timeout", "5", "kubectl", "--kubeconfig", d.Kubeconfig(), "attach", "ticker")
	if !strings.Contains(out, "tick\ntick\n") {
		t.Fatalf("attach printed %q", out)
	}

	// Images from a registry that wants credentials: pulled with the
	// pod's imagePullSecrets, refused without them.
	var archive bytes.Buffer
	if err := localimage.Write(context.Background(), &archive, localimage.Image{Name: "127.0.0.1:5000/private/app:1", Cmd: []string{"sleep", "3600"}}, localimage.BusyboxPath); err != nil {
		t.Fatal(err)
	}
	cluster.StartRegistry(t, d.Netns, "127.0.0.1:5000", "private/app", "puller", "s3cret", archive.Bytes())
	if out, errOut, code := d.Kubectl("", "create", "secret", "docker-registry", "regcred", "--docker-server=127.0.0.1:5000",
		"--docker-username=puller", "--docker-password=s3cret"); code != 0 {
		t.Fatalf("kubectl create secret docker-registry: %s%s", out, errOut)
	}
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: private}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{name: regcred}]
  containers: [{name: c, image: "127.0.0.1:5000/private/app:1"}]
---
apiVersion: v1
kind: Pod
metadata: {name: nocreds}
spec:
  terminationGracePeriodSeconds: 1
  containers: [{name: c, image: "127.0.0.1:5000/private/app:1", imagePullPolicy: Always}]
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	waitPod(t, cs, "private", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	cluster.Eventually(t, 30*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=nocreds"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "Failed" && strings.Contains(e.Message, "401 Unauthorized") {
				return nil
			}
		}
		return errors.New("no Failed event with the registry's 401 for a pull without credentials")
	})
	d.Kubectl("", "delete", "pod", "private", "nocreds", "--grace-period=1")

	// kubectl debug adds an ephemeral container to the running pod.
	if out, errOut, code := d.Kubectl("", "debug", "ticker", "--image="+busybox, "-c", "dbg", "--", "sh", "-c", "echo from debug; sleep 3600"); code != 0 {
		t.Fatalf("kubectl debug: exit %d: %s%s", code, out, errOut)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		out, errOut, _ := d.Kubectl("", "logs", "ticker", "-c", "dbg")
		if out != "from debug\n" {
			return fmt.Errorf("the ephemeral container's log: %q %s", out, errOut)
		}
		return nil
	})
	// Its status follows the log, which the kubelet serves at once.
	waitPod(t, cs, "ticker", "showing its ephemeral container running", func(p *corev1.Pod) bool {
		s := p.Status.EphemeralContainerStatuses
		return len(s) == 1 && s[0].State.Running != nil && p.Generation == 2
	})

	// nodes/proxy reaches the kubelet: its pods and their resource use
	// (ticker's two containers, its own and the ephemeral one).
	raw, errOut, code := d.Kubectl("", "get", "--raw", "/api/v1/nodes/dev/proxy/stats/summary")
	var summary statsapi.Summary
	if code != 0 || json.Unmarshal([]byte(raw), &summary) != nil {
		t.Fatalf("stats/summary through nodes/proxy: exit %d: %s%s", code, raw, errOut)
	}
	var tickerStats *statsapi.PodStats
	for i, p := range summary.Pods {
		if p.PodRef.Name == "ticker" {
			tickerStats = &summary.Pods[i]
		}
	}
	if summary.Node.NodeName != "dev" || summary.Node.Memory == nil || summary.Node.Fs == nil || tickerStats == nil ||
		len(tickerStats.Containers) != 2 || tickerStats.Containers[0].CPU == nil || tickerStats.Memory.WorkingSetBytes == nil || *tickerStats.Memory.WorkingSetBytes == 0 {
		t.Fatalf("stats/summary: %s", raw)
	}
	if raw, errOut, code := d.Kubectl("", "get", "--raw", "/api/v1/nodes/dev/proxy/pods"); code != 0 || !strings.Contains(raw, `"name":"ticker"`) {
		t.Fatalf("the kubelet's pods through nodes/proxy: exit %d: %s%s", code, raw, errOut)
	}

	// The runtime dies: the agent starts it again, and the pod runs on,
	// not restarted, its status kept.
	ticker, err := cs.CoreV1().Pods("default").Get(context.Background(), "ticker", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(d.DataDir, "agent", "containerd", "containerd.pid")
	pid := readPID(t, pidFile)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		b, err := os.ReadFile(pidFile)
		if err != nil || strings.TrimSpace(string(b)) == strconv.Itoa(pid) {
			return fmt.Errorf("containerd not started again after kill -9 of %d: %v", pid, err)
		}
		if out, errOut, code := d.Kubectl("", "exec", "ticker", "--", "echo", "ok"); code != 0 || out != "ok\n" {
			return fmt.Errorf("exec after the runtime's restart: exit %d: %q %s", code, out, errOut)
		}
		return nil
	})
	cluster.Consistently(t, 3*time.Second, func() error {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), "ticker", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s := p.Status.ContainerStatuses; p.Status.Phase != corev1.PodRunning || s[0].ContainerID != ticker.Status.ContainerStatuses[0].ContainerID ||
			s[0].RestartCount != 0 || !s[0].Ready || p.Status.PodIP != ticker.Status.PodIP {
			return fmt.Errorf("after a restart of the runtime, ticker is %s with %+v", p.Status.Phase, s)
		}
		return nil
	})
	d.Kubectl("", "delete", "pod", "hello", "ticker", "--grace-period=1")
}

// TestProbesAndHooks: a readiness probe turns Ready false and back as it
// fails and succeeds; a failing liveness probe restarts the container,
// with the kubelet's Unhealthy and Killing events; postStart and preStop
// hooks run, and a failing postStart restarts its container.
func TestProbesAndHooks(t *testing.T) {
	d := cluster.StartDev(t, bin, "pontoon-e2e-probes")
	cs := d.Clientset()
	ctx := context.Background()
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: probed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: `+busybox+`
    command: [sh, -c, 'touch /tmp/alive; exec httpd -f -p 8080']
    readinessProbe:
      exec: {command: [test, -f, /tmp/ready]}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      exec: {command: [test, -f, /tmp/alive]}
      periodSeconds: 1
      failureThreshold: 2
    startupProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	ready := func(want bool) {
		t.Helper()
		waitPod(t, cs, "probed", fmt.Sprintf("Ready=%v", want), func(p *corev1.Pod) bool {
			s := p.Status.ContainerStatuses
			return p.Status.Phase == corev1.PodRunning && len(s) == 1 && s[0].Started != nil && *s[0].Started && s[0].Ready == want && cluster.PodReady(p) == want
		})
	}
	ready(false)
	exec := func(cmd string) {
		t.Helper()
		if out, errOut, code := d.Kubectl("", "exec", "probed", "--", "sh", "-c", cmd); code != 0 {
			t.Fatalf("exec %s: %s%s", cmd, out, errOut)
		}
	}
	exec("touch /tmp/ready")
	ready(true)
	exec("rm /tmp/ready")
	ready(false)

	exec("rm /tmp/alive")
	waitPod(t, cs, "probed", "restarted by its liveness probe", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount == 1 && s[0].State.Running != nil
	})
	cluster.Eventually(t, 10*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=probed"})
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, e := range evs.Items {
			switch {
			case e.Reason == "Unhealthy" && strings.HasPrefix(e.Message, "Liveness probe failed"):
				seen["Unhealthy"] = true
			case e.Reason == "Killing" && strings.Contains(e.Message, "failed liveness probe, will be restarted"):
				seen["Killing"] = true
			}
		}
		if !seen["Unhealthy"] || !seen["Killing"] {
			return fmt.Errorf("events: %v", seen)
		}
		return nil
	})
	d.Kubectl("", "delete", "pod", "probed", "--grace-period=1")

	// Lifecycle hooks: postStart runs before the pod is Running, preStop
	// before the container is stopped; a failing postStart kills its
	// container, which restarts.
	host := t.TempDir()
	if _, errOut, code := d.Kubectl(`apiVersion: v1
kind: Pod
metadata: {name: hooked}
spec:
  terminationGracePeriodSeconds: 5
  volumes: [{name: host, hostPath: {path: `+host+`}}]
  containers:
  - name: c
    image: `+busybox+`
    command: [httpd, -f, -p, "8080"]
    volumeMounts: [{name: host, mountPath: /host}]
    lifecycle:
      postStart: {exec: {command: [sh, -c, 'echo started > /host/poststart']}}
      preStop: {exec: {command: [sh, -c, 'echo stopping > /host/prestop']}}
---
apiVersion: v1
kind: Pod
metadata: {name: badhook}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: `+busybox+`
    command: [sleep, "3600"]
    lifecycle:
      postStart: {exec: {command: ["false"]}}
`, "apply", "-f", "-"); code != 0 {
		t.Fatalf("apply: %s", errOut)
	}
	waitPod(t, cs, "hooked", "Running", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning })
	if b, err := os.ReadFile(filepath.Join(host, "poststart")); err != nil || string(b) != "started\n" {
		t.Fatalf("postStart hook: %q %v", b, err)
	}
	if _, errOut, code := d.Kubectl("", "delete", "pod", "hooked"); code != 0 {
		t.Fatalf("delete: %s", errOut)
	}
	if b, err := os.ReadFile(filepath.Join(host, "prestop")); err != nil || string(b) != "stopping\n" {
		t.Fatalf("preStop hook: %q %v", b, err)
	}
	waitPod(t, cs, "badhook", "restarted after its postStart hook failed", func(p *corev1.Pod) bool {
		s := p.Status.ContainerStatuses
		return len(s) == 1 && s[0].RestartCount >= 1
	})
	cluster.Eventually(t, 10*time.Second, func() error {
		evs, err := cs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=badhook"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Reason == "FailedPostStartHook" {
				return nil
			}
		}
		return errors.New("no FailedPostStartHook event")
	})
	d.Kubectl("", "delete", "pod", "badhook", "--grace-period=1")
}
