package sched

import (
	"fmt"
	"runtime/debug"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// The reasons a node is not feasible, in kube-scheduler's words, so a
// FailedScheduling event reads the same.
const (
	reasonUnschedulable        = "node(s) were unschedulable"
	reasonNodeAffinity         = "node(s) didn't match Pod's node affinity/selector"
	reasonPorts                = "node(s) didn't have free ports for the requested pod ports"
	reasonTooManyPods          = "Too many pods"
	reasonAffinity             = "node(s) didn't match pod affinity rules"
	reasonAntiAffinity         = "node(s) didn't match pod anti-affinity rules"
	reasonExistingAntiAffinity = "node(s) didn't satisfy existing pods anti-affinity rules"
	reasonSpread               = "node(s) didn't match pod topology spread constraints"
	reasonSpreadMissingLabel   = "node(s) didn't match pod topology spread constraints (missing required label)"
)

// notReadyTaint is what a node whose Ready condition is not True counts
// as carrying, as the node lifecycle controller taints it in Kubernetes:
// only pods that tolerate it (DaemonSet pods) may go there.
var notReadyTaint = corev1.Taint{Key: corev1.TaintNodeNotReady, Effect: corev1.TaintEffectNoSchedule}

// cycle is one attempt to place one pod: what the filters and scores
// derive from the pod and the cluster, computed once per attempt.
type cycle struct {
	pi       *podInfo
	affinity nodeaffinity.RequiredNodeAffinity
	podAff   *podAffinity
	spread   *spread
}

func newCycle(c *cache, pi *podInfo, nsLabels namespaceLabels) *cycle {
	cy := &cycle{pi: pi, affinity: nodeaffinity.GetRequiredNodeAffinity(pi.pod)}
	cy.podAff = c.podAffinity(pi, nsLabels)
	if cy.podAff.empty() {
		cy.podAff = nil
	}
	if len(pi.pod.Spec.TopologySpreadConstraints) > 0 {
		cy.spread = c.podSpread(pi.pod, func(n *corev1.Node) bool {
			ok, err := cy.affinity.Match(n)
			return err == nil && ok
		})
	}
	return cy
}

// missingClaim returns a PersistentVolumeClaim the pod needs that does
// not exist (a generic ephemeral volume's claim is named after the pod and
// the volume): Pontoon serves no claims yet, so every claim is missing,
// and the pod stays Pending rather than run without its volume.
func missingClaim(pod *corev1.Pod) string {
	for _, v := range pod.Spec.Volumes {
		switch {
		case v.PersistentVolumeClaim != nil:
			return v.PersistentVolumeClaim.ClaimName
		case v.Ephemeral != nil:
			return pod.Name + "-" + v.Name
		}
	}
	return ""
}

// decision is what one cycle made of a pod: the node it is assumed onto,
// or why it fits nowhere and whom preempting would make room.
type decision struct {
	pi   *podInfo
	node string
	fit  *fitError
	plan preemptionPlan
	// next is where the next cycle starts its walk of the nodes.
	next int
}

// decide runs one scheduling cycle for pod, walking the nodes from start,
// and assumes the pod onto the node it picks. A panic in it (a pod or a
// node the filters do not expect) is returned as an error: the server is
// also a Raft voter and an API server, and the same pod would bring down
// every server that leads next (ctrl's syncSafely does the same).
func (c *cache) decide(pod *corev1.Pod, nsLabels namespaceLabels, start int) (d decision, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("scheduling cycle panicked: %v\n%s", r, debug.Stack())
		}
	}()
	d.pi = newPodInfo(pod)
	if claim := missingClaim(pod); claim != "" {
		// As kube-scheduler's VolumeBinding pre-filter: no node can help,
		// and no preemption either.
		d.fit = newFitError(len(c.order))
		d.fit.prefilter = fmt.Sprintf("persistentvolumeclaim %q not found", claim)
		return d, nil
	}
	cy := newCycle(c, d.pi, nsLabels)
	best, failures, checked := c.findNode(cy, start)
	if all := len(c.order); all > 0 {
		d.next = (start + checked) % all
	}
	if best != nil {
		d.node = best.node.Name
		c.addLocked(d.pi, d.node)
		c.assumed[d.pi.key] = true
		return d, nil
	}
	d.fit = newFitError(len(c.order))
	for _, f := range failures {
		d.fit.add(f)
	}
	d.plan = c.preemption(cy, failures)
	d.fit.preemption = d.plan.message
	return d, nil
}

// findNode walks the nodes from start, keeps those that pass every
// filter until it has numFeasibleNodesToFind of them, and returns the
// best by score; or nil and why each node failed. It also returns how
// many nodes it walked. Called with the cache locked.
func (c *cache) findNode(cy *cycle, start int) (*nodeInfo, map[string]*failure, int) {
	all := len(c.order)
	want := numFeasibleNodesToFind(all)
	feasible := c.feasible[:0]
	defer func() {
		clear(feasible) // no node outlives its removal here
		c.feasible = feasible[:0]
	}()
	failures := map[string]*failure{}
	checked := 0
	prio := corev1helpers.PodPriority(cy.pi.pod)
	for ; checked < all && len(feasible) < want; checked++ {
		n := c.order[(start+checked)%all]
		if f := cy.filter(c.withNominated(n, cy.pi.key, prio)); f != nil {
			failures[n.node.Name] = f
			continue
		}
		feasible = append(feasible, n)
	}
	if len(feasible) == 0 {
		return nil, failures, checked
	}
	if cap(c.scores) < 2*len(feasible) {
		c.scores = make([]int64, 2*len(feasible))
	}
	return cy.selectHost(feasible, c.scores[:2*len(feasible)]), nil, checked
}

// numFeasibleNodesToFind is how many feasible nodes a cycle looks for
// before it scores: kube-scheduler's adaptive percentage, which keeps a
// cycle's cost flat in large clusters.
func numFeasibleNodesToFind(all int) int {
	const minFeasible = 100
	if all < minFeasible {
		return all
	}
	pct := max(50-all/125, 5)
	return max(all*pct/100, minFeasible)
}

// failure is why one node does not fit: its reasons, and whether
// removing pods from it (preemption) could change that.
type failure struct {
	reasons    []string
	resolvable bool
}

// filter runs the filters in kube-scheduler's order and returns the
// first that fails, or nil if the pod fits the node.
func (cy *cycle) filter(n *nodeInfo) *failure {
	if f := cy.filterNode(n); f != nil {
		return f
	}
	return cy.filterPods(n)
}

// filterNode is the part of the filters that only looks at the node, so
// preemption need not retry it.
func (cy *cycle) filterNode(n *nodeInfo) *failure {
	pod := cy.pi.pod
	if n.unschedulable && !corev1helpers.TolerationsTolerateTaint(pod.Spec.Tolerations, &corev1.Taint{Key: corev1.TaintNodeUnschedulable, Effect: corev1.TaintEffectNoSchedule}) {
		return &failure{reasons: []string{reasonUnschedulable}}
	}
	noScheduleOrExecute := func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
	}
	if t, ok := corev1helpers.FindMatchingUntoleratedTaint(n.taints, pod.Spec.Tolerations, noScheduleOrExecute); ok {
		return &failure{reasons: []string{untoleratedTaint(t)}}
	}
	if !n.ready && !corev1helpers.TolerationsTolerateTaint(pod.Spec.Tolerations, &notReadyTaint) {
		return &failure{reasons: []string{untoleratedTaint(notReadyTaint)}}
	}
	if ok, err := cy.affinity.Match(n.node); err != nil || !ok {
		return &failure{reasons: []string{reasonNodeAffinity}}
	}
	return nil
}

func untoleratedTaint(t corev1.Taint) string {
	return fmt.Sprintf("node(s) had untolerated taint {%s: %s}", t.Key, t.Value)
}

// filterPods is the part of the filters that depends on the pods on the
// node: removing some of them may make the pod fit.
func (cy *cycle) filterPods(n *nodeInfo) *failure {
	for _, p := range cy.pi.ports {
		for _, used := range n.ports {
			if p.conflicts(used) {
				return &failure{reasons: []string{reasonPorts}, resolvable: true}
			}
		}
	}
	if reasons := insufficient(cy.pi.req, n); len(reasons) > 0 {
		return &failure{reasons: reasons, resolvable: true}
	}
	if cy.spread != nil {
		if r := cy.spread.filter(cy.pi.pod, n.node); r != "" {
			return &failure{reasons: []string{r}, resolvable: r != reasonSpreadMissingLabel}
		}
	}
	if cy.podAff != nil {
		if r := cy.podAff.filter(n.node); r != "" {
			return &failure{reasons: []string{r}, resolvable: r != reasonAffinity}
		}
	}
	return nil
}

// insufficient lists the resources the node lacks for the request.
func insufficient(req resources, n *nodeInfo) []string {
	var reasons []string
	free, used := n.allocatable, n.requested
	if used.pods+1 > free.pods {
		reasons = append(reasons, reasonTooManyPods)
	}
	if req.milliCPU > 0 && used.milliCPU+req.milliCPU > free.milliCPU {
		reasons = append(reasons, "Insufficient cpu")
	}
	if req.memory > 0 && used.memory+req.memory > free.memory {
		reasons = append(reasons, "Insufficient memory")
	}
	if req.storage > 0 && used.storage+req.storage > free.storage {
		reasons = append(reasons, "Insufficient ephemeral-storage")
	}
	names := make([]string, 0, len(req.scalar))
	for name, v := range req.scalar {
		if v > 0 && used.scalar[name]+v > free.scalar[name] {
			names = append(names, "Insufficient "+string(name))
		}
	}
	sort.Strings(names)
	return append(reasons, names...)
}

func nodeReady(node *corev1.Node) bool {
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// fitError is the outcome of a cycle that found no node, written as
// kube-scheduler writes it: "0/3 nodes are available: 1 Insufficient cpu,
// 2 node(s) didn't match Pod's node affinity/selector."
type fitError struct {
	nodes      int
	reasons    map[string]int
	preemption string // what preemption found, if it ran
	// prefilter is why the pod fits no node whatever the node, when a
	// check before the nodes' filters said so.
	prefilter string
}

func newFitError(nodes int) *fitError { return &fitError{nodes: nodes, reasons: map[string]int{}} }

func (f *fitError) add(fl *failure) {
	for _, r := range fl.reasons {
		f.reasons[r]++
	}
}

func (f *fitError) Error() string {
	if f.prefilter != "" {
		return fmt.Sprintf("0/%d nodes are available: %s. preemption: 0/%d nodes are available: %d Preemption is not helpful for scheduling.", f.nodes, f.prefilter, f.nodes, f.nodes)
	}
	if f.nodes == 0 {
		return "no nodes available to schedule pods"
	}
	msg := fmt.Sprintf("0/%d nodes are available: %s.", f.nodes, histogram(f.reasons))
	if f.preemption != "" {
		msg += " " + f.preemption
	}
	return msg
}

// histogram writes "N reason" for each reason, sorted.
func histogram(reasons map[string]int) string {
	out := make([]string, 0, len(reasons))
	for r, n := range reasons {
		out = append(out, fmt.Sprintf("%d %s", n, r))
	}
	sort.Strings(out)
	return strings.Join(out, ", ")
}
