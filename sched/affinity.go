package sched

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/util/sets"
)

// affinityTerm is a pod (anti-)affinity term made ready to match pods.
type affinityTerm struct {
	selector    labels.Selector
	namespaces  sets.Set[string]
	nsSelector  labels.Selector // nil: only namespaces counts
	topologyKey string
}

type weightedTerm struct {
	affinityTerm
	weight int64 // negative for anti-affinity
}

func newAffinityTerms(pod *corev1.Pod, terms []corev1.PodAffinityTerm) []affinityTerm {
	out := make([]affinityTerm, 0, len(terms))
	for _, t := range terms {
		out = append(out, newAffinityTerm(pod, t))
	}
	return out
}

func newWeightedTerm(pod *corev1.Pod, w corev1.WeightedPodAffinityTerm, sign int64) weightedTerm {
	return weightedTerm{affinityTerm: newAffinityTerm(pod, w.PodAffinityTerm), weight: sign * int64(w.Weight)}
}

// newAffinityTerm resolves a term against the pod that carries it: an
// empty namespace list means the pod's own namespace.
func newAffinityTerm(pod *corev1.Pod, t corev1.PodAffinityTerm) affinityTerm {
	at := affinityTerm{selector: podSelector(pod, t.LabelSelector, t.MatchLabelKeys, t.MismatchLabelKeys), namespaces: sets.New(t.Namespaces...), topologyKey: t.TopologyKey}
	if t.NamespaceSelector != nil {
		if s, err := metav1.LabelSelectorAsSelector(t.NamespaceSelector); err == nil {
			at.nsSelector = s
		}
	}
	if len(t.Namespaces) == 0 && t.NamespaceSelector == nil {
		at.namespaces.Insert(pod.Namespace)
	}
	return at
}

// podSelector is a term's label selector (nil selects nothing) with the
// pod's own values of matchLabelKeys required and of mismatchLabelKeys
// excluded.
func podSelector(pod *corev1.Pod, ls *metav1.LabelSelector, match, mismatch []string) labels.Selector {
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil || ls == nil {
		return labels.Nothing()
	}
	for _, keys := range []struct {
		keys []string
		op   selection.Operator
	}{{match, selection.In}, {mismatch, selection.NotIn}} {
		for _, k := range keys.keys {
			if v, ok := pod.Labels[k]; ok {
				if r, err := labels.NewRequirement(k, keys.op, []string{v}); err == nil {
					sel = sel.Add(*r)
				}
			}
		}
	}
	return sel
}

// namespaceLabels returns the labels of a namespace, for namespace
// selectors.
type namespaceLabels func(name string) labels.Set

func (t *affinityTerm) matches(pod *corev1.Pod, nsLabels namespaceLabels) bool {
	if !t.namespaces.Has(pod.Namespace) && (t.nsSelector == nil || !t.nsSelector.Matches(nsLabels(pod.Namespace))) {
		return false
	}
	return t.selector.Matches(labels.Set(pod.Labels))
}

// topologyCounts counts, per value of a topology key, the pods a term
// matches.
type topologyCounts map[string]int64

// countTerm counts the pods in the cache a term matches by the topology
// value of their node.
func (c *cache) countTerm(t *affinityTerm, nsLabels namespaceLabels) topologyCounts {
	counts := topologyCounts{}
	for _, n := range c.nodes {
		if n.node == nil {
			continue
		}
		v, ok := n.node.Labels[t.topologyKey]
		if !ok {
			continue
		}
		for _, p := range n.pods {
			if t.matches(p.pod, nsLabels) {
				counts[v]++
			}
		}
	}
	return counts
}

// podAffinity is the inter-pod affinity state of one scheduling cycle.
type podAffinity struct {
	required      []affinityTerm
	requiredCount []topologyCounts
	// selfMatch lets the first pod of a group that must be together go
	// anywhere, as kube-scheduler does.
	selfMatch []bool
	anti      []affinityTerm
	antiCount []topologyCounts
	// forbidden[key] holds the topology values where an existing pod's
	// required anti-affinity keeps this pod out.
	forbidden map[string]sets.Set[string]
	// preferred[key][value] is the weight the pod's preferred terms and
	// existing pods' preferred terms give to that topology domain.
	preferred map[string]map[string]int64
}

func (c *cache) podAffinity(pi *podInfo, nsLabels namespaceLabels) *podAffinity {
	pod := pi.pod
	pa := &podAffinity{forbidden: map[string]sets.Set[string]{}, preferred: map[string]map[string]int64{}}
	if a := pod.Spec.Affinity; a != nil {
		if a.PodAffinity != nil {
			pa.required = newAffinityTerms(pod, a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
			for i := range pa.required {
				pa.requiredCount = append(pa.requiredCount, c.countTerm(&pa.required[i], nsLabels))
				pa.selfMatch = append(pa.selfMatch, pa.required[i].matches(pod, nsLabels))
			}
		}
		if a.PodAntiAffinity != nil {
			pa.anti = newAffinityTerms(pod, a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution)
			for i := range pa.anti {
				pa.antiCount = append(pa.antiCount, c.countTerm(&pa.anti[i], nsLabels))
			}
		}
	}
	own := pi.preferred
	for i := range own {
		for v, n := range c.countTerm(&own[i].affinityTerm, nsLabels) {
			pa.addPreferred(own[i].topologyKey, v, own[i].weight*n)
		}
	}
	// Terms of existing pods that match this one.
	for key, p := range c.affine {
		n := c.nodes[c.podNode[key]].node
		if n == nil {
			continue
		}
		for i := range p.antiAffinity {
			t := &p.antiAffinity[i]
			if v, ok := n.Labels[t.topologyKey]; ok && t.matches(pod, nsLabels) {
				if pa.forbidden[t.topologyKey] == nil {
					pa.forbidden[t.topologyKey] = sets.New[string]()
				}
				pa.forbidden[t.topologyKey].Insert(v)
			}
		}
		for i := range p.preferred {
			t := &p.preferred[i]
			if v, ok := n.Labels[t.topologyKey]; ok && t.matches(pod, nsLabels) {
				pa.addPreferred(t.topologyKey, v, t.weight)
			}
		}
	}
	return pa
}

func (pa *podAffinity) addPreferred(key, value string, w int64) {
	if pa.preferred[key] == nil {
		pa.preferred[key] = map[string]int64{}
	}
	pa.preferred[key][value] += w
}

// empty reports whether the pod and the cluster have no pod affinity
// that concerns this pod, so the cycle can skip it.
func (pa *podAffinity) empty() bool {
	return len(pa.required) == 0 && len(pa.anti) == 0 && len(pa.forbidden) == 0 && len(pa.preferred) == 0
}

// filter returns why the node fails the pod's affinity, or "", checking
// in kube-scheduler's order.
func (pa *podAffinity) filter(node *corev1.Node) string {
	for key, values := range pa.forbidden {
		if v, ok := node.Labels[key]; ok && values.Has(v) {
			return reasonExistingAntiAffinity
		}
	}
	for i, t := range pa.anti {
		if v, ok := node.Labels[t.topologyKey]; ok && pa.antiCount[i][v] > 0 {
			return reasonAntiAffinity
		}
	}
	for i, t := range pa.required {
		v, ok := node.Labels[t.topologyKey]
		if !ok {
			return reasonAffinity
		}
		if pa.requiredCount[i][v] > 0 {
			continue
		}
		if len(pa.requiredCount[i]) == 0 && pa.selfMatch[i] {
			continue
		}
		return reasonAffinity
	}
	return ""
}

// score is the sum of preferred weights for the node's domains.
func (pa *podAffinity) score(node *corev1.Node) int64 {
	var s int64
	for key, values := range pa.preferred {
		if v, ok := node.Labels[key]; ok {
			s += values[v]
		}
	}
	return s
}

// spread is the topology spread state of one scheduling cycle.
type spread struct {
	constraints []spreadConstraint
}

type spreadConstraint struct {
	corev1.TopologySpreadConstraint
	selector labels.Selector
	counts   topologyCounts
	min      int64 // the smallest count over the eligible domains
}

// podSpread counts, for each of the pod's constraints, the matching pods
// per domain over the nodes the pod could go to by its node affinity and
// taints (the default Honor/Ignore policies).
func (c *cache) podSpread(pod *corev1.Pod, eligible func(*corev1.Node) bool) *spread {
	s := &spread{}
	for _, tsc := range pod.Spec.TopologySpreadConstraints {
		sel := podSelector(pod, tsc.LabelSelector, tsc.MatchLabelKeys, nil)
		sc := spreadConstraint{TopologySpreadConstraint: tsc, selector: sel, counts: topologyCounts{}}
		for _, n := range c.nodes {
			if n.node == nil || !eligible(n.node) {
				continue
			}
			v, ok := n.node.Labels[tsc.TopologyKey]
			if !ok {
				continue
			}
			if _, seen := sc.counts[v]; !seen {
				sc.counts[v] = 0
			}
			for _, p := range n.pods {
				if p.pod.Namespace == pod.Namespace && sel.Matches(labels.Set(p.pod.Labels)) {
					sc.counts[v]++
				}
			}
		}
		sc.min = -1
		for _, n := range sc.counts {
			if sc.min < 0 || n < sc.min {
				sc.min = n
			}
		}
		if tsc.MinDomains != nil && int32(len(sc.counts)) < *tsc.MinDomains {
			sc.min = 0
		}
		s.constraints = append(s.constraints, sc)
	}
	return s
}

// filter returns why placing the pod on the node would break a
// DoNotSchedule constraint, or "".
func (s *spread) filter(pod *corev1.Pod, node *corev1.Node) string {
	for _, sc := range s.constraints {
		if sc.WhenUnsatisfiable != corev1.DoNotSchedule {
			continue
		}
		v, ok := node.Labels[sc.TopologyKey]
		if !ok {
			return reasonSpreadMissingLabel
		}
		self := int64(0)
		if sc.selector.Matches(labels.Set(pod.Labels)) {
			self = 1
		}
		if sc.counts[v]+self-max(sc.min, 0) > int64(sc.MaxSkew) {
			return reasonSpread
		}
	}
	return ""
}

// score is the number of matching pods in the node's domains over all
// ScheduleAnyway constraints: lower is better.
func (s *spread) score(node *corev1.Node) (int64, bool) {
	var total int64
	any := false
	for _, sc := range s.constraints {
		if sc.WhenUnsatisfiable != corev1.ScheduleAnyway {
			continue
		}
		any = true
		total += sc.counts[node.Labels[sc.TopologyKey]]
	}
	return total, any
}
