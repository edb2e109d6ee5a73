package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/membership"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

// testNodes are n nodes of 8 CPUs and 16 GiB.
func testNodes(n int) []cluster.Node {
	out := make([]cluster.Node, n)
	for i := range out {
		out[i] = cluster.Node{Name: fmt.Sprintf("node-%d", i), CPU: "8", Memory: "16Gi"}
	}
	return out
}

// podCensus follows a controller's pods from a watch and checks at every
// event that the rollout stays within its bounds.
type podCensus struct {
	mu      sync.Mutex
	pods    map[string]*corev1.Pod
	created map[string]map[string]bool // pod names seen per pod-template-hash
	maxPods int                        // most active pods at once
	minUp   int                        // fewest ready active pods once armed
	armed   bool
	// together is set when pods of two templates were active at once.
	together bool
}

func watchPods(t *testing.T, cs kubernetes.Interface, ns, selector string) *podCensus {
	t.Helper()
	pc := &podCensus{pods: map[string]*corev1.Pod{}, created: map[string]map[string]bool{}, minUp: 1 << 30}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range w.ResultChan() {
			pod, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			pc.mu.Lock()
			if ev.Type == watch.Deleted {
				delete(pc.pods, pod.Name)
			} else {
				pc.pods[pod.Name] = pod
			}
			hash := pod.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
			if pc.created[hash] == nil {
				pc.created[hash] = map[string]bool{}
			}
			pc.created[hash][pod.Name] = true
			pc.observe()
			pc.mu.Unlock()
		}
	}()
	return pc
}

func (pc *podCensus) observe() {
	active, up := 0, 0
	hashes := map[string]bool{}
	for _, p := range pc.pods {
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		active++
		hashes[p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]] = true
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
				up++
			}
		}
	}
	pc.maxPods = max(pc.maxPods, active)
	if pc.armed {
		pc.minUp = min(pc.minUp, up)
	}
	if len(hashes) > 1 {
		pc.together = true
	}
}

// arm starts counting from now: the bounds apply from a settled state.
func (pc *podCensus) arm() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	pc.armed, pc.maxPods, pc.minUp, pc.together = true, 0, 1<<30, false
	pc.observe()
}

// createdOf counts the pods ever seen of the template with the image.
func (pc *podCensus) createdOf(image string) int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	hashes := map[string]bool{}
	for _, p := range pc.pods {
		if p.Spec.Containers[0].Image == image {
			hashes[p.Labels[appsv1.DefaultDeploymentUniqueLabelKey]] = true
		}
	}
	n := 0
	for h := range hashes {
		n += len(pc.created[h])
	}
	return n
}

func (pc *podCensus) bounds() (maxPods, minUp int, together bool) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	return pc.maxPods, pc.minUp, pc.together
}

func webDeployment(name string, replicas int32, strategy appsv1.DeploymentStrategy) *appsv1.Deployment {
	d := deployment(name, replicas)
	d.Spec.Strategy = strategy
	d.Spec.Template.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}
	return d
}

func rolloutStatus(t *testing.T, c *cluster.Cluster, s *cluster.Server, name string) {
	t.Helper()
	out, errOut, code := c.Kubectl(s, "", "rollout", "status", "deployment/"+name, "--timeout=90s")
	if code != 0 {
		t.Fatalf("kubectl rollout status %s: exit %d: %s %s", name, code, out, errOut)
	}
}

func kubectlOK(t *testing.T, c *cluster.Cluster, s *cluster.Server, args ...string) string {
	t.Helper()
	out, errOut, code := c.Kubectl(s, "", args...)
	if code != 0 {
		t.Fatalf("kubectl %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func podImages(t *testing.T, cs kubernetes.Interface, selector string) map[string]int {
	t.Helper()
	l, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, p := range l.Items {
		if p.DeletionTimestamp == nil {
			out[p.Spec.Containers[0].Image]++
		}
	}
	return out
}

// TestProportionalScaling scales a Deployment whose rollout is stuck on
// an image that never becomes ready, Kubernetes' documented example: with
// 10 replicas, maxSurge 3 and maxUnavailable 2, the old ReplicaSet has 8
// and the new one 5; scaled to 15, the 5 more are shared out in
// proportion, 3 to the old and 2 to the new.
func TestProportionalScaling(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	kubelet := cluster.StartFakeKubelet(t, wcs, testNodes(3)...)
	kubelet.Unready = func(p *corev1.Pod) bool { return p.Spec.Containers[0].Image == "busybox:bad" }
	d := webDeployment("prop", 10, appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(3)), MaxUnavailable: ptr.To(intstr.FromInt32(2))}})
	if _, err := wcs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rolloutStatus(t, c, r, "prop")
	// sizes checks that the old and new ReplicaSets have these replicas.
	sizes := func(old, cur int32) func() error {
		return func() error {
			l, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=prop"})
			if err != nil {
				return err
			}
			got := map[string]int32{}
			for _, rs := range l.Items {
				got[rs.Spec.Template.Spec.Containers[0].Image] = ptr.Deref(rs.Spec.Replicas, 0)
			}
			if want := map[string]int32{"busybox": old, "busybox:bad": cur}; !maps.Equal(got, want) {
				return fmt.Errorf("replica sets by image %v, want %v", got, want)
			}
			return nil
		}
	}
	kubectlOK(t, c, w, "set", "image", "deployment/prop", "c=busybox:bad")
	cluster.Eventually(t, 30*time.Second, sizes(8, 5))
	kubectlOK(t, c, w, "scale", "deployment/prop", "--replicas=15")
	cluster.Eventually(t, 30*time.Second, sizes(11, 7))
	// It stays so: the old pods may not go below 13 available, and 18 is
	// as many as may exist.
	cluster.Consistently(t, 2*time.Second, sizes(11, 7))
}

// TestReplicationController runs a core/v1 ReplicationController on the
// ReplicaSet controller's work, as Kubernetes does: its selector defaults
// to its template's labels; it keeps its replicas, scaled with kubectl,
// owns them and reports them ready; its pods go with it.
func TestReplicationController(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	rcs := r.Clientset()
	cluster.StartFakeKubelet(t, w.Clientset(), testNodes(2)...)
	kubectlOK(t, c, w, "apply", "-f", writeTemp(t, `apiVersion: v1
kind: ReplicationController
metadata: {name: legacy}
spec:
  replicas: 3
  template:
    metadata: {labels: {app: legacy}}
    spec:
      containers: [{name: c, image: busybox}]
`))
	// ready checks that the controller owns n running pods, all ready,
	// and says so for its latest generation.
	ready := func(n int32) func() error {
		return func() error {
			rc, err := rcs.CoreV1().ReplicationControllers("default").Get(ctx, "legacy", metav1.GetOptions{})
			if err != nil {
				return err
			}
			pods, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=legacy"})
			if err != nil {
				return err
			}
			var running, owned int32
			for _, p := range pods.Items {
				if p.DeletionTimestamp != nil {
					continue
				}
				running++
				if ref := metav1.GetControllerOf(&p); ref != nil && ref.Kind == "ReplicationController" && ref.UID == rc.UID {
					owned++
				}
			}
			if running != n || owned != n || rc.Status.ReadyReplicas != n || rc.Status.ObservedGeneration != rc.Generation {
				return fmt.Errorf("%d pods, %d owned by the controller, which reports %d ready (generation %d of %d); want %d",
					running, owned, rc.Status.ReadyReplicas, rc.Status.ObservedGeneration, rc.Generation, n)
			}
			return nil
		}
	}
	cluster.Eventually(t, 30*time.Second, ready(3))
	rc, err := rcs.CoreV1().ReplicationControllers("default").Get(ctx, "legacy", metav1.GetOptions{})
	if err != nil || !maps.Equal(rc.Spec.Selector, map[string]string{"app": "legacy"}) {
		t.Fatalf("selector not defaulted from the template: %v %v", err, rc.Spec.Selector)
	}
	kubectlOK(t, c, w, "scale", "rc", "legacy", "--replicas=1")
	cluster.Eventually(t, 30*time.Second, ready(1))
	if out := kubectlOK(t, c, r, "get", "rc", "legacy"); !strings.Contains(out, "DESIRED   CURRENT   READY") {
		t.Fatalf("get rc:\n%s", out)
	}
	kubectlOK(t, c, w, "delete", "rc", "legacy")
	cluster.Eventually(t, 30*time.Second, func() error {
		pods, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=legacy"})
		if err != nil || len(pods.Items) > 0 {
			return fmt.Errorf("pods left after the controller was deleted: %v %d", err, len(pods.Items))
		}
		return nil
	})
}

// TestDeploymentRollout rolls a Deployment out, to a new image and back
// with kubectl, checking maxSurge and maxUnavailable from a watch at every
// step; then pauses and resumes it, and rolls a Recreate Deployment.
func TestDeploymentRollout(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	cluster.StartFakeKubelet(t, wcs, testNodes(3)...)

	const replicas, surge, unavailable = 10, 2, 1
	census := watchPods(t, rcs, "default", "app=web")
	d := webDeployment("web", replicas, appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
		RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: ptr.To(intstr.FromInt32(surge)), MaxUnavailable: ptr.To(intstr.FromInt32(unavailable))}})
	if _, err := wcs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rolloutStatus(t, c, r, "web")
	if got := podImages(t, rcs, "app=web"); got["busybox"] != replicas || len(got) != 1 {
		t.Fatalf("after the first rollout: images %v", got)
	}
	// The controllers write as kube-controller-manager, as in Kubernetes.
	dep, err := rcs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rss, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(rss.Items) != 1 {
		t.Fatalf("replica sets after the first rollout: %v %v", err, rss)
	}
	if got, rs := managers(dep), managers(&rss.Items[0]); !slices.Contains(got, "kube-controller-manager/status") || !slices.Contains(rs, "kube-controller-manager/") {
		t.Fatalf("field managers: deployment %v, replica set %v; want kube-controller-manager's status and replica set", got, rs)
	}

	roll := func(what string, args ...string) {
		t.Helper()
		census.arm()
		kubectlOK(t, c, w, args...)
		rolloutStatus(t, c, r, "web")
		maxPods, minUp, _ := census.bounds()
		t.Logf("%s: at most %d pods, at least %d ready", what, maxPods, minUp)
		if maxPods > replicas+surge {
			t.Fatalf("%s: %d pods at once; maxSurge allows %d", what, maxPods, replicas+surge)
		}
		if minUp < replicas-unavailable {
			t.Fatalf("%s: only %d pods ready at one point; maxUnavailable allows %d", what, minUp, replicas-unavailable)
		}
	}
	// The Deployment's annotations follow onto its current ReplicaSet, as
	// kube-controller-manager copies them: the change cause of each
	// revision is kept there.
	changeCause := func(want string) {
		t.Helper()
		cluster.Eventually(t, 20*time.Second, func() error {
			d, err := rcs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return err
			}
			rss, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return err
			}
			for _, rs := range rss.Items {
				if rs.Annotations["deployment.kubernetes.io/revision"] == d.Annotations["deployment.kubernetes.io/revision"] &&
					rs.Annotations["kubernetes.io/change-cause"] == want {
					return nil
				}
			}
			return fmt.Errorf("no current ReplicaSet with change cause %q", want)
		})
	}
	kubectlOK(t, c, w, "annotate", "deployment/web", "kubernetes.io/change-cause=first")
	changeCause("first")
	roll("new image", "set", "image", "deployment/web", "c=busybox:2")
	if got := podImages(t, rcs, "app=web"); got["busybox:2"] != replicas || len(got) != 1 {
		t.Fatalf("after the new image: images %v", got)
	}
	kubectlOK(t, c, w, "annotate", "deployment/web", "kubernetes.io/change-cause=second", "--overwrite")
	changeCause("second")
	history := kubectlOK(t, c, r, "rollout", "history", "deployment/web")
	if !strings.Contains(history, "1         first") || !strings.Contains(history, "2         second") {
		t.Fatalf("rollout history lacks revisions 1 and 2 with their change causes:\n%s", history)
	}
	roll("undo", "rollout", "undo", "deployment/web")
	if got := podImages(t, rcs, "app=web"); got["busybox"] != replicas || len(got) != 1 {
		t.Fatalf("after undo: images %v", got)
	}
	dep, err = rcs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Annotations["deployment.kubernetes.io/revision"] != "3" || dep.Annotations["kubernetes.io/change-cause"] != "first" || dep.Status.ObservedGeneration != dep.Generation ||
		dep.Status.UpdatedReplicas != replicas || dep.Status.AvailableReplicas != replicas || dep.Status.ReadyReplicas != replicas {
		t.Fatalf("after undo: revision %q, status %+v", dep.Annotations["deployment.kubernetes.io/revision"], dep.Status)
	}
	conds := map[appsv1.DeploymentConditionType]string{}
	for _, cond := range dep.Status.Conditions {
		conds[cond.Type] = string(cond.Status) + "/" + cond.Reason
	}
	if conds[appsv1.DeploymentAvailable] != "True/MinimumReplicasAvailable" || conds[appsv1.DeploymentProgressing] != "True/NewReplicaSetAvailable" {
		t.Fatalf("conditions after undo: %v", conds)
	}
	rsList, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
	if err != nil || len(rsList.Items) != 2 {
		t.Fatalf("replica sets after undo: %v (%v)", len(rsList.Items), err)
	}

	roll("restart", "rollout", "restart", "deployment/web")
	kubectlOK(t, c, w, "rollout", "pause", "deployment/web")
	kubectlOK(t, c, w, "set", "image", "deployment/web", "c=busybox:paused")
	// Once the controller has seen the change, nothing has moved.
	cluster.Eventually(t, 20*time.Second, func() error {
		d, err := rcs.AppsV1().Deployments("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if d.Status.ObservedGeneration != d.Generation {
			return fmt.Errorf("generation %d observed %d", d.Generation, d.Status.ObservedGeneration)
		}
		return nil
	})
	if got := podImages(t, rcs, "app=web"); got["busybox:paused"] != 0 {
		t.Fatalf("a paused deployment rolled: images %v", got)
	}
	if l, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=web"}); err != nil || len(l.Items) != 3 {
		t.Fatalf("a paused deployment made a replica set: %d (%v)", len(l.Items), err)
	}
	roll("resume", "rollout", "resume", "deployment/web")
	if got := podImages(t, rcs, "app=web"); got["busybox:paused"] != replicas {
		t.Fatalf("after resume: images %v", got)
	}
	describe := kubectlOK(t, c, r, "describe", "deployment", "web")
	if !strings.Contains(describe, "ScalingReplicaSet") || !strings.Contains(describe, "deployment-controller") {
		t.Fatalf("kubectl describe shows no events of the controller:\n%s", describe)
	}

	// Recreate: the old pods are gone before a new one is made.
	recreate := watchPods(t, rcs, "default", "app=batch")
	rd := webDeployment("batch", 4, appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType})
	if _, err := wcs.AppsV1().Deployments("default").Create(ctx, rd, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rolloutStatus(t, c, r, "batch")
	recreate.arm()
	kubectlOK(t, c, w, "set", "image", "deployment/batch", "c=busybox:2")
	rolloutStatus(t, c, r, "batch")
	if _, _, together := recreate.bounds(); together {
		t.Fatal("Recreate ran old and new pods at the same time")
	}
	if got := podImages(t, rcs, "app=batch"); got["busybox:2"] != 4 || len(got) != 1 {
		t.Fatalf("after Recreate: images %v", got)
	}
}

// TestScheduler checks the scheduler end to end: pods go to the nodes
// their constraints allow, a pod that fits nowhere gets kube-scheduler's
// FailedScheduling event and PodScheduled=False, and it is placed once a
// node that fits appears; a pod of higher priority preempts.
// managers lists obj's field managers as manager/subresource.
func managers(obj metav1.Object) []string {
	var out []string
	for _, m := range obj.GetManagedFields() {
		out = append(out, m.Manager+"/"+m.Subresource)
	}
	return out
}

func TestScheduler(t *testing.T) {
	_, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	nodes := testNodes(2)
	nodes[1].Labels = map[string]string{"disk": "ssd"}
	kubelet := cluster.StartFakeKubelet(t, wcs, nodes...)

	pod := func(name, cpu string, selector map[string]string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{NodeSelector: selector,
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu)}}}}}}
	}
	boundTo := func(name string) string {
		t.Helper()
		var node string
		cluster.Eventually(t, 20*time.Second, func() error {
			p, err := rcs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if node = p.Spec.NodeName; node == "" {
				return fmt.Errorf("pod %s not bound", name)
			}
			return nil
		})
		return node
	}
	for _, p := range []*corev1.Pod{pod("ssd", "1", map[string]string{"disk": "ssd"}), pod("any", "1", nil)} {
		if _, err := wcs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := boundTo("ssd"); got != "node-1" {
		t.Fatalf("the pod selecting disk=ssd went to %s", got)
	}
	boundTo("any")

	// A pod with scheduling gates waits, marked SchedulingGated, and
	// cannot be bound; a pod created after it is placed first, and it is
	// placed once its gates are removed.
	gated := pod("gated", "100m", nil)
	gated.Spec.SchedulingGates = []corev1.PodSchedulingGate{{Name: "example.com/quota"}}
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, gated, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err := wcs.CoreV1().Pods("default").Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "gated"}, Target: corev1.ObjectReference{Kind: "Node", Name: "node-0"}}, metav1.CreateOptions{})
	if !apierrors.IsConflict(err) {
		t.Fatalf("binding a gated pod: %v", err)
	}
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, pod("after-gated", "100m", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	boundTo("after-gated")
	g, err := rcs.CoreV1().Pods("default").Get(ctx, "gated", metav1.GetOptions{})
	if err != nil || g.Spec.NodeName != "" || len(g.Status.Conditions) != 1 || g.Status.Conditions[0].Reason != corev1.PodReasonSchedulingGated {
		t.Fatalf("gated pod: %v, node %q, conditions %+v", err, g.Spec.NodeName, g.Status.Conditions)
	}
	if _, err := wcs.CoreV1().Pods("default").Patch(ctx, "gated", types.JSONPatchType, []byte(`[{"op":"remove","path":"/spec/schedulingGates"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	boundTo("gated")
	// The scheduler left it alone while it was gated: it never tried
	// (and failed) to bind it.
	cluster.Eventually(t, 20*time.Second, func() error {
		evs, err := rcs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=gated"})
		if err != nil {
			return err
		}
		var reasons []string
		for _, e := range evs.Items {
			reasons = append(reasons, e.Reason)
		}
		if !slices.Equal(reasons, []string{"Scheduled"}) {
			return fmt.Errorf("events of the gated pod: %v", reasons)
		}
		return nil
	})

	if _, err := wcs.CoreV1().Pods("default").Create(ctx, pod("huge", "12", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	const want = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod."
	cluster.Eventually(t, 20*time.Second, func() error {
		evs, err := rcs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: fields.Set{
			"involvedObject.name": "huge", "reason": "FailedScheduling"}.String()})
		if err != nil {
			return err
		}
		if len(evs.Items) == 0 || evs.Items[0].Message != want || evs.Items[0].Source.Component != "default-scheduler" {
			return fmt.Errorf("FailedScheduling events: %+v", evs.Items)
		}
		p, err := rcs.CoreV1().Pods("default").Get(ctx, "huge", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == "Unschedulable" && c.Message == want {
				return nil
			}
		}
		return fmt.Errorf("no PodScheduled=False condition: %+v", p.Status.Conditions)
	})
	huge, err := rcs.CoreV1().Pods("default").Get(ctx, "huge", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := managers(huge); !slices.Contains(got, "kube-scheduler/status") {
		t.Fatalf("the unschedulable pod's status is managed by %v, want kube-scheduler among them", got)
	}
	if err := kubelet.AddNode(ctx, cluster.Node{Name: "big", CPU: "16", Memory: "32Gi"}); err != nil {
		t.Fatal(err)
	}
	if got := boundTo("huge"); got != "big" {
		t.Fatalf("the 12-CPU pod went to %s", got)
	}
	p, err := rcs.CoreV1().Pods("default").Get(ctx, "huge", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue {
			t.Fatalf("bound pod has PodScheduled %s", c.Status)
		}
	}

	// Priority comes from PriorityClasses, as kube-apiserver's admission
	// decides it.
	for name, value := range map[string]int32{"low": 1, "high": 1000} {
		pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value}
		if _, err := wcs.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	unknown := pod("unknown", "1", nil)
	unknown.Spec.PriorityClassName = "nosuch"
	_, err = wcs.CoreV1().Pods("default").Create(ctx, unknown, metav1.CreateOptions{})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "no PriorityClass with name nosuch was found") {
		t.Fatalf("a pod of an unknown priority class: %v", err)
	}
	own := pod("own", "1", nil)
	own.Spec.Priority = ptr.To[int32](5)
	if _, err = wcs.CoreV1().Pods("default").Create(ctx, own, metav1.CreateOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("a pod with a priority of its own: %v", err)
	}
	if p.Spec.Priority == nil || *p.Spec.Priority != 0 || p.Spec.PreemptionPolicy == nil || *p.Spec.PreemptionPolicy != corev1.PreemptLowerPriority {
		t.Fatalf("a pod without a class: priority %v, preemption policy %v", p.Spec.Priority, p.Spec.PreemptionPolicy)
	}

	// Preemption: "big" (16 CPUs) holds "huge" (12, priority 0) and
	// "filler" (3, low). A 3-CPU pod of class high fits nowhere;
	// evicting the least important pods that make room takes "huge" only,
	// as kube-scheduler would.
	prioritized := func(name, cpu, class string) *corev1.Pod {
		p := pod(name, cpu, map[string]string{corev1.LabelHostname: "big"})
		p.Spec.PriorityClassName = class
		return p
	}
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, prioritized("filler", "3", "low"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	boundTo("filler")
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, prioritized("urgent", "3", "high"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if got := boundTo("urgent"); got != "big" {
		t.Fatalf("the urgent pod went to %s", got)
	}
	if _, err := rcs.CoreV1().Pods("default").Get(ctx, "huge", metav1.GetOptions{}); err == nil {
		t.Fatal("the preempted pod is still there")
	}
	if _, err := rcs.CoreV1().Pods("default").Get(ctx, "filler", metav1.GetOptions{}); err != nil {
		t.Fatalf("a pod that did not need to go was preempted: %v", err)
	}
	evs, err := rcs.CoreV1().Events("default").List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=huge,reason=Preempted"})
	if err != nil || len(evs.Items) == 0 {
		t.Fatalf("no Preempted event on the victim (%v)", err)
	}
}

// TestForegroundDeletionKeepsWhatOthersOwn: what kube-apiserver 1.33 does,
// as Kubernetes' conformance tests check it. A dependent with another
// valid owner outlives its owner's foreground deletion, owned by the
// other alone; owners in a circle, one deleted in the foreground, all go
// within seconds; the DELETE answers 200 with the object that stays.
func TestForegroundDeletionKeepsWhatOthersOwn(t *testing.T) {
	_, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	cms := wcs.CoreV1().ConfigMaps("default")
	ownerRef := func(kind string, m metav1.Object) metav1.OwnerReference {
		return metav1.OwnerReference{APIVersion: "v1", Kind: kind, Name: m.GetName(), UID: m.GetUID(), BlockOwnerDeletion: ptr.To(true)}
	}

	a, err := cms.Create(ctx, configMap("owner-a", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := cms.Create(ctx, configMap("owner-b", nil), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	shared := configMap("shared", nil)
	shared.OwnerReferences = []metav1.OwnerReference{ownerRef("ConfigMap", a), ownerRef("ConfigMap", b)}
	if _, err := cms.Create(ctx, shared, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var code int
	res := wcs.CoreV1().RESTClient().Delete().Namespace("default").Resource("configmaps").Name("owner-a").
		Body(&metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}).Do(ctx).StatusCode(&code)
	if obj, err := res.Get(); err != nil || code != http.StatusOK || obj.(*corev1.ConfigMap).DeletionTimestamp == nil {
		t.Fatalf("foreground DELETE answered %d %v, want 200 with the object marked", code, err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if _, err := rcs.CoreV1().ConfigMaps("default").Get(ctx, "owner-a", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return fmt.Errorf("owner-a: %v", err)
		}
		return nil
	})
	got, err := rcs.CoreV1().ConfigMaps("default").Get(ctx, "shared", metav1.GetOptions{})
	if err != nil || len(got.OwnerReferences) != 1 || got.OwnerReferences[0].UID != b.UID {
		t.Fatalf("the dependent owner-b still owns: %+v %v", got, err)
	}

	pods := wcs.CoreV1().Pods("default")
	var circle []*corev1.Pod
	for i := range 3 {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprint("circle-", i)},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{"nowhere": "true"}, Containers: []corev1.Container{{Name: "c", Image: "pause"}}}}
		p, err := pods.Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		circle = append(circle, p)
	}
	for i, p := range circle {
		refs, _ := json.Marshal(map[string]any{"metadata": map[string]any{"ownerReferences": []metav1.OwnerReference{ownerRef("Pod", circle[(i+2)%3])}}})
		if _, err := pods.Patch(ctx, p.Name, types.MergePatchType, refs, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	if err := pods.Delete(ctx, "circle-0", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 20*time.Second, func() error {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		for _, p := range l.Items {
			if strings.HasPrefix(p.Name, "circle-") {
				return fmt.Errorf("%s is still there (finalizers %v)", p.Name, p.Finalizers)
			}
		}
		return nil
	})
	t.Logf("a circle of three owners went in %v", time.Since(start).Round(time.Millisecond))

	if _, err := wcs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "going"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	res = wcs.CoreV1().RESTClient().Delete().Resource("namespaces").Name("going").Do(ctx).StatusCode(&code)
	if obj, err := res.Get(); err != nil || code != http.StatusOK || obj.(*corev1.Namespace).Status.Phase != corev1.NamespaceTerminating {
		t.Fatalf("namespace DELETE answered %d %v, want 200 with the namespace terminating", code, err)
	}
}

// TestGarbageCollector deletes Deployments with each propagation policy
// and checks what happens to their ReplicaSets and pods.
func TestGarbageCollector(t *testing.T) {
	_, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	cluster.StartFakeKubelet(t, wcs, testNodes(2)...)

	count := func(app string) (rs, pods int, orphans int) {
		t.Helper()
		rl, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range rl.Items {
			if len(x.OwnerReferences) == 0 {
				orphans++
			}
		}
		pl, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			t.Fatal(err)
		}
		return len(rl.Items), len(pl.Items), orphans
	}
	for _, policy := range []metav1.DeletionPropagation{metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan} {
		name := strings.ToLower(string(policy))
		if _, err := wcs.AppsV1().Deployments("default").Create(ctx, webDeployment(name, 3, appsv1.DeploymentStrategy{}), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		cluster.Eventually(t, 30*time.Second, func() error {
			if rs, pods, _ := count(name); rs != 1 || pods != 3 {
				return fmt.Errorf("%s: %d replica sets, %d pods", name, rs, pods)
			}
			return nil
		})
		if err := wcs.AppsV1().Deployments("default").Delete(ctx, name, metav1.DeleteOptions{PropagationPolicy: &policy}); err != nil {
			t.Fatal(err)
		}
		if policy == metav1.DeletePropagationForeground {
			// The owner stays, marked, until its dependents are gone.
			d, err := rcs.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{})
			if err == nil && d.DeletionTimestamp == nil {
				t.Fatal("a foreground-deleted deployment is not marked for deletion")
			}
		}
		cluster.Eventually(t, 30*time.Second, func() error {
			if _, err := rcs.AppsV1().Deployments("default").Get(ctx, name, metav1.GetOptions{}); err == nil {
				return fmt.Errorf("%s: deployment still there", name)
			}
			rs, pods, orphans := count(name)
			if policy == metav1.DeletePropagationOrphan {
				if rs != 1 || orphans != 1 || pods != 3 {
					return fmt.Errorf("orphan: %d replica sets (%d orphaned), %d pods", rs, orphans, pods)
				}
				return nil
			}
			if rs != 0 || pods != 0 {
				return fmt.Errorf("%s: %d replica sets, %d pods left", name, rs, pods)
			}
			return nil
		})
	}

	// A cluster-scoped owner keeps its namespaced dependent; a reference
	// that names it with another uid, or names a namespaced owner in
	// another namespace, counts as absent, as in Kubernetes.
	owner, err := wcs.CoreV1().Nodes().Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gc-owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	other, err := wcs.CoreV1().ConfigMaps("kube-system").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "gc-owner"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	owned := func(name string, ref metav1.OwnerReference) {
		t.Helper()
		if _, err := wcs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name,
			OwnerReferences: []metav1.OwnerReference{ref}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	owned("by-node", metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: owner.Name, UID: owner.UID})
	owned("by-node-gone", metav1.OwnerReference{APIVersion: "v1", Kind: "Node", Name: owner.Name, UID: "0000-gone"})
	owned("by-other-namespace", metav1.OwnerReference{APIVersion: "v1", Kind: "ConfigMap", Name: other.Name, UID: other.UID})
	exists := func(name string) bool {
		_, err := rcs.CoreV1().ConfigMaps("default").Get(ctx, name, metav1.GetOptions{})
		return err == nil
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if exists("by-node-gone") || exists("by-other-namespace") {
			return errors.New("dependents of absent owners still there")
		}
		return nil
	})
	if !exists("by-node") {
		t.Fatal("the dependent of an existing node was deleted")
	}
	if err := wcs.CoreV1().Nodes().Delete(ctx, owner.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if exists("by-node") {
			return errors.New("the deleted node's dependent is still there")
		}
		return nil
	})
}

// TestAdoption: a Deployment made again after an Orphan deletion takes
// back its ReplicaSet instead of making another, and a ReplicaSet releases
// a pod relabelled out of its selector (and replaces it), then adopts it
// again when relabelled back (and removes one too many), as Kubernetes'
// controllers do.
func TestAdoption(t *testing.T) {
	_, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	cluster.StartFakeKubelet(t, wcs, testNodes(2)...)
	d := webDeployment("adopt", 3, appsv1.DeploymentStrategy{})
	if _, err := wcs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// state is the ReplicaSets and pods labelled app=adopt, with the uid
	// of each one's controller ("" for none).
	state := func() (sets, pods map[string]types.UID) {
		t.Helper()
		sets, pods = map[string]types.UID{}, map[string]types.UID{}
		rl, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=adopt"})
		if err != nil {
			t.Fatal(err)
		}
		for _, x := range rl.Items {
			sets[x.Name] = controllerUID(&x)
		}
		pl, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=adopt"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range pl.Items {
			if p.DeletionTimestamp == nil {
				pods[p.Name] = controllerUID(&p)
			}
		}
		return sets, pods
	}
	var rsName string
	var rsUID types.UID
	var podNames []string
	cluster.Eventually(t, 30*time.Second, func() error {
		sets, pods := state()
		if len(sets) != 1 || len(pods) != 3 {
			return fmt.Errorf("%d replica sets, %d pods", len(sets), len(pods))
		}
		rs, err := rcs.AppsV1().ReplicaSets("default").List(ctx, metav1.ListOptions{LabelSelector: "app=adopt"})
		if err != nil || len(rs.Items) != 1 {
			return fmt.Errorf("replica sets: %v", err)
		}
		rsName, rsUID, podNames = rs.Items[0].Name, rs.Items[0].UID, slices.Sorted(maps.Keys(pods))
		return nil
	})

	orphan := metav1.DeletePropagationOrphan
	if err := wcs.AppsV1().Deployments("default").Delete(ctx, "adopt", metav1.DeleteOptions{PropagationPolicy: &orphan}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if sets, _ := state(); sets[rsName] != "" {
			return fmt.Errorf("the replica set is still owned")
		}
		return nil
	})
	again, err := wcs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		sets, pods := state()
		if len(sets) != 1 || sets[rsName] != again.UID {
			return fmt.Errorf("replica sets %v; want only %s, owned by %s", sets, rsName, again.UID)
		}
		if got := slices.Sorted(maps.Keys(pods)); !slices.Equal(got, podNames) {
			return fmt.Errorf("pods %v, want the same %v", got, podNames)
		}
		return nil
	})

	relabel := func(pod, app string) {
		t.Helper()
		patch := fmt.Sprintf(`{"metadata":{"labels":{"app":%q}}}`, app)
		if _, err := wcs.CoreV1().Pods("default").Patch(ctx, pod, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	out := podNames[0]
	relabel(out, "elsewhere")
	cluster.Eventually(t, 30*time.Second, func() error {
		p, err := rcs.CoreV1().Pods("default").Get(ctx, out, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if uid := controllerUID(p); uid != "" {
			return fmt.Errorf("relabelled pod still controlled by %s", uid)
		}
		if _, pods := state(); len(pods) != 3 || pods[out] != "" {
			return fmt.Errorf("pods %v: want 3 others", pods)
		}
		return nil
	})
	relabel(out, "adopt")
	cluster.Eventually(t, 30*time.Second, func() error {
		_, pods := state()
		if len(pods) != 3 {
			return fmt.Errorf("pods %v: want 3", pods)
		}
		for name, uid := range pods {
			if uid != rsUID {
				return fmt.Errorf("pod %s controlled by %q, not the replica set", name, uid)
			}
		}
		return nil
	})

	// A StatefulSet and a DaemonSet made again after an Orphan deletion
	// take back their pods too.
	lbls := func(app string) map[string]string { return map[string]string{"app": app} }
	template := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls(app)},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	}
	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](2),
		ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: lbls("db")}, Template: template("db")}}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: lbls("agent")}, Template: template("agent")}}
	for _, owner := range []struct {
		app    string
		create func() (types.UID, error)
		delete func() error
	}{
		{"db", func() (types.UID, error) {
			got, err := wcs.AppsV1().StatefulSets("default").Create(ctx, sts, metav1.CreateOptions{})
			return got.UID, err
		}, func() error {
			return wcs.AppsV1().StatefulSets("default").Delete(ctx, "db", metav1.DeleteOptions{PropagationPolicy: &orphan})
		}},
		{"agent", func() (types.UID, error) {
			got, err := wcs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{})
			return got.UID, err
		}, func() error {
			return wcs.AppsV1().DaemonSets("default").Delete(ctx, "agent", metav1.DeleteOptions{PropagationPolicy: &orphan})
		}},
	} {
		// controlled waits until the app's pods are exactly names (any two
		// when names is nil), each controlled by uid, as is the app's
		// revision, and returns them.
		controlled := func(uid types.UID, names []string) []string {
			t.Helper()
			var got []string
			cluster.Eventually(t, 30*time.Second, func() error {
				pl, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + owner.app})
				if err != nil {
					return err
				}
				got = nil
				for _, p := range pl.Items {
					if c := controllerUID(&p); c != uid {
						return fmt.Errorf("%s: pod %s controlled by %q, want %q", owner.app, p.Name, c, uid)
					}
					got = append(got, p.Name)
				}
				slices.Sort(got)
				if len(got) != 2 || (names != nil && !slices.Equal(got, names)) {
					return fmt.Errorf("%s: pods %v, want 2 (%v)", owner.app, got, names)
				}
				// Its one ControllerRevision goes and comes back with them.
				rl, err := rcs.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: "app=" + owner.app})
				if err != nil || len(rl.Items) != 1 || controllerUID(&rl.Items[0]) != uid {
					return fmt.Errorf("%s: %d revisions, want one controlled by %q (%v)", owner.app, len(rl.Items), uid, err)
				}
				return nil
			})
			return got
		}
		uid, err := owner.create()
		if err != nil {
			t.Fatal(err)
		}
		names := controlled(uid, nil)
		if err := owner.delete(); err != nil {
			t.Fatal(err)
		}
		controlled("", names)
		// The orphaning deletion ends once the collector has released the
		// dependents and removed its finalizer: the name is taken until
		// then, as kubectl delete --cascade=orphan waits for.
		cluster.Eventually(t, 30*time.Second, func() error {
			uid, err = owner.create()
			return err
		})
		controlled(uid, names)
	}
}

// controllerUID is the uid of obj's controller, "" if it has none.
func controllerUID(obj metav1.Object) types.UID {
	if ref := metav1.GetControllerOf(obj); ref != nil {
		return ref.UID
	}
	return ""
}

// TestRolloutAcrossFailover rolls a 200-replica Deployment to a new image
// and kill -9s the leader in the middle: the rollout completes under the
// next leader within maxSurge and maxUnavailable, with exactly one pod per
// replica of the new template. Then it SIGSTOPs the next leader in the
// middle of another rollout and resumes it once a new leader exists: the
// old leader's controllers, which wake up believing they lead, add
// nothing (a second set of controllers would create pods twice).
func TestRolloutAcrossFailover(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	nodes := testNodes(5)
	cluster.StartFakeKubelet(t, wcs, nodes...)

	const replicas = 200
	census := watchPods(t, rcs, "default", "app=big")
	d := webDeployment("big", replicas, appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType})
	if _, err := wcs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rolloutStatus(t, c, r, "big")
	surge, unavailable := replicas/4, replicas/4 // the default 25%

	roll := func(image string, fault func()) {
		t.Helper()
		census.arm()
		patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"c","image":%q}]}}}}`, image)
		if _, err := wcs.AppsV1().Deployments("default").Patch(ctx, "big", "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		cluster.Eventually(t, 60*time.Second, func() error {
			if n := census.createdOf(image); n < replicas/5 {
				return fmt.Errorf("%d pods of %s so far", n, image)
			}
			return nil
		})
		fault()
		cluster.Eventually(t, 120*time.Second, func() error {
			dep, err := rcs.AppsV1().Deployments("default").Get(ctx, "big", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if s := dep.Status; s.ObservedGeneration != dep.Generation || s.UpdatedReplicas != replicas || s.AvailableReplicas != replicas || s.Replicas != replicas {
				return fmt.Errorf("rollout of %s: %+v", image, s)
			}
			return nil
		})
		maxPods, minUp, _ := census.bounds()
		t.Logf("%s: at most %d pods, at least %d ready, %d pods made for the new template", image, maxPods, minUp, census.createdOf(image))
		if maxPods > replicas+surge || minUp < replicas-unavailable {
			t.Fatalf("%s: %d pods at once (maxSurge allows %d), %d ready at one point (maxUnavailable allows %d)", image, maxPods, replicas+surge, minUp, replicas-unavailable)
		}
		if n := census.createdOf(image); n != replicas {
			t.Fatalf("%s: %d pods made for %d replicas", image, n, replicas)
		}
	}

	l := c.Leader(20 * time.Second)
	roll("busybox:2", func() {
		l.Kill()
		t.Logf("killed leader %s", l.Name)
	})
	l.Start()
	next := c.Leader(20 * time.Second)
	roll("busybox:3", func() {
		next.Signal(syscall.SIGSTOP)
		others := c.Others(next)
		cluster.Eventually(t, 20*time.Second, func() error {
			for _, o := range others {
				st, err := o.Client().Status(ctx)
				if err != nil {
					return err
				}
				if st.Leader == "" || st.Leader == next.Name {
					return fmt.Errorf("%s sees leader %q", o.Name, st.Leader)
				}
			}
			return nil
		})
		next.Signal(syscall.SIGCONT)
		t.Logf("stopped leader %s until a new leader was elected, then resumed it", next.Name)
	})
}

// TestEndpointSlices checks that a Service's EndpointSlices and Endpoints
// follow its pods: ports resolved by name, readiness, and pods leaving.
func TestEndpointSlices(t *testing.T) {
	_, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	var unready sync.Map
	kubelet := cluster.StartFakeKubelet(t, wcs, testNodes(2)...)
	kubelet.Unready = func(p *corev1.Pod) bool { _, ok := unready.Load(p.Name); return ok }

	d := webDeployment("api", 3, appsv1.DeploymentStrategy{})
	d.Spec.Template.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}
	if _, err := wcs.AppsV1().Deployments("default").Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "api"},
		Ports:    []corev1.ServicePort{{Name: "web", Port: 80, TargetPort: intstr.FromString("http")}},
	}}
	if _, err := wcs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// endpoints waits until the slices list want ready and notReady
	// endpoints on port 8080, and the Endpoints object agrees.
	endpoints := func(ready, notReady int) {
		t.Helper()
		cluster.Eventually(t, 30*time.Second, func() error {
			l, err := rcs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=api"})
			if err != nil {
				return err
			}
			r, nr := 0, 0
			for _, s := range l.Items {
				if len(s.Endpoints) > 0 && (len(s.Ports) != 1 || *s.Ports[0].Port != 8080 || *s.Ports[0].Name != "web") {
					return fmt.Errorf("slice %s has ports %+v", s.Name, s.Ports)
				}
				for _, e := range s.Endpoints {
					if *e.Conditions.Ready {
						r++
					} else {
						nr++
					}
				}
			}
			if r != ready || nr != notReady {
				return fmt.Errorf("slices: %d ready, %d not ready; want %d, %d", r, nr, ready, notReady)
			}
			ep, err := rcs.CoreV1().Endpoints("default").Get(ctx, "api", metav1.GetOptions{})
			if err != nil {
				return err
			}
			r, nr = 0, 0
			for _, s := range ep.Subsets {
				r, nr = r+len(s.Addresses), nr+len(s.NotReadyAddresses)
			}
			if r != ready || nr != notReady {
				return fmt.Errorf("endpoints: %d ready, %d not ready; want %d, %d", r, nr, ready, notReady)
			}
			return nil
		})
	}
	endpoints(3, 0)

	pods, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=api"})
	if err != nil || len(pods.Items) != 3 {
		t.Fatalf("%d pods (%v)", len(pods.Items), err)
	}
	sick := pods.Items[0].Name
	unready.Store(sick, true)
	// Touch the pod so the kubelet looks at it again.
	if _, err := wcs.CoreV1().Pods("default").Patch(ctx, sick, "application/merge-patch+json", []byte(`{"metadata":{"annotations":{"probe":"failing"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	endpoints(2, 1)
	unready.Delete(sick)
	if _, err := wcs.CoreV1().Pods("default").Patch(ctx, sick, "application/merge-patch+json", []byte(`{"metadata":{"annotations":{"probe":"passing"}}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	endpoints(3, 0)
	if _, err := wcs.AppsV1().Deployments("default").Patch(ctx, "api", "application/merge-patch+json", []byte(`{"spec":{"replicas":1}}`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	endpoints(1, 0)
	if err := wcs.CoreV1().Services("default").Delete(ctx, "api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		l, err := rcs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: "kubernetes.io/service-name=api"})
		if err != nil {
			return err
		}
		if _, err := rcs.CoreV1().Endpoints("default").Get(ctx, "api", metav1.GetOptions{}); err == nil || len(l.Items) > 0 {
			return fmt.Errorf("after the service is deleted: %d slices, endpoints %v", len(l.Items), err)
		}
		return nil
	})
}

// TestNodeLifecycle gives nodes pod CIDRs, stops one node's Lease and
// checks that the node becomes NotReady and tainted, that its pods leave
// when their tolerations run out and not before, that nothing new goes
// there, and that deleting the node deletes the pods left on it.
func TestNodeLifecycle(t *testing.T) {
	_, w, r := kubeCluster(t, 91, "--node-monitor-grace-period", "3s")
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	kubelet := cluster.StartFakeKubelet(t, wcs, testNodes(2)...)

	cidrs := map[string]string{}
	cluster.Eventually(t, 20*time.Second, func() error {
		for _, name := range []string{"node-0", "node-1"} {
			n, err := rcs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if n.Spec.PodCIDR == "" {
				return fmt.Errorf("%s has no pod CIDR", name)
			}
			cidrs[name] = n.Spec.PodCIDR
		}
		return nil
	})
	if cidrs["node-0"] == cidrs["node-1"] || !strings.HasPrefix(cidrs["node-0"], "10.244.") || !strings.HasSuffix(cidrs["node-0"], ".0/24") {
		t.Fatalf("pod CIDRs %v", cidrs)
	}

	onNode0 := func(name string, seconds *int64) {
		t.Helper()
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.PodSpec{
			NodeSelector: map[string]string{corev1.LabelHostname: "node-0"},
			Containers:   []corev1.Container{{Name: "c", Image: "busybox"}}}}
		if name != "default" {
			p.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
				Effect: corev1.TaintEffectNoExecute, TolerationSeconds: seconds}}
		}
		if _, err := wcs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	onNode0("short", ptr.To[int64](2))
	onNode0("forever", nil)
	onNode0("default", nil)
	cluster.Eventually(t, 20*time.Second, func() error {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-0,status.phase=Running"})
		if err != nil || len(l.Items) != 3 {
			return fmt.Errorf("%d pods running on node-0 (%v)", len(l.Items), err)
		}
		return nil
	})
	def, err := rcs.CoreV1().Pods("default").Get(ctx, "default", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, tol := range def.Spec.Tolerations {
		found = found || (tol.Key == corev1.TaintNodeUnreachable && tol.TolerationSeconds != nil && *tol.TolerationSeconds == 300)
	}
	if !found {
		t.Fatalf("a pod without tolerations did not get the default 300 s: %+v", def.Spec.Tolerations)
	}

	kubelet.StopRenewing("node-0")
	cluster.Eventually(t, 30*time.Second, func() error {
		return nodeUnreachable(ctx, rcs, "node-0", "Kubelet stopped posting node status.", corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute)
	})
	// Its pods are marked not Ready at once, so that they leave their
	// Services' endpoints long before they are evicted.
	cluster.Eventually(t, 10*time.Second, func() error {
		for _, name := range []string{"forever", "default"} {
			if p, err := rcs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil || cluster.PodReady(p) {
				return fmt.Errorf("pod %s on the unreachable node is still Ready (%v)", name, err)
			}
		}
		return nil
	})
	cluster.Eventually(t, 30*time.Second, func() error {
		if _, err := rcs.CoreV1().Pods("default").Get(ctx, "short", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("the pod tolerating 2 s is still there")
		}
		return nil
	})
	for _, name := range []string{"forever", "default"} {
		if p, err := rcs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
			t.Fatalf("pod %s was evicted before its toleration ran out (%v)", name, err)
		}
	}
	fresh := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, fresh, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 20*time.Second, func() error {
		p, err := rcs.CoreV1().Pods("default").Get(ctx, "fresh", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Spec.NodeName != "node-1" {
			return fmt.Errorf("a new pod is on %q", p.Spec.NodeName)
		}
		return nil
	})

	if err := wcs.CoreV1().Nodes().Delete(ctx, "node-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-0"})
		if err != nil || len(l.Items) != 0 {
			return fmt.Errorf("%d pods left on the deleted node (%v)", len(l.Items), err)
		}
		return nil
	})
}

// TestNoEvictionWhenEveryNodeIsDown: when every node stops renewing its
// Lease at once, the nodes are Ready=Unknown and unschedulable but carry no
// NoExecute taint (the first node down may carry one for the second until
// the others follow), and a pod tolerating 4 s stays, as Kubernetes does
// when all zones are fully disrupted; once a node is Ready again, the
// evictions resume.
func TestNoEvictionWhenEveryNodeIsDown(t *testing.T) {
	_, w, r := kubeCluster(t, 91, "--node-monitor-grace-period", "3s", "--node-eviction-rate", "1")
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	kubelet := cluster.StartFakeKubelet(t, wcs, testNodes(2)...)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "short"}, Spec: corev1.PodSpec{
		NodeSelector: map[string]string{corev1.LabelHostname: "node-0"},
		Tolerations: []corev1.Toleration{{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists,
			Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](4)}},
		Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 20*time.Second, func() error {
		p, err := rcs.CoreV1().Pods("default").Get(ctx, "short", metav1.GetOptions{})
		if err != nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("pod not running yet (%v)", err)
		}
		return nil
	})

	kubelet.StopRenewing("node-0")
	kubelet.StopRenewing("node-1")
	// taints is the effects of a node's unreachable taints.
	taints := func(name string) (map[corev1.TaintEffect]bool, error) {
		n, err := rcs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		effects := map[corev1.TaintEffect]bool{}
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeUnreachable {
				effects[taint.Effect] = true
			}
		}
		if cluster.NodeReadyStatus(n) != corev1.ConditionUnknown {
			return nil, fmt.Errorf("%s is Ready=%s", name, cluster.NodeReadyStatus(n))
		}
		return effects, nil
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		for _, name := range []string{"node-0", "node-1"} {
			effects, err := taints(name)
			if err != nil {
				return err
			}
			if !effects[corev1.TaintEffectNoSchedule] || effects[corev1.TaintEffectNoExecute] {
				return fmt.Errorf("%s has unreachable taints %v; want NoSchedule alone", name, effects)
			}
		}
		return nil
	})
	cluster.Consistently(t, 6*time.Second, func() error {
		for _, name := range []string{"node-0", "node-1"} {
			if effects, err := taints(name); err != nil || effects[corev1.TaintEffectNoExecute] {
				return fmt.Errorf("%s tainted NoExecute with every node down (%v)", name, err)
			}
		}
		if p, err := rcs.CoreV1().Pods("default").Get(ctx, "short", metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
			return fmt.Errorf("the pod was evicted with every node down (%v)", err)
		}
		return nil
	})

	if err := kubelet.AddNode(ctx, cluster.Node{Name: "node-2", CPU: "8", Memory: "16Gi"}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if _, err := rcs.CoreV1().Pods("default").Get(ctx, "short", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("the pod tolerating 4 s is still there with a node Ready")
		}
		return nil
	})
}

// TestEvictionPace: nodes that go down get their NoExecute taints at
// --node-eviction-rate (0.1 a second by default) within a zone, and a
// small zone where more than two nodes and over 55% are down gets none, as
// kube-controller-manager paces evictions.
func TestEvictionPace(t *testing.T) {
	_, w, r := kubeCluster(t, 91, "--node-monitor-grace-period", "3s")
	ctx := context.Background()
	rcs := r.Clientset()
	kubelet := cluster.StartFakeKubelet(t, w.Clientset(), testNodes(5)...)
	cluster.Eventually(t, 20*time.Second, func() error {
		for i := range 5 {
			n, err := rcs.CoreV1().Nodes().Get(ctx, fmt.Sprintf("node-%d", i), metav1.GetOptions{})
			if err != nil || cluster.NodeReadyStatus(n) != corev1.ConditionTrue {
				return fmt.Errorf("node-%d not Ready (%v)", i, err)
			}
		}
		return nil
	})
	// noExecute is when the node got its unreachable NoExecute taint.
	noExecute := func(name string) (time.Time, bool) {
		t.Helper()
		n, err := rcs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, taint := range n.Spec.Taints {
			if taint.Key == corev1.TaintNodeUnreachable && taint.Effect == corev1.TaintEffectNoExecute && taint.TimeAdded != nil {
				return taint.TimeAdded.Time, true
			}
		}
		return time.Time{}, false
	}

	// Two of five down: the zone is healthy, the taints come 10 s apart.
	kubelet.StopRenewing("node-0")
	kubelet.StopRenewing("node-1")
	var added []time.Time
	cluster.Eventually(t, 40*time.Second, func() error {
		added = added[:0]
		for _, name := range []string{"node-0", "node-1"} {
			at, ok := noExecute(name)
			if !ok {
				return fmt.Errorf("%s has no NoExecute taint yet", name)
			}
			added = append(added, at)
		}
		return nil
	})
	if gap := added[0].Sub(added[1]).Abs(); gap < 8*time.Second {
		t.Fatalf("the two NoExecute taints came %v apart; want about 10 s", gap)
	}

	// Three of five down: the zone is partly down and too small to go on.
	kubelet.StopRenewing("node-2")
	cluster.Eventually(t, 30*time.Second, func() error {
		return nodeUnreachable(ctx, rcs, "node-2", "", corev1.TaintEffectNoSchedule)
	})
	cluster.Consistently(t, 12*time.Second, func() error {
		if _, ok := noExecute("node-2"); ok {
			return fmt.Errorf("node-2 was tainted NoExecute in a partly down zone of 5 nodes")
		}
		return nil
	})
}

// nodeUnreachable says why the node is not yet Ready=Unknown, with
// message why unless why is empty, and tainted unreachable with every one
// of effects.
func nodeUnreachable(ctx context.Context, cs kubernetes.Interface, name, why string, effects ...corev1.TaintEffect) error {
	n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	has := map[corev1.TaintEffect]bool{}
	for _, taint := range n.Spec.Taints {
		if taint.Key == corev1.TaintNodeUnreachable {
			has[taint.Effect] = true
		}
	}
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionUnknown && (why == "" || c.Message == why) &&
			!slices.ContainsFunc(effects, func(e corev1.TaintEffect) bool { return !has[e] }) {
			return nil
		}
	}
	return fmt.Errorf("%s: conditions %+v, taints %+v", name, n.Status.Conditions, n.Spec.Taints)
}

// TestNodeDeathFromGossip: a node whose agent stops answering gossip is
// Ready=Unknown and tainted unreachable within seconds, long before its
// Lease grace period (an hour here) would tell; a node whose agent is
// alive stays Ready. The agents are gossip members under their nodes'
// names, as pontoon agent joins.
func TestNodeDeathFromGossip(t *testing.T) {
	c, w, r := kubeCluster(t, 91, "--node-monitor-grace-period", "1h")
	ctx := context.Background()
	rcs := r.Clientset()
	kubelet := cluster.StartFakeKubelet(t, w.Clientset(), testNodes(2)...)
	var servers []string
	for _, s := range c.Servers {
		servers = append(servers, s.GossipAddr())
	}
	var agents []*membership.Pool
	for i := range 2 {
		agent, err := membership.Create(membership.Config{Name: fmt.Sprintf("node-%d", i), BindAddr: fmt.Sprintf("127.0.0.%d:7946", 96+i),
			Meta: membership.Meta{Role: membership.RoleAgent}, Logger: slog.New(slog.DiscardHandler), SecretKey: c.GossipKey()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { agent.Shutdown() })
		jctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err = agent.Join(jctx, servers)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		agents = append(agents, agent)
	}
	cluster.Eventually(t, 20*time.Second, func() error {
		for _, name := range []string{"node-0", "node-1"} {
			n, err := rcs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if ready := cluster.NodeReadyStatus(n); ready != corev1.ConditionTrue {
				return fmt.Errorf("%s is Ready=%s", name, ready)
			}
		}
		return nil
	})

	kubelet.StopRenewing("node-0")
	killed := time.Now()
	agents[0].Shutdown() // no goodbye, as a crash
	cluster.Eventually(t, 30*time.Second, func() error {
		return nodeUnreachable(ctx, rcs, "node-0", "The node's agent stopped answering gossip.", corev1.TaintEffectNoSchedule, corev1.TaintEffectNoExecute)
	})
	t.Logf("node-0 unreachable %v after its agent died", time.Since(killed).Round(time.Millisecond))
	n, err := rcs.CoreV1().Nodes().Get(ctx, "node-1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if ready := cluster.NodeReadyStatus(n); ready != corev1.ConditionTrue || len(n.Spec.Taints) != 0 {
		t.Fatalf("node-1, whose agent is alive: Ready=%s, taints %+v", ready, n.Spec.Taints)
	}
}

// jobKubelet plays the kubelet for Job tests: a pod ends as its "outcome"
// label says: Succeeded by default; Failed with exit code 1 for "fail", 3
// for "fail-3"; never for "hang"; Failed with exit code 42 for the first
// two pods of its Job and Succeeded after for "flaky"; Succeeded for
// completion index 0 and never for the others for "lead"; Failed with
// exit code 1 for odd completion indexes, Succeeded for even ones, for
// "odd-fail".
func jobKubelet(t *testing.T, cs kubernetes.Interface) *cluster.FakeKubelet {
	k := cluster.StartFakeKubelet(t, cs, testNodes(2)...)
	var mu sync.Mutex
	flakes := map[string]int{}    // job name → pods failed
	flaky := map[types.UID]bool{} // pod → fails
	k.Exit = func(p *corev1.Pod) (corev1.PodPhase, int32) {
		switch p.Labels["outcome"] {
		case "fail":
			return corev1.PodFailed, 1
		case "fail-3":
			return corev1.PodFailed, 3
		case "hang":
			return "", 0
		case "lead":
			if p.Annotations[batchv1.JobCompletionIndexAnnotation] != "0" {
				return "", 0
			}
		case "odd-fail":
			if i, _ := strconv.Atoi(p.Annotations[batchv1.JobCompletionIndexAnnotation]); i%2 == 1 {
				return corev1.PodFailed, 1
			}
		case "flaky":
			mu.Lock()
			defer mu.Unlock()
			fails, ok := flaky[p.UID]
			if !ok {
				job := p.Labels[batchv1.JobNameLabel]
				fails = flakes[job] < 2
				if fails {
					flakes[job]++
				}
				flaky[p.UID] = fails
			}
			if fails {
				return corev1.PodFailed, 42
			}
		}
		return corev1.PodSucceeded, 0
	}
	return k
}

// jobCluster starts a cluster whose nodes jobKubelet plays and returns
// clients of its two followers, one to write through and one to read.
func jobCluster(t *testing.T) (w, r kubernetes.Interface) {
	_, ws, rs := kubeCluster(t, 91)
	w, r = ws.Clientset(), rs.Clientset()
	jobKubelet(t, w)
	return w, r
}

func batchJob(name string, completions, parallelism int32, outcome string) *batchv1.Job {
	return &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: batchv1.JobSpec{
		Completions: ptr.To(completions), Parallelism: ptr.To(parallelism),
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"outcome": outcome}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
}

// waitJob waits until the job has the condition and returns it.
func waitJob(t *testing.T, cs kubernetes.Interface, name string, cond batchv1.JobConditionType) *batchv1.Job {
	t.Helper()
	var job *batchv1.Job
	cluster.Eventually(t, 60*time.Second, func() error {
		j, err := cs.BatchV1().Jobs("default").Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range j.Status.Conditions {
			if c.Type == cond && c.Status == corev1.ConditionTrue {
				job = j
				return nil
			}
		}
		return fmt.Errorf("job %s: %+v", name, j.Status)
	})
	return job
}

// TestJobs runs Jobs to completion, to their backoff limit and to their
// deadline, in Indexed mode, and with a TTL after they finish.
func TestJobs(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	jobKubelet(t, wcs)

	indexed := batchJob("indexed", 3, 3, "")
	indexed.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
	bad := batchJob("bad", 1, 1, "fail")
	bad.Spec.BackoffLimit = ptr.To[int32](1)
	late := batchJob("late", 1, 1, "hang")
	late.Spec.ActiveDeadlineSeconds = ptr.To[int64](2)
	brief := batchJob("brief", 1, 1, "")
	brief.Spec.TTLSecondsAfterFinished = ptr.To[int32](1)
	for _, j := range []*batchv1.Job{batchJob("ok", 4, 2, ""), indexed, bad, late, brief} {
		if _, err := wcs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kubectlOK(t, c, r, "wait", "--for=condition=complete", "job/ok", "--timeout=60s")
	ok := waitJob(t, rcs, "ok", batchv1.JobComplete)
	if ok.Status.Succeeded != 4 || ok.Status.Failed != 0 || ok.Status.CompletionTime == nil {
		t.Fatalf("job ok: %+v", ok.Status)
	}
	pods, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=ok"})
	if err != nil || len(pods.Items) != 4 {
		t.Fatalf("job ok made %d pods (%v)", len(pods.Items), err)
	}
	for _, p := range pods.Items {
		if len(p.Finalizers) != 0 {
			t.Fatalf("a counted pod keeps its finalizers: %v", p.Finalizers)
		}
	}

	waitJob(t, rcs, "indexed", batchv1.JobComplete)
	pods, err = rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=indexed"})
	if err != nil {
		t.Fatal(err)
	}
	indexes := map[string]bool{}
	for _, p := range pods.Items {
		indexes[p.Annotations[batchv1.JobCompletionIndexAnnotation]] = true
	}
	if len(pods.Items) != 3 || !indexes["0"] || !indexes["1"] || !indexes["2"] {
		t.Fatalf("indexed job: %d pods with indexes %v", len(pods.Items), indexes)
	}

	j := waitJob(t, rcs, "bad", batchv1.JobFailed)
	if j.Status.Failed != 2 || finishedReason(j) != "BackoffLimitExceeded" {
		t.Fatalf("job bad: reason %q, %+v", finishedReason(j), j.Status)
	}
	j = waitJob(t, rcs, "late", batchv1.JobFailed)
	if finishedReason(j) != "DeadlineExceeded" {
		t.Fatalf("job late: reason %q", finishedReason(j))
	}
	cluster.Eventually(t, 20*time.Second, func() error {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=late"})
		if err != nil {
			return err
		}
		for _, p := range l.Items {
			if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
				return fmt.Errorf("pod %s of a job past its deadline still runs", p.Name)
			}
		}
		return nil
	})
	cluster.Eventually(t, 30*time.Second, func() error {
		if _, err := rcs.BatchV1().Jobs("default").Get(ctx, "brief", metav1.GetOptions{}); err == nil {
			return fmt.Errorf("job brief is still there after its TTL")
		}
		return nil
	})
}

// TestJobIndexesAndSuccessPolicy checks that an Indexed Job counts
// completion indexes (status.completedIndexes): an index whose pod
// succeeded is not run again when that pod is deleted; and that a success
// policy completes a Job once the indexes it names have succeeded,
// stopping the others, as a leader-and-workers Job needs.
func TestJobIndexesAndSuccessPolicy(t *testing.T) {
	wcs, rcs := jobCluster(t)
	ctx := context.Background()
	lead := func(name string) *batchv1.Job {
		j := batchJob(name, 3, 3, "lead")
		j.Spec.CompletionMode = ptr.To(batchv1.IndexedCompletion)
		return j
	}
	policed := lead("policed")
	policed.Spec.SuccessPolicy = &batchv1.SuccessPolicy{Rules: []batchv1.SuccessPolicyRule{{SucceededIndexes: ptr.To("0")}}}
	for _, j := range []*batchv1.Job{lead("plain"), policed} {
		if _, err := wcs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	index0 := func(job string) []string {
		t.Helper()
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=" + job + "," + batchv1.JobCompletionIndexAnnotation + "=0"})
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, p := range l.Items {
			names = append(names, p.Name)
		}
		return names
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		j, err := rcs.BatchV1().Jobs("default").Get(ctx, "plain", metav1.GetOptions{})
		if err != nil || j.Status.CompletedIndexes != "0" || j.Status.Succeeded != 1 {
			return fmt.Errorf("job plain: %v, %+v", err, j.Status)
		}
		return nil
	})
	done := index0("plain")
	if len(done) != 1 {
		t.Fatalf("pods of index 0: %v", done)
	}
	if err := wcs.CoreV1().Pods("default").Delete(ctx, done[0], metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Consistently(t, 2*time.Second, func() error {
		if names := index0("plain"); len(names) > 0 && names[0] != done[0] {
			return fmt.Errorf("index 0 ran again: %v", names)
		}
		return nil
	})

	j := waitJob(t, rcs, "policed", batchv1.JobComplete)
	if finishedReason(j) != batchv1.JobReasonSuccessPolicy || j.Status.CompletedIndexes != "0" || !slices.ContainsFunc(j.Status.Conditions, func(c batchv1.JobCondition) bool {
		return c.Type == batchv1.JobSuccessCriteriaMet && c.Message == "Matched rules at index 0"
	}) {
		t.Fatalf("job policed: reason %q, %+v", finishedReason(j), j.Status)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=policed"})
		if err != nil {
			return err
		}
		for _, p := range l.Items {
			if p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
				return fmt.Errorf("pod %s still runs after the success policy was met", p.Name)
			}
		}
		return nil
	})

	bad := batchJob("bad-success", 3, 3, "")
	bad.Spec.SuccessPolicy = &batchv1.SuccessPolicy{Rules: []batchv1.SuccessPolicyRule{{SucceededIndexes: ptr.To("2-1")}}}
	_, err := wcs.BatchV1().Jobs("default").Create(ctx, bad, metav1.CreateOptions{})
	fields := invalidFields(err)
	if !apierrors.IsInvalid(err) || !slices.Contains(fields, "spec.completionMode") || !slices.Contains(fields, "spec.successPolicy.rules[0].succeededIndexes") {
		t.Fatalf("a success policy on a NonIndexed Job with indexes 2-1: %v (fields %v)", err, fields)
	}
}

// TestJobBackoffLimitPerIndex checks that each index of a Job with
// backoffLimitPerIndex fails on its own: an index past its limit goes to
// failedIndexes while the others complete, and the Job then fails with
// FailedIndexes; a FailIndex rule fails an index at once, and more failed
// indexes than maxFailedIndexes fail the Job.
func TestJobBackoffLimitPerIndex(t *testing.T) {
	wcs, rcs := jobCluster(t)
	ctx := context.Background()
	perIndex := func(name string, limit int32) *batchv1.Job {
		j := batchJob(name, 3, 3, "odd-fail")
		j.Spec.CompletionMode, j.Spec.BackoffLimitPerIndex = ptr.To(batchv1.IndexedCompletion), ptr.To(limit)
		return j
	}
	failIndex := perIndex("fail-index", 5)
	failIndex.Spec.MaxFailedIndexes = ptr.To[int32](0)
	failIndex.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{Action: batchv1.PodFailurePolicyActionFailIndex,
		OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{1}}}}}
	for _, j := range []*batchv1.Job{perIndex("per-index", 1), failIndex} {
		if _, err := wcs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	j := waitJob(t, rcs, "fail-index", batchv1.JobFailed)
	if finishedReason(j) != batchv1.JobReasonMaxFailedIndexesExceeded || ptr.Deref(j.Status.FailedIndexes, "") != "1" || j.Status.Failed != 1 {
		t.Fatalf("job fail-index: reason %q, %+v", finishedReason(j), j.Status)
	}
	// Index 1 fails twice (once, then its one retry after the 10 s
	// backoff); indexes 0 and 2 complete.
	j = waitJob(t, rcs, "per-index", batchv1.JobFailed)
	if finishedReason(j) != batchv1.JobReasonFailedIndexes || ptr.Deref(j.Status.FailedIndexes, "") != "1" || j.Status.CompletedIndexes != "0,2" || j.Status.Failed != 2 {
		t.Fatalf("job per-index: reason %q, %+v", finishedReason(j), j.Status)
	}
	l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=per-index," + batchv1.JobCompletionIndexAnnotation + "=1"})
	if err != nil {
		t.Fatal(err)
	}
	counts := map[string]bool{}
	for _, p := range l.Items {
		counts[p.Annotations[batchv1.JobIndexFailureCountAnnotation]] = true
	}
	if len(l.Items) != 2 || !counts["0"] || !counts["1"] {
		t.Fatalf("index 1 ran %d pods with failure counts %v, want 2 with 0 and 1", len(l.Items), counts)
	}

	bad := batchJob("bad-per-index", 3, 3, "")
	bad.Spec.BackoffLimitPerIndex, bad.Spec.MaxFailedIndexes = ptr.To[int32](1), ptr.To[int32](4)
	_, err = wcs.BatchV1().Jobs("default").Create(ctx, bad, metav1.CreateOptions{})
	if fields := invalidFields(err); !apierrors.IsInvalid(err) || !slices.Contains(fields, "spec.backoffLimitPerIndex") || !slices.Contains(fields, "spec.maxFailedIndexes") {
		t.Fatalf("backoffLimitPerIndex on a NonIndexed Job, maxFailedIndexes above completions: %v (fields %v)", err, fields)
	}
}

// TestJobPodFailurePolicy checks a Job's pod failure policy: failures it
// ignores are replaced without counting against the backoff limit, one it
// fails the Job on fails it at once with Kubernetes' reason and message,
// a pod evicted through the API bears the DisruptionTarget condition a
// rule can ignore, and a policy kube-apiserver would refuse is refused.
func TestJobPodFailurePolicy(t *testing.T) {
	wcs, rcs := jobCluster(t)
	ctx := context.Background()
	policy := &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{
		{Action: batchv1.PodFailurePolicyActionIgnore, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{42}}},
		{Action: batchv1.PodFailurePolicyActionFailJob, OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{
			ContainerName: ptr.To("c"), Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{3, 4}}},
	}}
	flaky := batchJob("flaky", 1, 1, "flaky")
	flaky.Spec.BackoffLimit, flaky.Spec.PodFailurePolicy = ptr.To[int32](0), policy
	doomed := batchJob("doomed", 1, 1, "fail-3")
	doomed.Spec.PodFailurePolicy = policy
	for _, j := range []*batchv1.Job{flaky, doomed} {
		if _, err := wcs.BatchV1().Jobs("default").Create(ctx, j, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	j := waitJob(t, rcs, "flaky", batchv1.JobComplete)
	pods, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=flaky"})
	if err != nil || len(pods.Items) != 3 || j.Status.Failed != 0 || j.Status.Succeeded != 1 {
		t.Fatalf("flaky job: %d pods (%v), status %+v; want 3 pods, two ignored failures", len(pods.Items), err, j.Status)
	}
	for _, p := range pods.Items {
		if len(p.Finalizers) != 0 {
			t.Fatalf("pod %s keeps its finalizers %v", p.Name, p.Finalizers)
		}
	}
	j = waitJob(t, rcs, "doomed", batchv1.JobFailed)
	pods, err = rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=doomed"})
	if err != nil || len(pods.Items) != 1 {
		t.Fatalf("doomed job made %d pods (%v), want 1 (backoffLimit 6 never reached)", len(pods.Items), err)
	}
	want := fmt.Sprintf("Container c for pod default/%s failed with exit code 3 matching FailJob rule at index 1", pods.Items[0].Name)
	if finishedReason(j) != batchv1.JobReasonPodFailurePolicy || j.Status.Failed != 1 || !slices.ContainsFunc(j.Status.Conditions, func(c batchv1.JobCondition) bool {
		return c.Type == batchv1.JobFailed && c.Message == want
	}) {
		t.Fatalf("doomed job: reason %q, status %+v; want %q", finishedReason(j), j.Status, want)
	}

	// A pod evicted through the API bears the DisruptionTarget condition
	// (a finalizer of the test's keeps it in sight) ...
	held := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "held", Labels: map[string]string{"outcome": "hang"}, Finalizers: []string{"test.pontoon.dev/hold"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
	if _, err := wcs.CoreV1().Pods("default").Create(ctx, held, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wcs.CoreV1().Pods("default").EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "held", Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	p, err := rcs.CoreV1().Pods("default").Get(ctx, "held", metav1.GetOptions{})
	if err != nil || p.DeletionTimestamp == nil || !slices.ContainsFunc(p.Status.Conditions, func(c corev1.PodCondition) bool {
		return c.Type == corev1.DisruptionTarget && c.Status == corev1.ConditionTrue && c.Reason == "EvictionByEvictionAPI"
	}) {
		t.Fatalf("evicted pod: %v, %+v", err, p)
	}
	if _, err := wcs.CoreV1().Pods("default").Patch(ctx, "held", types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	// ... which a policy may ignore: the Job replaces the pod and counts
	// no failure against its backoff limit of 0.
	evicted := batchJob("evicted", 1, 1, "hang")
	evicted.Spec.BackoffLimit = ptr.To[int32](0)
	evicted.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{Action: batchv1.PodFailurePolicyActionIgnore,
		OnPodConditions: []batchv1.PodFailurePolicyOnPodConditionsPattern{{Type: corev1.DisruptionTarget}}}}}
	if _, err := wcs.BatchV1().Jobs("default").Create(ctx, evicted, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	running := func() (string, error) {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "job-name=evicted"})
		if err != nil {
			return "", err
		}
		if len(l.Items) != 1 || l.Items[0].DeletionTimestamp != nil || l.Items[0].Status.Phase != corev1.PodRunning {
			return "", fmt.Errorf("%d pods of job evicted, want one running", len(l.Items))
		}
		return l.Items[0].Name, nil
	}
	var first string
	cluster.Eventually(t, 30*time.Second, func() (err error) {
		first, err = running()
		return err
	})
	if err := wcs.CoreV1().Pods("default").EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: first, Namespace: "default"}}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		name, err := running()
		if err != nil || name == first {
			return fmt.Errorf("no replacement of %s yet (%v)", first, err)
		}
		j, err := rcs.BatchV1().Jobs("default").Get(ctx, "evicted", metav1.GetOptions{})
		if err != nil || j.Status.Failed != 0 || finishedReason(j) != "" {
			return fmt.Errorf("job evicted: %v, %+v", err, j.Status)
		}
		return nil
	})

	bad := batchJob("bad-policy", 1, 1, "")
	bad.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
	bad.Spec.PodFailurePolicy = &batchv1.PodFailurePolicy{Rules: []batchv1.PodFailurePolicyRule{{Action: batchv1.PodFailurePolicyActionFailJob,
		OnExitCodes: &batchv1.PodFailurePolicyOnExitCodesRequirement{Operator: batchv1.PodFailurePolicyOnExitCodesOpIn, Values: []int32{0}}}}}
	_, err = wcs.BatchV1().Jobs("default").Create(ctx, bad, metav1.CreateOptions{})
	fields := invalidFields(err)
	if !apierrors.IsInvalid(err) || !slices.Contains(fields, "spec.template.spec.restartPolicy") || !slices.Contains(fields, "spec.podFailurePolicy.rules[0].onExitCodes.values[0]") {
		t.Fatalf("a policy with restartPolicy OnFailure and exit code 0 under In: %v (fields %v)", err, fields)
	}
}

// invalidFields are the fields a 422 Invalid error names.
func invalidFields(err error) []string {
	var fields []string
	if status, ok := err.(apierrors.APIStatus); ok && status.Status().Details != nil {
		for _, c := range status.Status().Details.Causes {
			fields = append(fields, c.Field)
		}
	}
	return fields
}

func finishedReason(j *batchv1.Job) string {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobFailed || c.Type == batchv1.JobComplete) && c.Status == corev1.ConditionTrue {
			return c.Reason
		}
	}
	return ""
}

// TestCronJob makes a CronJob find missed runs (its last schedule time
// set three minutes back), start the latest as a Job named after its
// minute, and record the Job's success.
func TestCronJob(t *testing.T) {
	wcs, rcs := jobCluster(t)
	ctx := context.Background()

	cj := &batchv1.CronJob{ObjectMeta: metav1.ObjectMeta{Name: "tick"}, Spec: batchv1.CronJobSpec{
		Schedule: "* * * * *", JobTemplate: batchv1.JobTemplateSpec{Spec: batchJob("", 1, 1, "").Spec}}}
	created, err := wcs.BatchV1().CronJobs("default").Create(ctx, cj, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := wcs.BatchV1().CronJobs("default").Get(ctx, created.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Status.LastScheduleTime = &metav1.Time{Time: time.Now().Add(-3 * time.Minute)}
		_, err = wcs.BatchV1().CronJobs("default").UpdateStatus(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	first := time.Now().Unix() / 60
	cluster.Eventually(t, 60*time.Second, func() error {
		cur, err := rcs.BatchV1().CronJobs("default").Get(ctx, "tick", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if cur.Status.LastSuccessfulTime == nil || len(cur.Status.Active) != 0 {
			return fmt.Errorf("cronjob status %+v", cur.Status)
		}
		return nil
	})
	jobs, err := rcs.BatchV1().Jobs("default").List(ctx, metav1.ListOptions{})
	if err != nil || len(jobs.Items) == 0 {
		t.Fatalf("%v jobs (%v)", len(jobs.Items), err)
	}
	// The latest missed run is the minute the status was set in, or a
	// later one if a minute has turned since.
	name := jobs.Items[0].Name
	if len(jobs.Items) != 1 || name < fmt.Sprintf("tick-%d", first) || name > fmt.Sprintf("tick-%d", time.Now().Unix()/60) {
		t.Fatalf("the cronjob ran %d jobs, first %s; want one, tick-%d or later", len(jobs.Items), name, first)
	}
	if jobs.Items[0].Annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] == "" || metav1.GetControllerOf(&jobs.Items[0]) == nil {
		t.Fatalf("job %s lacks the scheduled time or its owner: %+v", jobs.Items[0].Name, jobs.Items[0].ObjectMeta)
	}
}

// TestStatefulSetsAndDaemonSets checks StatefulSet order (each pod once
// the one before is ready; removal in reverse), Parallel, and that a
// DaemonSet runs one pod per node its tolerations allow.
func TestStatefulSetsAndDaemonSets(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	nodes := testNodes(3)
	nodes[2].Taints = []corev1.Taint{{Key: "dedicated", Value: "db", Effect: corev1.TaintEffectNoSchedule}}
	cluster.StartFakeKubelet(t, wcs, nodes...)

	// The order pods appear in, and whether every earlier one was ready.
	var mu sync.Mutex
	var order []string
	inOrder := true
	ready := map[string]bool{}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	watcher, err := rcs.CoreV1().Pods("default").Watch(wctx, metav1.ListOptions{LabelSelector: "app=db"})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for ev := range watcher.ResultChan() {
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			mu.Lock()
			if ev.Type == watch.Added {
				for _, prev := range order {
					inOrder = inOrder && ready[prev]
				}
				order = append(order, p.Name)
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady {
					ready[p.Name] = cond.Status == corev1.ConditionTrue
				}
			}
			if p.DeletionTimestamp != nil && ev.Type != watch.Deleted {
				order = append(order, "-"+p.Name)
			}
			mu.Unlock()
		}
	}()
	set := func(name string, replicas int32, policy appsv1.PodManagementPolicyType) *appsv1.StatefulSet {
		lbls := map[string]string{"app": name}
		return &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.StatefulSetSpec{
			Replicas: ptr.To(replicas), ServiceName: name, PodManagementPolicy: policy,
			Selector: &metav1.LabelSelector{MatchLabels: lbls},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	}
	for _, s := range []*appsv1.StatefulSet{set("db", 3, appsv1.OrderedReadyPodManagement), set("par", 3, appsv1.ParallelPodManagement)} {
		if _, err := wcs.AppsV1().StatefulSets("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	kubectlOK(t, c, r, "rollout", "status", "statefulset/db", "--timeout=60s")
	kubectlOK(t, c, r, "rollout", "status", "statefulset/par", "--timeout=60s")
	mu.Lock()
	got, ordered := fmt.Sprint(order), inOrder
	mu.Unlock()
	if got != "[db-0 db-1 db-2]" || !ordered {
		t.Fatalf("OrderedReady created %s (each after the one before was ready: %v)", got, ordered)
	}
	p, err := rcs.CoreV1().Pods("default").Get(ctx, "db-1", metav1.GetOptions{})
	if err != nil || p.Spec.Hostname != "db-1" || p.Spec.Subdomain != "db" || p.Labels[appsv1.PodIndexLabel] != "1" || p.Labels[appsv1.StatefulSetPodNameLabel] != "db-1" {
		t.Fatalf("db-1: %v %+v", err, p)
	}
	kubectlOK(t, c, w, "scale", "statefulset/db", "--replicas=1")
	cluster.Eventually(t, 30*time.Second, func() error {
		l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=db"})
		if err != nil || len(l.Items) != 1 || l.Items[0].Name != "db-0" {
			return fmt.Errorf("after scaling to 1: %d pods (%v)", len(l.Items), err)
		}
		return nil
	})
	mu.Lock()
	got = fmt.Sprint(order)
	mu.Unlock()
	if !strings.HasSuffix(got, "-db-2 -db-1]") {
		t.Fatalf("scaling down removed pods in this order: %s", got)
	}

	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "agent"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	if _, err := wcs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	perNode := func(want int) {
		t.Helper()
		cluster.Eventually(t, 30*time.Second, func() error {
			l, err := rcs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{LabelSelector: "app=agent"})
			if err != nil {
				return err
			}
			on := map[string]int{}
			for _, p := range l.Items {
				if p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning {
					on[p.Spec.NodeName]++
				}
			}
			if len(on) != want || len(l.Items) != want {
				return fmt.Errorf("daemon pods per node: %v (%d pods); want %d nodes with one each", on, len(l.Items), want)
			}
			if on["node-2"] > 0 && want == 2 {
				return fmt.Errorf("a daemon pod went to the tainted node")
			}
			return nil
		})
	}
	perNode(2)
	kubectlOK(t, c, r, "rollout", "status", "daemonset/agent", "--timeout=60s")
	patch := `{"spec":{"template":{"spec":{"tolerations":[{"key":"dedicated","operator":"Exists"}]}}}}`
	if _, err := wcs.AppsV1().DaemonSets("default").Patch(ctx, "agent", "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	perNode(3)
	kubectlOK(t, c, r, "rollout", "status", "daemonset/agent", "--timeout=60s")
}

// TestRolloutHistoryOfSetsAndDaemons checks the ControllerRevisions of
// DaemonSets and StatefulSets through what kubectl does with them:
// `rollout history` lists a revision per template, `rollout undo` puts
// the previous template back (its revision renumbered as the newest),
// revisionHistoryLimit drops revisions no pod runs, a StatefulSet pod
// below the partition is recreated from the current revision's template,
// and deleting the owner deletes its revisions.
func TestRolloutHistoryOfSetsAndDaemons(t *testing.T) {
	c, w, r := kubeCluster(t, 91)
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	cluster.StartFakeKubelet(t, wcs, testNodes(2)...)
	revisions := func(selector string) map[int64]string {
		t.Helper()
		l, err := rcs.AppsV1().ControllerRevisions("default").List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			t.Fatal(err)
		}
		out := map[int64]string{}
		for _, rev := range l.Items {
			out[rev.Revision] = rev.Labels[appsv1.ControllerRevisionHashLabelKey]
		}
		return out
	}
	images := func(selector string, want map[string]int) {
		t.Helper()
		cluster.Eventually(t, 30*time.Second, func() error {
			if got := podImages(t, rcs, selector); fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("pod images %v, want %v", got, want)
			}
			return nil
		})
	}
	template := func(app string) corev1.PodTemplateSpec {
		return corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox:1"}}}}
	}

	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent"}}, Template: template("agent"),
		RevisionHistoryLimit: ptr.To[int32](1)}}
	if _, err := wcs.AppsV1().DaemonSets("default").Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubectlOK(t, c, r, "rollout", "status", "daemonset/agent", "--timeout=60s")
	kubectlOK(t, c, w, "set", "image", "daemonset/agent", "c=busybox:2")
	kubectlOK(t, c, r, "rollout", "status", "daemonset/agent", "--timeout=60s")
	images("app=agent", map[string]int{"busybox:2": 2})
	if out := kubectlOK(t, c, r, "rollout", "history", "daemonset/agent"); !regexp.MustCompile(`(?m)^1 `).MatchString(out) || !regexp.MustCompile(`(?m)^2 `).MatchString(out) {
		t.Fatalf("rollout history lists no revisions 1 and 2:\n%s", out)
	}
	first := revisions("app=agent")[1]
	kubectlOK(t, c, w, "rollout", "undo", "daemonset/agent")
	kubectlOK(t, c, r, "rollout", "status", "daemonset/agent", "--timeout=60s")
	images("app=agent", map[string]int{"busybox:1": 2})
	cluster.Eventually(t, 30*time.Second, func() error {
		if got := revisions("app=agent"); len(got) != 2 || got[3] != first || got[2] == "" {
			return fmt.Errorf("revisions after undo: %v; want 2 (busybox:2) and 3 (busybox:1, hash %s)", got, first)
		}
		return nil
	})
	// kubectl tells a revision the set already runs by comparing its own
	// patch of the set with the revision's bytes.
	if out := kubectlOK(t, c, w, "rollout", "undo", "daemonset/agent", "--to-revision=3"); !strings.Contains(out, "skipped rollback") {
		t.Fatalf("undo to the running revision did not skip: %s", out)
	}
	kubectlOK(t, c, w, "set", "image", "daemonset/agent", "c=busybox:3")
	kubectlOK(t, c, r, "rollout", "status", "daemonset/agent", "--timeout=60s")
	// revisionHistoryLimit 1: busybox:2's revision goes once no pod runs it.
	cluster.Eventually(t, 30*time.Second, func() error {
		if got := revisions("app=agent"); len(got) != 2 || got[3] != first || got[4] == "" {
			return fmt.Errorf("revisions with a limit of 1: %v; want 3 (busybox:1) and 4", got)
		}
		return nil
	})
	table := kubectlOK(t, c, r, "get", "controllerrevisions")
	if !strings.Contains(table, "daemonset.apps/agent") || !strings.Contains(table, "CONTROLLER") {
		t.Fatalf("kubectl get controllerrevisions:\n%s", table)
	}

	sts := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db"}, Spec: appsv1.StatefulSetSpec{
		Replicas: ptr.To[int32](2), ServiceName: "db", PodManagementPolicy: appsv1.ParallelPodManagement,
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}}, Template: template("db")}}
	if _, err := wcs.AppsV1().StatefulSets("default").Create(ctx, sts, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubectlOK(t, c, r, "rollout", "status", "statefulset/db", "--timeout=60s")
	kubectlOK(t, c, w, "patch", "statefulset/db", "-p", `{"spec":{"updateStrategy":{"rollingUpdate":{"partition":1}}}}`)
	kubectlOK(t, c, w, "set", "image", "statefulset/db", "c=busybox:2")
	images("app=db", map[string]int{"busybox:1": 1, "busybox:2": 1})
	if err := wcs.CoreV1().Pods("default").Delete(ctx, "db-0", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		p, err := rcs.CoreV1().Pods("default").Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil || p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning {
			return fmt.Errorf("db-0 not back yet (%v)", err)
		}
		if img := p.Spec.Containers[0].Image; img != "busybox:1" {
			return fmt.Errorf("db-0, below the partition, came back with %s, not the current revision's busybox:1", img)
		}
		return nil
	})
	kubectlOK(t, c, w, "rollout", "undo", "statefulset/db")
	images("app=db", map[string]int{"busybox:1": 2})
	if got := revisions("app=db"); len(got) != 2 || got[3] == "" {
		t.Fatalf("statefulset revisions after undo: %v; want 2 and 3", got)
	}

	if err := wcs.AppsV1().DaemonSets("default").Delete(ctx, "agent", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if got := revisions("app=agent"); len(got) != 0 {
			return fmt.Errorf("revisions of a deleted DaemonSet: %v", got)
		}
		return nil
	})
}
