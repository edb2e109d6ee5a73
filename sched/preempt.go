package sched

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
)

// What preemption says about a node, in kube-scheduler's words.
const (
	reasonNotHelpful = "Preemption is not helpful for scheduling"
	reasonNoVictims  = "No preemption victims found for incoming pod"
)

// preemptionPlan is the node a pod may take by evicting victims of lower
// priority, or why there is none.
type preemptionPlan struct {
	node    string
	victims []*podInfo
	message string
}

// preemption looks for the node where evicting the fewest, least
// important pods of lower priority lets the pod fit, choosing as
// kube-scheduler does: the lowest highest-victim priority, then the
// lowest sum of priorities, then the fewest victims. Called with the
// cache locked.
func (c *cache) preemption(cy *cycle, failures map[string]*failure) preemptionPlan {
	pod := cy.pi.pod
	if pod.Spec.PreemptionPolicy != nil && *pod.Spec.PreemptionPolicy == corev1.PreemptNever {
		return preemptionPlan{message: "preemption: not eligible due to preemptionPolicy=Never."}
	}
	prio := corev1helpers.PodPriority(pod)
	// A pod that has already preempted waits for its victims to go.
	if nominated, ok := c.nodes[pod.Status.NominatedNodeName]; ok {
		for _, p := range nominated.pods {
			if p.pod.DeletionTimestamp != nil && corev1helpers.PodPriority(p.pod) < prio {
				return preemptionPlan{}
			}
		}
	}
	reasons := map[string]int{}
	var best *preemptionPlan
	var bestKey [3]int64
	for name, f := range failures {
		if !f.resolvable {
			reasons[reasonNotHelpful]++
			continue
		}
		victims, ok := victimsOn(cy, c.nodes[name], prio)
		if !ok {
			reasons[reasonNoVictims]++
			continue
		}
		key := [3]int64{int64(corev1helpers.PodPriority(victims[0].pod)), 0, int64(len(victims))}
		for _, v := range victims {
			key[1] += int64(corev1helpers.PodPriority(v.pod))
		}
		if best == nil || key[0] < bestKey[0] || (key[0] == bestKey[0] && (key[1] < bestKey[1] || (key[1] == bestKey[1] && key[2] < bestKey[2]))) {
			best, bestKey = &preemptionPlan{node: name, victims: victims}, key
		}
	}
	if best != nil {
		return *best
	}
	return preemptionPlan{message: fmt.Sprintf("preemption: 0/%d nodes are available: %s.", len(c.order), histogram(reasons))}
}

// victimsOn finds the pods of lower priority whose removal lets the pod
// fit the node: it removes them all, then gives back as many as still
// fit, the most important first. The victims come most important first.
func victimsOn(cy *cycle, n *nodeInfo, prio int32) ([]*podInfo, bool) {
	sim := newNodeInfo()
	sim.setNode(n.node)
	var lower []*podInfo
	for _, p := range n.pods {
		if corev1helpers.PodPriority(p.pod) < prio && p.pod.DeletionTimestamp == nil {
			lower = append(lower, p)
			continue
		}
		sim.addPod(p)
	}
	if len(lower) == 0 || cy.filterPods(sim) != nil {
		return nil, false
	}
	sort.Slice(lower, func(i, j int) bool {
		pi, pj := corev1helpers.PodPriority(lower[i].pod), corev1helpers.PodPriority(lower[j].pod)
		if pi != pj {
			return pi > pj
		}
		return lower[i].key < lower[j].key
	})
	var victims []*podInfo
	for _, p := range lower {
		sim.addPod(p)
		if cy.filterPods(sim) != nil {
			sim.removePod(p.key)
			victims = append(victims, p)
		}
	}
	return victims, len(victims) > 0
}

// evict deletes the victims of a preemption, each with its own grace
// period, and says so on each: first with the DisruptionTarget condition
// (which a Job's pod failure policy may read), then with an event.
func (s *Scheduler) evict(ctx context.Context, preemptor *corev1.Pod, plan preemptionPlan) {
	for _, v := range plan.victims {
		uid := v.pod.UID
		cond := corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: "PreemptionByScheduler",
			Message: preemptor.Spec.SchedulerName + ": preempting to accommodate a higher priority pod", LastTransitionTime: metav1.Now()}
		patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"uid": uid}, "status": map[string]any{"conditions": []corev1.PodCondition{cond}}})
		_, err := s.client.CoreV1().Pods(v.pod.Namespace).Patch(ctx, v.pod.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
		if err != nil && !apierrors.IsNotFound(err) {
			s.logger.Warn("preemption: marking a victim", "pod", v.key, "err", err)
			continue
		}
		err = s.client.CoreV1().Pods(v.pod.Namespace).Delete(ctx, v.pod.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			s.logger.Warn("preemption: deleting a victim", "pod", v.key, "err", err)
			continue
		}
		s.recorder.Eventf(v.pod, corev1.EventTypeNormal, "Preempted", "Preempted by pod %s on node %s", preemptor.UID, plan.node)
	}
}
