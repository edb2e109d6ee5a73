package sched

import (
	"math/rand/v2"

	corev1 "k8s.io/api/core/v1"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// maxScore is the top of every score's range, as in kube-scheduler.
const maxScore = 100

// A scorer rates every feasible node for a pod; its raw values are
// normalized to 0..maxScore over the candidates and weighted. The
// weights are kube-scheduler's defaults.
type scorer struct {
	weight int64
	raw    func(cy *cycle, n *nodeInfo) int64
	// normalize maps the raw values in place; nil means they already
	// lie in 0..maxScore.
	normalize func(raw []int64)
}

func (cy *cycle) scorers() []scorer {
	s := []scorer{
		{weight: 1, raw: leastAllocated},
		{weight: 1, raw: balancedAllocation},
		{weight: 3, raw: preferNoScheduleTaints, normalize: reverseNormalize},
	}
	if a := cy.pi.pod.Spec.Affinity; a != nil && a.NodeAffinity != nil && len(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) > 0 {
		if terms, err := nodeaffinity.NewPreferredSchedulingTerms(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution); err == nil {
			s = append(s, scorer{weight: 2, raw: func(_ *cycle, n *nodeInfo) int64 { return terms.Score(n.node) }, normalize: maxNormalize})
		}
	}
	if cy.podAff != nil && len(cy.podAff.preferred) > 0 {
		s = append(s, scorer{weight: 2, raw: func(cy *cycle, n *nodeInfo) int64 { return cy.podAff.score(n.node) }, normalize: minMaxNormalize})
	}
	if cy.spread != nil {
		if _, any := cy.spread.score(&corev1.Node{}); any {
			s = append(s, scorer{weight: 2, raw: func(cy *cycle, n *nodeInfo) int64 { v, _ := cy.spread.score(n.node); return v }, normalize: reverseNormalize})
		}
	}
	return s
}

// leastAllocated prefers nodes with more of their CPU and memory free
// after the pod.
func leastAllocated(cy *cycle, n *nodeInfo) int64 {
	free := func(requested, pod, allocatable int64) int64 {
		if allocatable == 0 || requested+pod > allocatable {
			return 0
		}
		return (allocatable - requested - pod) * maxScore / allocatable
	}
	return (free(n.nonZero.milliCPU, cy.pi.nonZero.milliCPU, n.allocatable.milliCPU) +
		free(n.nonZero.memory, cy.pi.nonZero.memory, n.allocatable.memory)) / 2
}

// balancedAllocation prefers nodes whose CPU and memory would be used in
// the same proportion.
func balancedAllocation(cy *cycle, n *nodeInfo) int64 {
	fraction := func(requested, pod, allocatable int64) float64 {
		if allocatable == 0 {
			return 1
		}
		return min(float64(requested+pod)/float64(allocatable), 1)
	}
	cpu := fraction(n.nonZero.milliCPU, cy.pi.nonZero.milliCPU, n.allocatable.milliCPU)
	mem := fraction(n.nonZero.memory, cy.pi.nonZero.memory, n.allocatable.memory)
	d := cpu - mem
	if d < 0 {
		d = -d
	}
	return int64((1 - d/2) * maxScore)
}

// preferNoScheduleTaints counts the node's PreferNoSchedule taints the
// pod does not tolerate: fewer is better.
func preferNoScheduleTaints(cy *cycle, n *nodeInfo) int64 {
	var count int64
	for i := range n.taints {
		t := &n.taints[i]
		if t.Effect == corev1.TaintEffectPreferNoSchedule && !corev1helpers.TolerationsTolerateTaint(cy.pi.pod.Spec.Tolerations, t) {
			count++
		}
	}
	return count
}

func maxNormalize(raw []int64) {
	top := int64(0)
	for _, v := range raw {
		top = max(top, v)
	}
	for i, v := range raw {
		if top > 0 {
			raw[i] = v * maxScore / top
		}
	}
}

// reverseNormalize makes the smallest raw value the best.
func reverseNormalize(raw []int64) {
	top := int64(0)
	for _, v := range raw {
		top = max(top, v)
	}
	for i, v := range raw {
		raw[i] = maxScore
		if top > 0 {
			raw[i] = maxScore - v*maxScore/top
		}
	}
}

func minMaxNormalize(raw []int64) {
	if len(raw) == 0 {
		return
	}
	lo, hi := raw[0], raw[0]
	for _, v := range raw {
		lo, hi = min(lo, v), max(hi, v)
	}
	for i, v := range raw {
		raw[i] = 0
		if hi > lo {
			raw[i] = (v - lo) * maxScore / (hi - lo)
		}
	}
}

// selectHost scores the feasible nodes and returns the best, choosing
// among equal ones at random so that equal nodes share the load. scores is
// working memory for two scores per node.
func (cy *cycle) selectHost(feasible []*nodeInfo, scores []int64) *nodeInfo {
	if len(feasible) == 1 {
		return feasible[0]
	}
	total, raw := scores[:len(feasible)], scores[len(feasible):]
	clear(total)
	for _, s := range cy.scorers() {
		for i, n := range feasible {
			raw[i] = s.raw(cy, n)
		}
		if s.normalize != nil {
			s.normalize(raw)
		}
		for i := range feasible {
			total[i] += s.weight * raw[i]
		}
	}
	best, ties := 0, 1
	for i := 1; i < len(feasible); i++ {
		switch {
		case total[i] > total[best]:
			best, ties = i, 1
		case total[i] == total[best]:
			ties++
			if rand.IntN(ties) == 0 {
				best = i
			}
		}
	}
	return feasible[best]
}
