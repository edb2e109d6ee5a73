package sched

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
)

// The scheduler's core is driven in memory here: a cache filled with
// nodes and pods, and cycles run on it, with no API behind it.

func testNode(name string, cpu, mem string, lbls map[string]string) *corev1.Node {
	if lbls == nil {
		lbls = map[string]string{}
	}
	lbls[corev1.LabelHostname] = name
	res := corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse(mem), corev1.ResourcePods: resource.MustParse("110")}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: lbls},
		Status: corev1.NodeStatus{Allocatable: res, Capacity: res,
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	}
}

func testPod(name, cpu, mem string) *corev1.Pod {
	req := corev1.ResourceList{}
	if cpu != "" {
		req[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
	if mem != "" {
		req[corev1.ResourceMemory] = resource.MustParse(mem)
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Labels: map[string]string{}},
		Spec: corev1.PodSpec{SchedulerName: Name, Containers: []corev1.Container{{
			Name: "c", Image: "i", Resources: corev1.ResourceRequirements{Requests: req},
		}}},
	}
}

func noNamespaceLabels(string) labels.Set { return nil }

func newTestCache(nodes ...*corev1.Node) *cache {
	c := newCache()
	for _, n := range nodes {
		c.setNode(n)
	}
	return c
}

// place runs one cycle and assumes the pod onto the node it picks.
func place(t *testing.T, c *cache, pod *corev1.Pod) (string, *fitError, preemptionPlan) {
	t.Helper()
	d, err := c.decide(pod, noNamespaceLabels, 0)
	if err != nil {
		t.Fatal(err)
	}
	return d.node, d.fit, d.plan
}

func mustPlace(t *testing.T, c *cache, pod *corev1.Pod) string {
	t.Helper()
	node, fit, _ := place(t, c, pod)
	if fit != nil {
		t.Fatalf("%s did not fit: %v", pod.Name, fit)
	}
	return node
}

func mustFail(t *testing.T, c *cache, pod *corev1.Pod, want string) preemptionPlan {
	t.Helper()
	node, fit, plan := place(t, c, pod)
	if fit == nil {
		t.Fatalf("%s was placed on %s; want %q", pod.Name, node, want)
	}
	if got := fit.Error(); got != want {
		t.Fatalf("%s:\n got %q\nwant %q", pod.Name, got, want)
	}
	return plan
}

func TestResourcesFit(t *testing.T) {
	c := newTestCache(testNode("a", "2", "4Gi", nil), testNode("b", "1", "4Gi", nil))
	mustFail(t, c, testPod("huge", "3", ""), "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
	if got := mustPlace(t, c, testPod("big", "1500m", "")); got != "a" {
		t.Fatalf("a 1.5-CPU pod went to %s", got)
	}
	mustFail(t, c, testPod("both", "1", "5Gi"), "0/2 nodes are available: 1 Insufficient cpu, 2 Insufficient memory. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
	if got := mustPlace(t, c, testPod("small", "1", "")); got != "b" {
		t.Fatalf("a 1-CPU pod went to %s", got)
	}
	full := newTestCache(testNode("a", "2", "4Gi", nil))
	full.nodes["a"].allocatable.pods = 1
	mustPlace(t, full, testPod("one", "", ""))
	mustFail(t, full, testPod("two", "", ""), "0/1 nodes are available: 1 Too many pods. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
}

func TestNodeFilters(t *testing.T) {
	tainted := testNode("tainted", "4", "4Gi", nil)
	tainted.Spec.Taints = []corev1.Taint{{Key: "dedicated", Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	cordoned := testNode("cordoned", "4", "4Gi", nil)
	cordoned.Spec.Unschedulable = true
	notReady := testNode("notready", "4", "4Gi", nil)
	notReady.Status.Conditions[0].Status = corev1.ConditionUnknown
	other := testNode("other", "4", "4Gi", map[string]string{"disk": "hdd"})
	c := newTestCache(tainted, cordoned, notReady, other)

	pod := testPod("p", "", "")
	pod.Spec.NodeSelector = map[string]string{"disk": "ssd"}
	mustFail(t, c, pod, "0/4 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "+
		"1 node(s) had untolerated taint {dedicated: gpu}, 1 node(s) had untolerated taint {node.kubernetes.io/not-ready: }, "+
		"1 node(s) were unschedulable. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")

	tolerating := testPod("t", "", "")
	tolerating.Spec.Tolerations = []corev1.Toleration{{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "gpu", Effect: corev1.TaintEffectNoSchedule}}
	tolerating.Spec.NodeSelector = map[string]string{corev1.LabelHostname: "tainted"}
	if got := mustPlace(t, c, tolerating); got != "tainted" {
		t.Fatalf("a tolerating pod went to %s", got)
	}
	daemon := testPod("d", "", "")
	daemon.Spec.Tolerations = []corev1.Toleration{{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists}}
	daemon.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"notready"}}}}},
	}}}
	if got := mustPlace(t, c, daemon); got != "notready" {
		t.Fatalf("a pod tolerating not-ready went to %s", got)
	}
	affine := testPod("affine", "", "")
	affine.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"hdd", "ssd"}}}}},
	}}}
	if got := mustPlace(t, c, affine); got != "other" {
		t.Fatalf("a pod with node affinity went to %s", got)
	}
}

func TestHostPorts(t *testing.T) {
	c := newTestCache(testNode("a", "4", "4Gi", nil), testNode("b", "4", "4Gi", nil))
	withPort := func(name string) *corev1.Pod {
		p := testPod(name, "", "")
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: 80, HostPort: 8080}}
		return p
	}
	first, second := mustPlace(t, c, withPort("one")), mustPlace(t, c, withPort("two"))
	if first == second {
		t.Fatalf("two pods with host port 8080 share node %s", first)
	}
	mustFail(t, c, withPort("three"), "0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
}

func zoned(name, zone string) *corev1.Node {
	return testNode(name, "8", "8Gi", map[string]string{corev1.LabelTopologyZone: zone})
}

func labelled(name string, lbls map[string]string) *corev1.Pod {
	p := testPod(name, "", "")
	p.Labels = lbls
	return p
}

func TestPodAffinity(t *testing.T) {
	c := newTestCache(zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b"))
	web := map[string]string{"app": "web"}
	selector := &metav1.LabelSelector{MatchLabels: web}
	anti := func(name string) *corev1.Pod {
		p := labelled(name, web)
		p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
			LabelSelector: selector, TopologyKey: corev1.LabelTopologyZone,
		}}}}
		return p
	}
	z1, z2 := c.nodes[mustPlace(t, c, anti("w1"))].node.Labels[corev1.LabelTopologyZone], c.nodes[mustPlace(t, c, anti("w2"))].node.Labels[corev1.LabelTopologyZone]
	if z1 == z2 {
		t.Fatalf("two pods that repel each other share zone %s", z1)
	}
	mustFail(t, c, anti("w3"), "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
	// A plain pod with the label is kept out by the others' anti-affinity.
	mustFail(t, c, labelled("plain", web), "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")

	c = newTestCache(zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b"))
	cache := labelled("cache", map[string]string{"app": "cache"})
	cache.Spec.NodeSelector = map[string]string{corev1.LabelHostname: "b1"}
	follower := labelled("follower", nil)
	follower.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cache"}}, TopologyKey: corev1.LabelTopologyZone,
	}}}}
	mustFail(t, c, follower, "0/3 nodes are available: 3 node(s) didn't match pod affinity rules. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.")
	mustPlace(t, c, cache)
	if got := mustPlace(t, c, follower); got != "b1" {
		t.Fatalf("a pod with affinity to the cache went to %s", got)
	}
	// The first pod of a group that must be together goes anywhere.
	self := labelled("self", map[string]string{"group": "g"})
	self.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"group": "g"}}, TopologyKey: corev1.LabelTopologyZone,
	}}}}
	mustPlace(t, c, self)

	// Preferred affinity draws a pod to the zone of the pods it likes.
	friendly := labelled("friendly", nil)
	friendly.Spec.Affinity = &corev1.Affinity{PodAffinity: &corev1.PodAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.WeightedPodAffinityTerm{{
		Weight: 100, PodAffinityTerm: corev1.PodAffinityTerm{LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cache"}}, TopologyKey: corev1.LabelTopologyZone},
	}}}}
	if got := mustPlace(t, c, friendly); got != "b1" {
		t.Fatalf("a pod preferring the cache's zone went to %s", got)
	}
}

func TestScores(t *testing.T) {
	// Least allocated: the emptier node wins.
	c := newTestCache(testNode("busy", "4", "8Gi", nil), testNode("idle", "4", "8Gi", nil))
	filler := testPod("filler", "3", "6Gi")
	filler.Spec.NodeSelector = map[string]string{corev1.LabelHostname: "busy"}
	mustPlace(t, c, filler)
	if got := mustPlace(t, c, testPod("p", "500m", "1Gi")); got != "idle" {
		t.Fatalf("least allocated: went to %s", got)
	}

	// Balanced allocation: between two equally free nodes, the one whose
	// CPU and memory stay in proportion.
	c = newTestCache(testNode("cpu-heavy", "4", "8Gi", nil), testNode("even", "4", "8Gi", nil))
	hog := testPod("hog", "2", "1Gi")
	hog.Spec.NodeSelector = map[string]string{corev1.LabelHostname: "cpu-heavy"}
	even := testPod("even", "1500m", "3Gi")
	even.Spec.NodeSelector = map[string]string{corev1.LabelHostname: "even"}
	mustPlace(t, c, hog)
	mustPlace(t, c, even)
	if got := mustPlace(t, c, testPod("mem", "100m", "2Gi")); got != "cpu-heavy" {
		t.Fatalf("balanced allocation: a memory-heavy pod went to %s", got)
	}

	// Preferred node affinity and PreferNoSchedule taints.
	c = newTestCache(testNode("plain", "4", "8Gi", nil), testNode("ssd", "4", "8Gi", map[string]string{"disk": "ssd"}))
	prefers := testPod("prefers", "", "")
	prefers.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
		Weight: 50, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}}}},
	}}}}
	for i := range 5 {
		p := prefers.DeepCopy()
		p.Name = fmt.Sprintf("prefers-%d", i)
		if got := mustPlace(t, c, p); got != "ssd" {
			t.Fatalf("preferred node affinity: went to %s", got)
		}
	}
	soft := testNode("soft", "64", "64Gi", nil)
	soft.Spec.Taints = []corev1.Taint{{Key: "spot", Effect: corev1.TaintEffectPreferNoSchedule}}
	c = newTestCache(soft, testNode("hard", "4", "8Gi", nil))
	if got := mustPlace(t, c, testPod("p", "", "")); got != "hard" {
		t.Fatalf("PreferNoSchedule: went to %s", got)
	}
}

func TestTopologySpread(t *testing.T) {
	c := newTestCache(zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b"))
	spread := func(name string, when corev1.UnsatisfiableConstraintAction) *corev1.Pod {
		p := labelled(name, map[string]string{"app": "web"})
		p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{
			MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: when,
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}},
		}}
		return p
	}
	pinned := func(c *cache, node string) {
		p := labelled("pinned-"+node, map[string]string{"app": "web"})
		p.Spec.NodeSelector = map[string]string{corev1.LabelHostname: node}
		mustPlace(t, c, p)
	}
	pinned(c, "a1")
	pinned(c, "a2")
	if got := mustPlace(t, c, spread("w1", corev1.DoNotSchedule)); got != "b1" {
		t.Fatalf("DoNotSchedule spread: with zone a at 2 and b at 0, went to %s", got)
	}
	c.nodes["b1"].allocatable.pods = int64(len(c.nodes["b1"].pods))
	mustFail(t, c, spread("w2", corev1.DoNotSchedule), "0/3 nodes are available: 1 Too many pods, 2 node(s) didn't match pod topology spread constraints. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")

	c = newTestCache(zoned("a1", "a"), zoned("a2", "a"), zoned("b1", "b"))
	pinned(c, "a1")
	pinned(c, "a2")
	if got := mustPlace(t, c, spread("soft", corev1.ScheduleAnyway)); got != "b1" {
		t.Fatalf("ScheduleAnyway spread: went to %s", got)
	}
}

func TestPreemption(t *testing.T) {
	c := newTestCache(testNode("a", "2", "4Gi", nil), testNode("b", "2", "4Gi", nil))
	low := func(name string, prio int32, cpu string) *corev1.Pod {
		p := testPod(name, cpu, "")
		p.Spec.Priority = ptr.To(prio)
		return p
	}
	mustPlace(t, c, low("a-low", 1, "1"))
	mustPlace(t, c, low("b-low", 10, "1"))
	mustPlace(t, c, low("a-low2", 1, "1"))
	mustPlace(t, c, low("b-mid", 10, "1"))
	plan := mustFail(t, c, low("urgent", 100, "1"), "0/2 nodes are available: 2 Insufficient cpu.")
	if len(plan.victims) != 1 || *plan.victims[0].pod.Spec.Priority != 1 {
		t.Fatalf("preemption chose %+v; want one priority-1 victim", plan)
	}
	mustFail(t, c, low("equal", 1, "1"), "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
	never := low("never", 100, "1")
	never.Spec.PreemptionPolicy = ptr.To(corev1.PreemptNever)
	if plan := mustFail(t, c, never, "0/2 nodes are available: 2 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."); plan.node != "" {
		t.Fatal("a pod with preemptionPolicy Never preempted")
	}
}

func TestQueue(t *testing.T) {
	q := newQueue()
	now := time.Unix(1000, 0)
	q.now = func() time.Time { return now }
	ctx := context.Background()
	for i, prio := range []int32{0, 5, 0} {
		p := testPod(fmt.Sprintf("p%d", i), "", "")
		p.Spec.Priority = ptr.To(prio)
		q.add(p, podKey(p))
		now = now.Add(time.Millisecond)
	}
	var order []string
	for range 3 {
		e, _ := q.pop(ctx)
		order = append(order, e.pod.Name)
	}
	if fmt.Sprint(order) != "[p1 p0 p2]" {
		t.Fatalf("pop order %v; want priority, then age", order)
	}
	q.failed("default/p0")
	q.flush()
	if q.heap.Len() != 0 {
		t.Fatal("a failed pod came back without a change in the cluster")
	}
	q.clusterChanged()
	q.flush()
	if q.heap.Len() != 0 {
		t.Fatal("a failed pod came back before its backoff")
	}
	now = now.Add(initialBackoff)
	q.flush()
	if q.heap.Len() != 1 {
		t.Fatal("a failed pod did not come back after a change and its backoff")
	}
	e, _ := q.pop(ctx)
	q.failed(e.key)
	now = now.Add(maxUnschedulable)
	q.flush()
	if q.heap.Len() != 1 {
		t.Fatal("an unschedulable pod was not retried after maxUnschedulable")
	}
	q.remove("default/p0")
	if q.heap.Len() != 0 || len(q.entries) != 2 {
		t.Fatalf("remove left %d active, %d known", q.heap.Len(), len(q.entries))
	}
}

func TestNominatedPodsKeepTheirRoom(t *testing.T) {
	c := newTestCache(testNode("a", "2", "4Gi", nil))
	withPrio := func(name, cpu string, prio int32) *corev1.Pod {
		p := testPod(name, cpu, "")
		p.Spec.Priority = ptr.To(prio)
		return p
	}
	preemptor := withPrio("preemptor", "1500m", 100)
	preemptor.Status.NominatedNodeName = "a"
	c.nominate(preemptor)
	mustFail(t, c, withPrio("low", "1", 0), "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod.")
	mustPlace(t, c, withPrio("peer", "500m", 100))
	if got := mustPlace(t, c, preemptor); got != "a" {
		t.Fatalf("the nominated pod went to %s", got)
	}
	c.unnominate("default/preemptor")
	if len(c.nominated) != 0 {
		t.Fatalf("nominations left: %v", c.nominated)
	}
}

// A cycle that panics fails its pod, not the server, and leaves the cache
// unlocked for the next one.
func TestPanickingCycleIsAnError(t *testing.T) {
	c := newTestCache(testNode("n1", "4", "8Gi", nil))
	if _, err := c.decide(nil, noNamespaceLabels, 0); err == nil || !strings.Contains(err.Error(), "panicked") {
		t.Fatalf("a cycle for a nil pod: %v", err)
	}
	if got := mustPlace(t, c, testPod("next", "1", "1Gi")); got != "n1" {
		t.Fatalf("the next pod went to %q", got)
	}
}

func TestMissingClaimKeepsThePodPending(t *testing.T) {
	c := newTestCache(testNode("a", "2", "4Gi", nil))
	pod := testPod("claims", "", "")
	pod.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: "data-db-0"}}}}
	mustFail(t, c, pod, `0/1 nodes are available: persistentvolumeclaim "data-db-0" not found. preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.`)
}
