package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// TestTwoNodes runs three servers and two agents, each node in a network
// namespace of its own with its own containerd (deploy/local-cluster.sh's
// layout). A Deployment's pods spread over both nodes; `kill -9` of the
// leader while pods start and stop restarts no running pod, and every pod
// reaches its state; a node whose agent is killed goes NotReady, and the
// pods that tolerate that for 5 s are replaced on the other node while the
// others run on there; the agent, started again, takes up its pods and
// removes those deleted meanwhile.
func TestTwoNodes(t *testing.T) {
	ctx := context.Background()
	net := cluster.NewNodeNet(t, "pontoon-e2e-net", "10.250.0.")
	c := cluster.New(t, cluster.Options{Bin: bin, Servers: 3, BaseIP: 1, Net: net})
	c.Start()
	leader := c.Leader(30 * time.Second)
	// The test's client talks to a server that stays up.
	follower := c.Others(leader)[0]
	cs := follower.Clientset()
	var joins []string
	for _, s := range c.Servers {
		joins = append(joins, s.GossipAddr())
	}
	resolvConf := startUpstreamDNS(t, net.Hub, net.Prefix+"1")
	agents := map[string]*cluster.Agent{}
	for i, name := range []string{"n1", "n2"} {
		agents[name] = net.StartAgent(bin, name, 11+i, c, joins, cs, "--resolv-conf", resolvConf)
	}

	// The agents talk to followers: the leader has the scheduler and the
	// controllers to run.
	for _, a := range agents {
		out, errOut, code := a.Netns.Run("ss", "-Htn", "state", "established", "dport", "= :6443")
		if code != 0 || strings.TrimSpace(out) == "" || strings.Contains(out, leader.IP+":6443") {
			t.Fatalf("%s's connections to the API (the leader is %s): exit %d: %s%s", a.Name, leader.IP, code, out, errOut)
		}
	}

	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "spread"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](4),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "spread"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "spread"}},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers:                    []corev1.Container{{Name: "web", Image: busybox, Command: []string{"httpd", "-f", "-p", "8080"}}},
					Tolerations: []corev1.Toleration{
						{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)},
						{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](5)},
					},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
						WhenUnsatisfiable: corev1.ScheduleAnyway, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "spread"}}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	spread := runningPods(t, cs, "app=spread", 4, "")
	perNode := map[string]int{}
	for _, p := range spread {
		perNode[p.Spec.NodeName]++
	}
	if perNode["n1"] == 0 || perNode["n2"] == 0 {
		t.Fatalf("4 pods spread over two nodes: %v", perNode)
	}
	// Logs and exec reach either node through any server.
	for _, p := range spread {
		if out, errOut, code := c.Kubectl(follower, "", "exec", p.Name, "--", "hostname"); code != 0 || out != p.Name+"\n" {
			t.Fatalf("exec in %s on %s: exit %d: %q %s", p.Name, p.Spec.NodeName, code, out, errOut)
		}
	}

	checkServices(t, c, follower, cs, net, []*cluster.Agent{agents["n1"], agents["n2"]})

	// The leader dies while pods start and stop.
	churn := func(i int) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("churn-%d", i), Labels: map[string]string{"app": "churn"}},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: ptr.To[int64](1),
				Containers: []corev1.Container{{Name: "c", Image: busybox, Command: []string{"sleep", "3600"}}}}}
	}
	for i := range 6 {
		createPod(t, cs, churn(i))
	}
	leader.Kill()
	for i := range 3 {
		deletePod(t, cs, fmt.Sprintf("churn-%d", i))
	}
	for i := 6; i < 9; i++ {
		createPod(t, cs, churn(i))
	}
	leader.Start()
	c.Leader(30 * time.Second)
	churned := runningPods(t, cs, "app=churn", 6, "")
	for _, p := range churned {
		if p.Name < "churn-3" {
			t.Fatalf("%s was deleted and runs", p.Name)
		}
	}
	unchanged(t, cs, spread)

	// n2's agent dies: its node goes NotReady, and its pods leave the
	// spread Service's endpoints (marked not Ready, which
	// TestNodeLifecycle checks comes before eviction; then evicted), so
	// that connections through it from n1 all go to n1's pods; the
	// spread pods on n2 are evicted after their 5 s and replaced on n1;
	// the churn pods tolerate 300 s, and run on.
	spreadSvc, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "spread"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "spread"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	onNodeDevice(t, agents["n1"], spreadSvc.Spec.ClusterIP)
	// The pods' httpd serves their files: /etc/hostname names the pod.
	answers := func() (map[string]int, error) {
		out, errOut, code := agents["n1"].Netns.Run("busybox", "sh", "-c", "for i in $(seq 20); do busybox wget -qO- http://"+spreadSvc.Spec.ClusterIP+"/etc/hostname || exit 1; done")
		if code != 0 {
			return nil, fmt.Errorf("from n1 through the spread Service: exit %d: %s", code, errOut)
		}
		got := map[string]int{}
		for _, name := range strings.Fields(out) {
			got[name]++
		}
		return got, nil
	}
	onN2 := map[string]bool{}
	for _, p := range spread {
		onN2[p.Name] = p.Spec.NodeName == "n2"
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		got, err := answers()
		for name := range got {
			if onN2[name] {
				return nil
			}
		}
		return fmt.Errorf("no answer from n2's pods through the spread Service: %v %v", got, err)
	})
	agents["n2"].Kill()
	cluster.Eventually(t, 60*time.Second, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, "n2", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cluster.NodeReady(n) {
			return fmt.Errorf("n2 is Ready with its agent killed")
		}
		return nil
	})
	cluster.Eventually(t, 30*time.Second, func() error {
		got, err := answers()
		if err != nil {
			return err
		}
		for name := range got {
			if onN2[name] {
				return fmt.Errorf("n2 is not Ready, and its pod %s still answers through the spread Service: %v", name, got)
			}
		}
		return nil
	})
	runningPods(t, cs, "app=spread", 4, "n1")
	agents["n2"].Start()
	agents["n2"].WaitReady(cs, 60*time.Second)
	cluster.Eventually(t, 60*time.Second, func() error {
		pods, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=spread"})
		if err != nil {
			return err
		}
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				return fmt.Errorf("%s, evicted from n2, is not removed by n2's agent", p.Name)
			}
		}
		return nil
	})
	unchanged(t, cs, churned)
}

// runningPods waits until n pods match selector, not counting those
// terminating, all Running, and on node unless that is "", and returns
// them.
func runningPods(t *testing.T, cs kubernetes.Interface, selector string, n int, node string) []corev1.Pod {
	t.Helper()
	var running []corev1.Pod
	cluster.Eventually(t, 90*time.Second, func() error {
		pods, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return err
		}
		running = nil
		for _, p := range pods.Items {
			if p.DeletionTimestamp != nil {
				continue
			}
			if p.Status.Phase != corev1.PodRunning {
				return fmt.Errorf("%s on %q is %s", p.Name, p.Spec.NodeName, p.Status.Phase)
			}
			if node != "" && p.Spec.NodeName != node {
				return fmt.Errorf("%s is on %s, not %s", p.Name, p.Spec.NodeName, node)
			}
			running = append(running, p)
		}
		if len(running) != n {
			return fmt.Errorf("%d pods %s running, want %d", len(running), selector, n)
		}
		return nil
	})
	return running
}

// unchanged fails the test unless each pod still runs its first
// container, never restarted.
func unchanged(t *testing.T, cs kubernetes.Interface, pods []corev1.Pod) {
	t.Helper()
	for _, was := range pods {
		p, err := cs.CoreV1().Pods("default").Get(context.Background(), was.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s, w := p.Status.ContainerStatuses, was.Status.ContainerStatuses
		if p.UID != was.UID || p.Status.Phase != corev1.PodRunning || s[0].ContainerID != w[0].ContainerID || s[0].RestartCount != 0 {
			t.Fatalf("%s on %s: %s, container %s restarted %d times (was %s)", p.Name, p.Spec.NodeName, p.Status.Phase, s[0].ContainerID, s[0].RestartCount, w[0].ContainerID)
		}
	}
}

// createPod creates pod, retrying while the cluster has no leader.
func createPod(t *testing.T, cs kubernetes.Interface, pod *corev1.Pod) {
	t.Helper()
	cluster.Eventually(t, 30*time.Second, func() error {
		_, err := cs.CoreV1().Pods("default").Create(context.Background(), pod, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return err
	})
}

// deletePod deletes the pod named name, retrying while the cluster has no
// leader.
func deletePod(t *testing.T, cs kubernetes.Interface, name string) {
	t.Helper()
	cluster.Eventually(t, 30*time.Second, func() error {
		err := cs.CoreV1().Pods("default").Delete(context.Background(), name, metav1.DeleteOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return err
	})
}

// TestLocalClusterScript: deploy/local-cluster.sh with a server and an
// agent starts a node that runs a pod, reached through its kubectl
// wrapper; Ctrl-C stops everything and leaves no namespace, process or
// data of the node behind.
func TestLocalClusterScript(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	script := exec.Command("../../deploy/local-cluster.sh", "1", "1")
	script.Env = append(os.Environ(), "PONTOON="+bin, "DATA="+data)
	logPath := filepath.Join(t.TempDir(), "local-cluster.log")
	log, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	script.Stdout, script.Stderr = log, log
	output := func() string { b, _ := os.ReadFile(logPath); return string(b) }
	// Its own process group, as a terminal's Ctrl-C reaches the script
	// and what it started.
	script.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := script.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- script.Wait() }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		syscall.Kill(-script.Process.Pid, syscall.SIGINT)
		select {
		case <-exited:
		case <-time.After(60 * time.Second):
			syscall.Kill(-script.Process.Pid, syscall.SIGKILL)
			t.Errorf("local-cluster.sh did not stop within 60 s of Ctrl-C:\n%s", output())
		}
	}
	t.Cleanup(stop)
	kubectl := func(args ...string) (string, error) {
		b, err := exec.Command(filepath.Join(data, "kubectl"), args...).CombinedOutput()
		return string(b), err
	}
	cluster.Eventually(t, 90*time.Second, func() error {
		got, err := kubectl("get", "node", "n1", "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
		if err != nil || got != "True" {
			return fmt.Errorf("node n1 Ready: %q %v\n%s", got, err, output())
		}
		return nil
	})
	if got, err := kubectl("run", "hello", "--image="+busybox, "--", "sleep", "3600"); err != nil {
		t.Fatalf("kubectl run: %v: %s", err, got)
	}
	cluster.Eventually(t, 60*time.Second, func() error {
		got, err := kubectl("get", "pod", "hello", "-o", "jsonpath={.status.phase}")
		if err != nil || got != "Running" {
			return fmt.Errorf("pod hello: %q %v", got, err)
		}
		return nil
	})
	stop()
	if b, _ := exec.Command("ip", "netns", "list").CombinedOutput(); strings.Contains(string(b), "pontoon-lc") {
		t.Fatalf("namespaces left after Ctrl-C: %s", b)
	}
	if _, err := os.Stat(filepath.Join(data, "n1")); !os.IsNotExist(err) {
		t.Fatalf("the agent's data dir is left after Ctrl-C: %v", err)
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		if b, err := os.ReadFile(p); err == nil && strings.Contains(string(b), data) {
			t.Fatalf("left after Ctrl-C: %s", bytes.ReplaceAll(b, []byte{0}, []byte{' '}))
		}
	}
}
