package ctrl

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	corev1helpers "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

var daemonSetKind = appsv1.SchemeGroupVersion.WithKind("DaemonSet")

// daemonSetTolerations are the tolerations Kubernetes gives every
// DaemonSet pod, so that a node's conditions do not keep its daemons out.
var daemonSetTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// daemonSetController runs one pod of each DaemonSet on every node its
// selector, affinity and tolerations allow, as Kubernetes' does: the pod
// is pinned to its node by node affinity and placed by the scheduler; a
// node that stops qualifying loses the pod; RollingUpdate replaces pods
// of an old template within maxUnavailable. Its templates are kept as
// ControllerRevisions (history.go), which `kubectl rollout history` and
// `undo` read.
type daemonSetController struct {
	*controller
	client       kubernetes.Interface
	daemonSets   appslisters.DaemonSetLister
	pods         corelisters.PodLister
	nodes        corelisters.NodeLister
	history      *history
	expectations *expectations
}

func newDaemonSetController(cfg Config) *controller {
	c := &daemonSetController{client: cfg.Client, expectations: newExpectations()}
	c.controller = newController("daemonset", cfg, c.sync)
	dsInf, revInf := cfg.Informers.Apps().V1().DaemonSets(), cfg.Informers.Apps().V1().ControllerRevisions()
	podInf, nodeInf := cfg.Informers.Core().V1().Pods(), cfg.Informers.Core().V1().Nodes()
	dsInf.Informer().AddEventHandler(c.handler())
	revInf.Informer().AddEventHandler(c.enqueueOwner(daemonSetKind))
	podInf.Informer().AddEventHandler(c.observePods(c.expectations, daemonSetKind))
	podInf.Informer().AddEventHandler(c.enqueueAdopters(func(ns string) map[string]labels.Selector {
		all, _ := c.daemonSets.DaemonSets(ns).List(labels.Everything())
		return selectors(all, func(ds *appsv1.DaemonSet) *metav1.LabelSelector { return ds.Spec.Selector })
	}))
	all := func(any) {
		dss, err := c.daemonSets.List(labels.Everything())
		if err != nil {
			return
		}
		for _, ds := range dss {
			c.queue.Add(ds.Namespace + "/" + ds.Name)
		}
	}
	nodeInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: all,
		UpdateFunc: func(old, obj any) {
			o, n := old.(*corev1.Node), obj.(*corev1.Node)
			if !equality.Semantic.DeepEqual(o.Labels, n.Labels) || !equality.Semantic.DeepEqual(o.Spec.Taints, n.Spec.Taints) {
				all(obj)
			}
		},
		DeleteFunc: all,
	})
	c.daemonSets, c.pods, c.nodes = dsInf.Lister(), podInf.Lister(), nodeInf.Lister()
	c.history = &history{client: cfg.Client, revisions: revInf.Lister()}
	c.synced = append(c.synced, dsInf.Informer().HasSynced, podInf.Informer().HasSynced, nodeInf.Informer().HasSynced, revInf.Informer().HasSynced)
	return c.controller
}

// daemonPodNode is the node a DaemonSet pod is meant for: its node, or
// the node its node affinity pins it to while it is not yet bound.
func daemonPodNode(pod *corev1.Pod) string {
	if pod.Spec.NodeName != "" {
		return pod.Spec.NodeName
	}
	a := pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	for _, t := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, f := range t.MatchFields {
			if f.Key == metav1.ObjectNameField && f.Operator == corev1.NodeSelectorOpIn && len(f.Values) == 1 {
				return f.Values[0]
			}
		}
	}
	return ""
}

// daemonPod is the DaemonSet's pod for one node.
func daemonPod(ds *appsv1.DaemonSet, hash, node string) *corev1.Pod {
	pod := tolerantPod(ds)
	pod.Labels = withEntry(pod.Labels, appsv1.DefaultDaemonSetUniqueLabelKey, hash)
	if pod.Spec.Affinity == nil {
		pod.Spec.Affinity = &corev1.Affinity{}
	}
	if pod.Spec.Affinity.NodeAffinity == nil {
		pod.Spec.Affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	pod.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
		MatchFields: []corev1.NodeSelectorRequirement{{Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}},
	}}}
	return pod
}

// tolerantPod is the DaemonSet's template as a pod with the tolerations
// every DaemonSet pod gets.
func tolerantPod(ds *appsv1.DaemonSet) *corev1.Pod {
	pod := podFromTemplate(&ds.Spec.Template, ds, daemonSetKind)
	for _, t := range daemonSetTolerations {
		if !corev1helpers.TolerationsTolerateTaint(pod.Spec.Tolerations, &corev1.Taint{Key: t.Key, Effect: t.Effect}) {
			pod.Spec.Tolerations = append(pod.Spec.Tolerations, t)
		}
	}
	return pod
}

// placement says whether the DaemonSet's pod should run on a node and
// whether a pod already there may stay (untolerated NoSchedule taints keep
// new pods out but leave running ones).
func placement(ds *appsv1.DaemonSet, node *corev1.Node) (run, stay bool) {
	probe := tolerantPod(ds)
	if ok, err := nodeaffinity.GetRequiredNodeAffinity(probe).Match(node); err != nil || !ok {
		return false, false
	}
	_, noExecute := corev1helpers.FindMatchingUntoleratedTaint(node.Spec.Taints, probe.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoExecute
	})
	_, noSchedule := corev1helpers.FindMatchingUntoleratedTaint(node.Spec.Taints, probe.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoSchedule
	})
	return !noExecute && !noSchedule, !noExecute
}

func (c *daemonSetController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	ds, err := c.daemonSets.DaemonSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.expectations.forget(key)
		return nil
	}
	if err != nil {
		return err
	}
	nodes, err := c.nodes.List(labels.Everything())
	if err != nil {
		return err
	}
	fresh := freshOwner(c.client.AppsV1().DaemonSets(ns), name)
	satisfied := c.expectations.satisfied(key) // before the pods are listed (expectations)
	pods, err := claimPods(ctx, c.client, c.pods, &claimer{owner: ds, gvk: daemonSetKind, selector: ds.Spec.Selector, fresh: fresh})
	if err != nil {
		return err
	}
	hash := templateHash(&ds.Spec.Template, ds.Status.CollisionCount)
	owner := &historyOwner{obj: ds, gvk: daemonSetKind, selector: ds.Spec.Selector, template: &ds.Spec.Template, hash: hash,
		limit: ds.Spec.RevisionHistoryLimit,
		bumpCollisions: collisionBumper(c.client.AppsV1().DaemonSets(ns), name, ds.Status.CollisionCount,
			func(d *appsv1.DaemonSet) **int32 { return &d.Status.CollisionCount }), fresh: fresh}
	var oldRevisions []*appsv1.ControllerRevision
	if ds.DeletionTimestamp == nil {
		if _, oldRevisions, err = c.history.record(ctx, owner); err != nil {
			return err
		}
	}
	byNode := map[string][]*corev1.Pod{}
	for _, p := range pods {
		if podActive(p) {
			byNode[daemonPodNode(p)] = append(byNode[daemonPodNode(p)], p)
		}
	}
	now := time.Now()
	status := appsv1.DaemonSetStatus{ObservedGeneration: ds.Generation, CollisionCount: ds.Status.CollisionCount}
	var create []string
	var remove []*corev1.Pod
	var old []*corev1.Pod // of an old template, on nodes that keep a pod
	var wait time.Duration
	known := map[string]bool{}
	for _, node := range nodes {
		known[node.Name] = true
		run, stay := placement(ds, node)
		here := byNode[node.Name]
		sort.Slice(here, func(i, j int) bool { return here[i].CreationTimestamp.Before(&here[j].CreationTimestamp) })
		if run {
			status.DesiredNumberScheduled++
		}
		switch {
		case len(here) == 0 && run:
			create = append(create, node.Name)
		case len(here) > 0 && !stay:
			remove = append(remove, here...)
			status.NumberMisscheduled++
		case len(here) > 0:
			remove = append(remove, here[1:]...)
			p := here[0]
			if run {
				status.CurrentNumberScheduled++
			} else {
				status.NumberMisscheduled++
			}
			if podReady(p) {
				status.NumberReady++
			}
			ok, left := podAvailable(p, ds.Spec.MinReadySeconds, now)
			if ok {
				status.NumberAvailable++
			} else if left > 0 && (wait == 0 || left < wait) {
				wait = left
			}
			if p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == hash {
				status.UpdatedNumberScheduled++
			} else {
				old = append(old, p)
			}
		}
	}
	for n, here := range byNode {
		if !known[n] && n != "" {
			remove = append(remove, here...)
		}
	}
	status.NumberUnavailable = max(0, status.DesiredNumberScheduled-status.NumberAvailable)
	if ds.Spec.UpdateStrategy.Type != appsv1.OnDeleteDaemonSetStrategyType {
		remove = append(remove, c.rollingVictims(ds, status, old, now)...)
	}
	var manageErr error
	if satisfied && ds.DeletionTimestamp == nil {
		manageErr = c.manage(ctx, key, ds, hash, create, remove)
	}
	if !equality.Semantic.DeepEqual(ds.Status, status) {
		next := ds.DeepCopy()
		next.Status = status
		if _, err := c.client.AppsV1().DaemonSets(ns).UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil {
			return errors.Join(manageErr, fmt.Errorf("update status of daemonset %s: %w", key, err))
		}
	}
	if manageErr != nil {
		return manageErr
	}
	running := map[string]bool{}
	for _, p := range pods {
		running[p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey]] = true
	}
	if err := c.history.truncate(ctx, owner, oldRevisions, func(r *appsv1.ControllerRevision) bool {
		return running[r.Labels[appsv1.ControllerRevisionHashLabelKey]]
	}); err != nil {
		return err
	}
	if wait > 0 {
		return requeueAfter(wait)
	}
	return nil
}

// rollingVictims picks the pods of old templates to replace now: those
// not available first, then available ones while maxUnavailable allows.
func (c *daemonSetController) rollingVictims(ds *appsv1.DaemonSet, status appsv1.DaemonSetStatus, old []*corev1.Pod, now time.Time) []*corev1.Pod {
	maxU := intstr.FromInt32(1)
	if ru := ds.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.MaxUnavailable != nil {
		maxU = *ru.MaxUnavailable
	}
	allowed, err := intstr.GetScaledValueFromIntOrPercent(&maxU, int(status.DesiredNumberScheduled), true)
	if err != nil {
		allowed = 1
	}
	budget := allowed - int(status.NumberUnavailable)
	var out []*corev1.Pod
	for _, p := range old {
		if ok, _ := podAvailable(p, ds.Spec.MinReadySeconds, now); !ok {
			out = append(out, p)
		}
	}
	for _, p := range old {
		if ok, _ := podAvailable(p, ds.Spec.MinReadySeconds, now); ok && budget > 0 {
			out = append(out, p)
			budget--
		}
	}
	return out
}

func (c *daemonSetController) manage(ctx context.Context, key string, ds *appsv1.DaemonSet, hash string, create []string, remove []*corev1.Pod) error {
	c.expectations.expect(key, len(create), podKeys(remove))
	deleteErr := deletePods(ctx, c.client, c.expectations, key, remove, func(p *corev1.Pod) {
		c.recorder.Eventf(ds, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted pod: %s", p.Name)
	})
	createErr := c.createPods(ctx, c.client, c.expectations, key, ds, len(create), func(i int) *corev1.Pod {
		return daemonPod(ds, hash, create[i])
	})
	return errors.Join(deleteErr, createErr)
}
