package main

import (
	"context"
	"fmt"
	"log"
	"path/filepath"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/node/cri"
	"github.com/pontoon-dev/pontoon/node/localimage"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

// Sizes of the node suite (issue 21's).
const (
	startPods   = 50
	densityPods = 100
	// densityWorkers is how many pods the kubelet syncs at once; the
	// direct CRI run starts as many at a time.
	densityWorkers = 16
)

// nodeResult is what the node suite measured.
type nodeResult struct {
	startKubelet, startCRI     []time.Duration
	densityKubelet, densityCRI time.Duration
	agent                      memory
}

// measureNode measures pods on one node against the same sandboxes and
// containers started directly through CRI on the same containerd: a
// server and an agent (separate processes, so the agent's memory is its
// own) in a network namespace.
func measureNode(r *cluster.Runner, bin string) nodeResult {
	d := cluster.StartSplitDev(r, bin, "pontoon-bench-node", "--max-pods", "200")
	cs := d.Clientset()
	ctx := context.Background()
	cluster.Eventually(r, 30*time.Second, func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	rt, err := cri.Dial(ctx, "unix://"+filepath.Join(d.DataDir, "agent", "containerd", "containerd.sock"), 30*time.Second)
	if err != nil {
		r.Fatalf("CRI: %v", err)
	}
	defer rt.Close()
	direct := &directCRI{rt: rt, logDir: r.TempDir()}
	var res nodeResult

	// One of each first, so neither pays for a cold start.
	podsRunning(r, cs, "warm-0", 1, func() { createPod(r, cs, "warm-0") })
	deletePods(r, cs, "warm")
	direct.start(r, 0)
	direct.removeAll(r)

	log.Printf("node: %d pods one after another, through the API and directly through CRI", startPods)
	for i := range startPods {
		name := fmt.Sprintf("start-%d", i)
		t0 := time.Now()
		podsRunning(r, cs, name, 1, func() { createPod(r, cs, name) })
		res.startKubelet = append(res.startKubelet, time.Since(t0))
	}
	deletePods(r, cs, "start")
	for i := range startPods {
		t0 := time.Now()
		direct.start(r, i)
		res.startCRI = append(res.startCRI, time.Since(t0))
	}
	direct.removeAll(r)

	log.Printf("node: a Deployment of %d pods, and as many started directly through CRI, %d at a time", densityPods, densityWorkers)
	t0 := time.Now()
	podsRunning(r, cs, "density", densityPods, func() {
		dep := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "density"},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(densityPods)),
				Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "density"}},
				Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "density", "bench": "density"}}, Spec: benchPodSpec()}},
		}
		if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
			r.Fatalf("deployment: %v", err)
		}
	})
	res.densityKubelet = time.Since(t0)
	res.agent = memoryOf(d.AgentPID())
	if err := cs.AppsV1().Deployments("default").Delete(ctx, "density", metav1.DeleteOptions{}); err != nil {
		r.Fatalf("delete deployment: %v", err)
	}
	deletePods(r, cs, "density")
	t0 = time.Now()
	var wg sync.WaitGroup
	next := make(chan int)
	for range densityWorkers {
		wg.Go(func() {
			for i := range next {
				direct.start(r, i)
			}
		})
	}
	for i := range densityPods {
		next <- i
	}
	close(next)
	wg.Wait()
	res.densityCRI = time.Since(t0)
	direct.removeAll(r)
	return res
}

// benchPodSpec is the pod of every run: the busybox image, sleeping.
func benchPodSpec() corev1.PodSpec {
	return corev1.PodSpec{
		TerminationGracePeriodSeconds: ptr.To(int64(0)),
		Containers: []corev1.Container{{Name: "c", Image: localimage.Busybox, ImagePullPolicy: corev1.PullIfNotPresent,
			Command: []string{"sleep", "3600"}}},
	}
}

func createPod(r *cluster.Runner, cs kubernetes.Interface, name string) {
	prefix := name[:strings.LastIndex(name, "-")]
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": prefix}}, Spec: benchPodSpec()}
	if _, err := cs.CoreV1().Pods("default").Create(context.Background(), p, metav1.CreateOptions{}); err != nil {
		r.Fatalf("create pod %s: %v", name, err)
	}
}

// podsRunning runs create, then waits until n pods labelled bench=label
// (the prefix of a name) have been seen Running by a watch.
func podsRunning(r *cluster.Runner, cs kubernetes.Interface, name string, n int, create func()) {
	label := name
	if i := strings.LastIndex(name, "-"); i > 0 && n == 1 {
		label = name[:i]
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	w, err := cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{LabelSelector: "bench=" + label})
	if err != nil {
		r.Fatalf("watch: %v", err)
	}
	defer w.Stop()
	create()
	running := map[string]bool{}
	for ev := range w.ResultChan() {
		p, ok := ev.Object.(*corev1.Pod)
		if !ok || ev.Type == watch.Deleted {
			continue
		}
		if p.Status.Phase == corev1.PodRunning && (n > 1 || p.Name == name) {
			running[p.Name] = true
		}
		if len(running) >= n {
			return
		}
	}
	l, _ := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: "bench=" + label})
	var states []string
	for _, p := range l.Items {
		states = append(states, fmt.Sprintf("%s %s %+v", p.Name, p.Status.Phase, p.Status.ContainerStatuses))
	}
	r.Fatalf("%s: %d of %d pods seen Running: %s", name, len(running), n, strings.Join(states, "; "))
}

// deletePods deletes the pods labelled bench=label and waits until they
// are gone.
func deletePods(r *cluster.Runner, cs kubernetes.Interface, label string) {
	ctx := context.Background()
	sel := metav1.ListOptions{LabelSelector: "bench=" + label}
	if err := cs.CoreV1().Pods("default").DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: ptr.To(int64(0))}, sel); err != nil {
		r.Fatalf("delete pods: %v", err)
	}
	cluster.Eventually(r, 3*time.Minute, func() error {
		l, err := cs.CoreV1().Pods("default").List(ctx, sel)
		if err == nil && len(l.Items) > 0 {
			err = fmt.Errorf("%d pods %s left", len(l.Items), label)
		}
		return err
	})
}

// directCRI starts sandboxes and containers as the kubelet makes them,
// straight through CRI.
type directCRI struct {
	rt     *cri.Client
	logDir string
	mu     sync.Mutex
	ids    []string
}

// start runs sandbox i and its container, returning once it is started.
func (c *directCRI) start(r *cluster.Runner, i int) {
	ctx := context.Background()
	uid := fmt.Sprintf("direct-%d-%d", i, time.Now().UnixNano())
	sc := &runtimeapi.PodSandboxConfig{
		Metadata:     &runtimeapi.PodSandboxMetadata{Name: uid, Namespace: "bench", Uid: uid},
		Hostname:     "direct",
		LogDirectory: filepath.Join(c.logDir, uid),
		Labels:       map[string]string{"io.kubernetes.pod.uid": uid},
		Linux: &runtimeapi.LinuxPodSandboxConfig{CgroupParent: "/pontoon/dev/pod" + uid,
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{NamespaceOptions: &runtimeapi.NamespaceOption{}}},
	}
	sb, err := c.rt.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: sc})
	if err != nil {
		r.Fatalf("RunPodSandbox: %v", err)
	}
	c.mu.Lock()
	c.ids = append(c.ids, sb.PodSandboxId)
	c.mu.Unlock()
	ctr, err := c.rt.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sb.PodSandboxId, SandboxConfig: sc, Config: &runtimeapi.ContainerConfig{
		Metadata: &runtimeapi.ContainerMetadata{Name: "c"},
		Image:    &runtimeapi.ImageSpec{Image: localimage.Busybox},
		Command:  []string{"sleep", "3600"},
		LogPath:  "c/0.log",
		Linux:    &runtimeapi.LinuxContainerConfig{Resources: &runtimeapi.LinuxContainerResources{CpuShares: 2, CpuPeriod: 100000}},
	}})
	if err != nil {
		r.Fatalf("CreateContainer: %v", err)
	}
	if _, err := c.rt.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: ctr.ContainerId}); err != nil {
		r.Fatalf("StartContainer: %v", err)
	}
}

// removeAll removes the sandboxes started directly (their cgroups go with
// the node's cleanup).
func (c *directCRI) removeAll(r *cluster.Runner) {
	ctx := context.Background()
	for _, id := range c.ids {
		if _, err := c.rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: id}); err != nil {
			r.Fatalf("StopPodSandbox: %v", err)
		}
		if _, err := c.rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: id}); err != nil {
			r.Fatalf("RemovePodSandbox: %v", err)
		}
	}
	c.ids = nil
}

func (n *nodeResult) markdown(b *strings.Builder) {
	kp50, kp99 := durations(n.startKubelet)
	cp50, cp99 := durations(n.startCRI)
	fmt.Fprintf(b, "\n## Pods on a node (issue 21)\n\n")
	fmt.Fprintf(b, "One server and one agent (`pontoon server`, `pontoon agent` with its own containerd 1.6 and runc from Debian) in a network namespace of their own. "+
		"Every pod is the busybox image running `sleep`. The reference is the same sandbox and container started directly through CRI "+
		"(RunPodSandbox, CreateContainer, StartContainer) on the same containerd, in the same run: the floor the kubelet adds its work to.\n\n")
	fmt.Fprintf(b, "### Pod start-up, %d pods one after another\n\n", startPods)
	fmt.Fprintf(b, "Through the API: from the create until a watch sees the pod Running. Directly: from RunPodSandbox until StartContainer returns.\n\n")
	fmt.Fprintf(b, "| | p50 | p99 (slowest of %d) |\n|---|---|---|\n", startPods)
	fmt.Fprintf(b, "| through the API and the kubelet | %s | %s |\n| directly through CRI | %s | %s |\n| ratio | %s | %s |\n\n",
		ms(kp50), ms(kp99), ms(cp50), ms(cp99), ratio(float64(kp50), float64(cp50)), ratio(float64(kp99), float64(cp99)))
	fmt.Fprintf(b, "### Density: %d pods at once\n\n", densityPods)
	fmt.Fprintf(b, "A Deployment of %d replicas, from its create until a watch has seen every pod Running; directly, %d sandboxes and containers started %d at a time (the kubelet's workers).\n\n",
		densityPods, densityPods, densityWorkers)
	fmt.Fprintf(b, "| through the API and the kubelet | directly through CRI | ratio |\n|---|---|---|\n| %s | %s | %s |\n\n",
		ms(n.densityKubelet), ms(n.densityCRI), ratio(float64(n.densityKubelet), float64(n.densityCRI)))
	fmt.Fprintf(b, "### The agent's memory with %d pods running\n\n| resident | anonymous | file-backed |\n|---|---|---|\n| %d MiB | %d MiB | %d MiB |\n\n",
		densityPods, n.agent.rss>>20, n.agent.anon>>20, n.agent.file>>20)
	fmt.Fprintf(b, "### Goals (issue 21)\n\n")
	writeGoal(b, kp99 < time.Second, fmt.Sprintf("pod start-up p99 under 1 s (%s)", ms(kp99)))
	writeGoal(b, float64(kp99) <= 1.2*float64(cp99), fmt.Sprintf("pod start-up within 1.2x of direct CRI (p99 %s against %s, %s)", ms(kp99), ms(cp99), ratio(float64(kp99), float64(cp99))))
	writeGoal(b, float64(n.densityKubelet) <= 1.3*float64(n.densityCRI), fmt.Sprintf("100 pods within 1.3x of direct CRI (%s)", ratio(float64(n.densityKubelet), float64(n.densityCRI))))
	writeGoal(b, n.agent.rss < 64<<20, fmt.Sprintf("the agent's resident memory with 100 pods under 64 MiB (%d MiB)", n.agent.rss>>20))
	b.WriteString("\n")
}
