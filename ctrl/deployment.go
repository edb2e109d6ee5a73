package ctrl

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"math"
	"sort"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// The annotations Kubernetes' deployment controller writes, which
// kubectl rollout history and undo read.
const (
	revisionAnnotation        = "deployment.kubernetes.io/revision"
	desiredReplicasAnnotation = "deployment.kubernetes.io/desired-replicas"
	maxReplicasAnnotation     = "deployment.kubernetes.io/max-replicas"
	lastAppliedAnnotation     = "kubectl.kubernetes.io/last-applied-configuration"
)

var deploymentKind = appsv1.SchemeGroupVersion.WithKind("Deployment")

// deploymentController rolls Deployments out through ReplicaSets, one
// per pod template (named by the template's hash), as Kubernetes' does:
// RollingUpdate within maxSurge and maxUnavailable, or Recreate; revision
// history for kubectl rollout; status with the Progressing and Available
// conditions.
type deploymentController struct {
	*controller
	client      kubernetes.Interface
	deployments appslisters.DeploymentLister
	replicaSets appslisters.ReplicaSetLister
	pods        corelisters.PodLister
}

// claimReplicaSets returns the Deployment's ReplicaSets, once it has
// adopted the orphans its selector matches and released those it no
// longer matches.
func (c *deploymentController) claimReplicaSets(ctx context.Context, d *appsv1.Deployment) ([]*appsv1.ReplicaSet, error) {
	all, err := c.replicaSets.ReplicaSets(d.Namespace).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	return claim(ctx, &claimer{owner: d, gvk: deploymentKind, selector: d.Spec.Selector,
		patch: strategicPatch(c.client.AppsV1().ReplicaSets(d.Namespace)),
		fresh: freshOwner(c.client.AppsV1().Deployments(d.Namespace), d.Name)}, all)
}

func newDeploymentController(cfg Config) *controller {
	c := &deploymentController{client: cfg.Client}
	c.controller = newController("deployment", cfg, c.sync)
	dInf := cfg.Informers.Apps().V1().Deployments()
	rsInf := cfg.Informers.Apps().V1().ReplicaSets()
	podInf := cfg.Informers.Core().V1().Pods()
	dInf.Informer().AddEventHandler(c.handler())
	rsInf.Informer().AddEventHandler(c.enqueueOwner(deploymentKind))
	rsInf.Informer().AddEventHandler(c.enqueueAdopters(func(ns string) map[string]labels.Selector {
		all, _ := c.deployments.Deployments(ns).List(labels.Everything())
		return selectors(all, func(d *appsv1.Deployment) *metav1.LabelSelector { return d.Spec.Selector })
	}))
	// Recreate waits for the old pods to be gone.
	podInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		ref := metav1.GetControllerOf(pod)
		if ref == nil || ref.Kind != replicaSetKind.Kind {
			return
		}
		if rs, err := c.replicaSets.ReplicaSets(pod.Namespace).Get(ref.Name); err == nil {
			if key, ok := ownerKey(rs, deploymentKind); ok {
				c.queue.Add(key)
			}
		}
	}})
	c.deployments, c.replicaSets, c.pods = dInf.Lister(), rsInf.Lister(), podInf.Lister()
	c.synced = append(c.synced, dInf.Informer().HasSynced, rsInf.Informer().HasSynced, podInf.Informer().HasSynced)
	return c.controller
}

// rollout is one sync of one Deployment: it and its ReplicaSets.
type rollout struct {
	c     *deploymentController
	d     *appsv1.Deployment
	newRS *appsv1.ReplicaSet
	old   []*appsv1.ReplicaSet // by creation, oldest first
	// progress is the Progressing condition this sync found reason to
	// set, if any.
	progress *appsv1.DeploymentCondition
}

func (c *deploymentController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	d, err := c.deployments.Deployments(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if d.DeletionTimestamp != nil {
		return nil
	}
	if d.Spec.Selector == nil || len(d.Spec.Selector.MatchLabels)+len(d.Spec.Selector.MatchExpressions) == 0 {
		c.recorder.Eventf(d, corev1.EventTypeWarning, "SelectingAll", "This deployment is selecting all pods. A non-empty selector is required.")
		return nil
	}
	r := &rollout{c: c, d: d.DeepCopy()}
	owned, err := c.claimReplicaSets(ctx, d)
	if err != nil {
		return err
	}
	for _, rs := range owned {
		// A copy: scaling writes the result back into it.
		r.old = append(r.old, rs.DeepCopy())
	}
	sort.Slice(r.old, func(i, j int) bool { return createdBefore(r.old[i], r.old[j]) })
	for i, rs := range r.old {
		if equalIgnoreHash(&rs.Spec.Template, &d.Spec.Template) {
			r.newRS = rs
			r.old = append(r.old[:i:i], r.old[i+1:]...)
			break
		}
	}

	if d.Spec.Paused || r.scalingEvent() {
		if err := r.syncNewReplicaSet(ctx, false); err != nil {
			return err
		}
		if err := r.scale(ctx); err != nil {
			return err
		}
		if d.Spec.Paused {
			if err := r.cleanup(ctx); err != nil {
				return err
			}
		}
		return r.syncStatus(ctx)
	}
	if d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
		return r.recreate(ctx)
	}
	return r.rolling(ctx)
}

// scalingEvent reports whether only spec.replicas has changed since the
// active ReplicaSets were last sized.
func (r *rollout) scalingEvent() bool {
	for _, rs := range r.all() {
		if ptr.Deref(rs.Spec.Replicas, 0) == 0 {
			continue
		}
		if v, ok := rs.Annotations[desiredReplicasAnnotation]; ok && v != strconv.Itoa(int(r.replicas())) {
			return true
		}
	}
	return false
}

func (r *rollout) replicas() int32 { return ptr.Deref(r.d.Spec.Replicas, 1) }

// all is the new ReplicaSet, if any, and the old ones.
func (r *rollout) all() []*appsv1.ReplicaSet {
	if r.newRS == nil {
		return r.old
	}
	return append([]*appsv1.ReplicaSet{r.newRS}, r.old...)
}

// rolling is one step of a RollingUpdate: scale the new ReplicaSet up
// within maxSurge, else the old ones down within maxUnavailable.
func (r *rollout) rolling(ctx context.Context) error {
	if err := r.syncNewReplicaSet(ctx, true); err != nil {
		return err
	}
	surge, unavailable := r.surgeAndUnavailable()
	want := r.replicas()
	if n := ptr.Deref(r.newRS.Spec.Replicas, 0); n != want {
		target := want
		if n < want {
			target = n + max(0, min(want+surge-podCount(r.all()), want-n))
		}
		if target != n {
			if err := r.scaleReplicaSet(ctx, r.newRS, target); err != nil {
				return err
			}
			return r.syncStatus(ctx)
		}
	}
	if scaled, err := r.scaleDownOld(ctx, want-unavailable); err != nil || scaled {
		if err != nil {
			return err
		}
		return r.syncStatus(ctx)
	}
	if r.complete() {
		if err := r.cleanup(ctx); err != nil {
			return err
		}
	}
	return r.syncStatus(ctx)
}

// scaleDownOld scales the old ReplicaSets down, oldest first, as far as
// keeps minAvailable pods available: first by the pods that are not
// available anyway, then by available ones.
func (r *rollout) scaleDownOld(ctx context.Context, minAvailable int32) (bool, error) {
	if sumReplicas(r.old) == 0 {
		return false, nil
	}
	newUnavailable := ptr.Deref(r.newRS.Spec.Replicas, 0) - r.newRS.Status.AvailableReplicas
	budget := sumReplicas(r.all()) - minAvailable - newUnavailable
	if budget <= 0 {
		return false, nil
	}
	scaled := false
	for _, rs := range r.old {
		n := ptr.Deref(rs.Spec.Replicas, 0)
		unhealthy := min(n-available(rs), budget)
		if unhealthy <= 0 {
			continue
		}
		if err := r.scaleReplicaSet(ctx, rs, n-unhealthy); err != nil {
			return scaled, err
		}
		budget -= unhealthy
		scaled = true
	}
	availableNow := int32(0)
	for _, rs := range r.all() {
		availableNow += available(rs)
	}
	down := availableNow - minAvailable
	for _, rs := range r.old {
		if down <= 0 {
			break
		}
		n := ptr.Deref(rs.Spec.Replicas, 0)
		if n == 0 {
			continue
		}
		by := min(n, down)
		if err := r.scaleReplicaSet(ctx, rs, n-by); err != nil {
			return scaled, err
		}
		down -= by
		scaled = true
	}
	return scaled, nil
}

// available is how many of a ReplicaSet's pods can be counted on: its
// status, but never more than its spec, which a ReplicaSet that has just
// been scaled down is about to reach.
func available(rs *appsv1.ReplicaSet) int32 {
	return min(rs.Status.AvailableReplicas, ptr.Deref(rs.Spec.Replicas, 0))
}

// recreate scales every old ReplicaSet to zero, waits until their pods
// are gone, then scales up the new one.
func (r *rollout) recreate(ctx context.Context) error {
	if err := r.syncNewReplicaSet(ctx, false); err != nil {
		return err
	}
	scaled := false
	for _, rs := range r.old {
		if ptr.Deref(rs.Spec.Replicas, 0) != 0 {
			if err := r.scaleReplicaSet(ctx, rs, 0); err != nil {
				return err
			}
			scaled = true
		}
	}
	if scaled {
		return r.syncStatus(ctx)
	}
	for _, rs := range r.old {
		pods, err := ownedPods(r.c.pods, rs, rs.Spec.Selector)
		if err != nil {
			return err
		}
		for _, p := range pods {
			if p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
				return r.syncStatus(ctx)
			}
		}
	}
	if r.newRS == nil {
		if err := r.syncNewReplicaSet(ctx, true); err != nil {
			return err
		}
	}
	if ptr.Deref(r.newRS.Spec.Replicas, 0) != r.replicas() {
		if err := r.scaleReplicaSet(ctx, r.newRS, r.replicas()); err != nil {
			return err
		}
	}
	if r.complete() {
		if err := r.cleanup(ctx); err != nil {
			return err
		}
	}
	return r.syncStatus(ctx)
}

// scale sizes the ReplicaSets to spec.replicas after a scaling event or
// while paused, as Kubernetes does: the only active ReplicaSet (or the
// newest, when none is) takes all; a saturated new one leaves the old at
// zero; in mid-rollout the change is shared out proportionally
// (scaleProportionally).
func (r *rollout) scale(ctx context.Context) error {
	var active []*appsv1.ReplicaSet
	for _, rs := range r.all() {
		if ptr.Deref(rs.Spec.Replicas, 0) > 0 {
			active = append(active, rs)
		}
	}
	switch {
	case len(active) == 1:
		return r.scaleReplicaSet(ctx, active[0], r.replicas())
	case len(active) == 0:
		if newest := r.newest(); newest != nil {
			return r.scaleReplicaSet(ctx, newest, r.replicas())
		}
		return nil
	case r.saturated():
		for _, rs := range r.old {
			if err := r.scaleReplicaSet(ctx, rs, 0); err != nil {
				return err
			}
		}
		return nil
	case r.d.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType:
		// Only the annotations: recreate resizes them.
		for _, rs := range active {
			if err := r.scaleReplicaSet(ctx, rs, ptr.Deref(rs.Spec.Replicas, 0)); err != nil {
				return err
			}
		}
		return nil
	}
	return r.scaleProportionally(ctx, active)
}

// newest is the new ReplicaSet, else the most recently created old one.
func (r *rollout) newest() *appsv1.ReplicaSet {
	if r.newRS != nil || len(r.old) == 0 {
		return r.newRS
	}
	return r.old[len(r.old)-1]
}

// saturated says the new ReplicaSet runs every replica, available.
func (r *rollout) saturated() bool {
	rs := r.newRS
	return rs != nil && ptr.Deref(rs.Spec.Replicas, 0) == r.replicas() &&
		rs.Annotations[desiredReplicasAnnotation] == strconv.Itoa(int(r.replicas())) && rs.Status.AvailableReplicas == r.replicas()
}

// scaleProportionally shares a scaling event in mid-rollout out among the
// active ReplicaSets in proportion to their sizes, as Kubernetes'
// proportional scaling does, so that a Deployment scaled (by hand or by
// an autoscaler) while it rolls keeps the mix of old and new pods it had
// rather than putting the whole change on one template: each grows or
// shrinks by its share of the change in the Deployment's maximum size
// (replicas plus maxSurge), the largest first, which also takes what
// rounding leaves over.
func (r *rollout) scaleProportionally(ctx context.Context, active []*appsv1.ReplicaSet) error {
	surge, _ := r.surgeAndUnavailable()
	var allowed int32
	if r.replicas() > 0 {
		allowed = r.replicas() + surge
	}
	toAdd := allowed - sumReplicas(active)
	// Largest first; among equals, the newest first when growing and the
	// oldest first when shrinking.
	sort.Slice(active, func(i, j int) bool {
		a, b := active[i], active[j]
		if na, nb := ptr.Deref(a.Spec.Replicas, 0), ptr.Deref(b.Spec.Replicas, 0); na != nb {
			return na > nb
		}
		if toAdd > 0 {
			return createdBefore(b, a)
		}
		return createdBefore(a, b)
	})
	sizes := make([]int32, len(active))
	var added int32
	for i, rs := range active {
		share := r.share(rs, allowed, toAdd, added)
		sizes[i] = ptr.Deref(rs.Spec.Replicas, 0) + share
		added += share
	}
	if len(active) > 0 {
		sizes[0] = max(0, sizes[0]+toAdd-added)
	}
	for i, rs := range active {
		if err := r.scaleReplicaSet(ctx, rs, sizes[i]); err != nil {
			return err
		}
	}
	return nil
}

// share is a ReplicaSet's part of toAdd replicas (negative to remove),
// of which added are already given out: its size scaled from the
// Deployment's maximum size it was last sized for (its max-replicas
// annotation) to allowed, never beyond what is left to give.
func (r *rollout) share(rs *appsv1.ReplicaSet, allowed, toAdd, added int32) int32 {
	size := ptr.Deref(rs.Spec.Replicas, 0)
	if size == 0 || toAdd == 0 || toAdd == added {
		return 0
	}
	var fraction int32
	if r.replicas() == 0 {
		fraction = -size
	} else {
		before, err := strconv.Atoi(rs.Annotations[maxReplicasAnnotation])
		if err != nil || before == 0 {
			// Sized by hand: the Deployment's pods stand in.
			before = int(r.d.Status.Replicas)
		}
		if before == 0 {
			return 0
		}
		fraction = int32(math.Round(float64(size)*float64(allowed)/float64(before))) - size
	}
	left := toAdd - added
	if toAdd > 0 {
		return min(fraction, left)
	}
	return max(fraction, left)
}

// createdBefore orders ReplicaSets by creation, then by name.
func createdBefore(a, b *appsv1.ReplicaSet) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

func sumReplicas(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		n += ptr.Deref(rs.Spec.Replicas, 0)
	}
	return n
}

// podCount is how many pods the ReplicaSets may have at most right now:
// a ReplicaSet just scaled down still has the pods its status counts
// until its controller has deleted them, so maxSurge is kept even when
// that controller lags (as after a failover).
func podCount(rss []*appsv1.ReplicaSet) int32 {
	var n int32
	for _, rs := range rss {
		n += max(ptr.Deref(rs.Spec.Replicas, 0), rs.Status.Replicas)
	}
	return n
}

// surgeAndUnavailable resolves maxSurge and maxUnavailable against
// spec.replicas (surge rounding up, unavailable down) and never lets
// both be zero.
func (r *rollout) surgeAndUnavailable() (int32, int32) {
	want := int(r.replicas())
	ru := r.d.Spec.Strategy.RollingUpdate
	pct25 := intstr.FromString("25%")
	surgeV, unavailV := &pct25, &pct25
	if ru != nil {
		if ru.MaxSurge != nil {
			surgeV = ru.MaxSurge
		}
		if ru.MaxUnavailable != nil {
			unavailV = ru.MaxUnavailable
		}
	}
	surge, err := intstr.GetScaledValueFromIntOrPercent(surgeV, want, true)
	if err != nil {
		surge = 0
	}
	unavail, err := intstr.GetScaledValueFromIntOrPercent(unavailV, want, false)
	if err != nil {
		unavail = 0
	}
	if surge == 0 && unavail == 0 {
		unavail = 1
	}
	return int32(surge), int32(min(unavail, want))
}

// syncNewReplicaSet brings the new ReplicaSet's revision up to date, or
// creates it when create is set and there is none.
func (r *rollout) syncNewReplicaSet(ctx context.Context, create bool) error {
	maxOld := 0
	for _, rs := range r.old {
		maxOld = max(maxOld, revision(rs))
	}
	rev := strconv.Itoa(maxOld + 1)
	if r.newRS != nil {
		rs := r.newRS.DeepCopy()
		if rs.Annotations == nil {
			rs.Annotations = map[string]string{}
		}
		// The Deployment's annotations follow onto its new ReplicaSet as
		// they change (none is taken away), as kube-controller-manager
		// does: `rollout undo` puts them back from there.
		copied := copyDeploymentAnnotations(r.d, rs.Annotations)
		if copied || revision(r.newRS) < maxOld+1 || r.newRS.Spec.MinReadySeconds != r.d.Spec.MinReadySeconds {
			if revision(rs) < maxOld+1 {
				rs.Annotations[revisionAnnotation] = rev
			}
			rs.Spec.MinReadySeconds = r.d.Spec.MinReadySeconds
			updated, err := r.c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, rs, metav1.UpdateOptions{})
			if err != nil {
				return fmt.Errorf("update the revision of %s: %w", rs.Name, err)
			}
			r.newRS = updated
		}
		if findCondition(r.d.Status.Conditions, appsv1.DeploymentProgressing) == nil {
			r.progress = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
				Reason: "FoundNewReplicaSet", Message: fmt.Sprintf("Found new replica set %q", r.newRS.Name)}
		}
		return r.setRevision(ctx, r.newRS.Annotations[revisionAnnotation])
	}
	if !create {
		return nil
	}
	hash := templateHash(&r.d.Spec.Template, r.d.Status.CollisionCount)
	tmpl := r.d.Spec.Template.DeepCopy()
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	sel := r.d.Spec.Selector.DeepCopy()
	if sel.MatchLabels == nil {
		sel.MatchLabels = map[string]string{}
	}
	sel.MatchLabels[appsv1.DefaultDeploymentUniqueLabelKey] = hash
	var initial int32
	if r.d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		surge, _ := r.surgeAndUnavailable()
		initial = max(0, min(r.replicas()+surge-podCount(r.old), r.replicas()))
	} else {
		initial = r.replicas()
	}
	rs := &appsv1.ReplicaSet{
		ObjectMeta: metav1.ObjectMeta{
			Name: r.d.Name + "-" + hash, Namespace: r.d.Namespace, Labels: tmpl.Labels,
			Annotations:     r.replicaSetAnnotations(rev),
			OwnerReferences: []metav1.OwnerReference{controllerRef(r.d, deploymentKind)},
		},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(initial), MinReadySeconds: r.d.Spec.MinReadySeconds, Selector: sel, Template: *tmpl},
	}
	created, err := r.c.client.AppsV1().ReplicaSets(rs.Namespace).Create(ctx, rs, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		existing, getErr := r.c.client.AppsV1().ReplicaSets(rs.Namespace).Get(ctx, rs.Name, metav1.GetOptions{})
		if getErr == nil && ownedBy(existing, r.d) && equalIgnoreHash(&existing.Spec.Template, &r.d.Spec.Template) {
			r.newRS = existing
			return nil
		}
		// Another template has this hash: count the collision so the
		// next sync hashes differently.
		d := r.d.DeepCopy()
		d.Status.CollisionCount = ptr.To(ptr.Deref(d.Status.CollisionCount, 0) + 1)
		if _, err := r.c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("count a hash collision of %s: %w", d.Name, err)
		}
		return fmt.Errorf("replica set %s exists with another template", rs.Name)
	}
	if err != nil {
		r.c.recorder.Eventf(r.d, corev1.EventTypeWarning, "FailedCreate", "Failed to create new replica set %q: %v", rs.Name, err)
		return fmt.Errorf("create replica set %s: %w", rs.Name, err)
	}
	if initial > 0 {
		r.c.recorder.Eventf(r.d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled up replica set %s from 0 to %d", created.Name, initial)
	}
	r.newRS = created
	r.progress = &appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
		Reason: "NewReplicaSetCreated", Message: fmt.Sprintf("Created new replica set %q", created.Name)}
	return r.setRevision(ctx, rev)
}

// replicaSetAnnotations are the Deployment's annotations a new
// ReplicaSet carries (kubectl rollout history shows change-cause from
// them) and the controller's own.
func (r *rollout) replicaSetAnnotations(rev string) map[string]string {
	out := map[string]string{}
	copyDeploymentAnnotations(r.d, out)
	surge, _ := r.surgeAndUnavailable()
	out[revisionAnnotation] = rev
	out[desiredReplicasAnnotation] = strconv.Itoa(int(r.replicas()))
	out[maxReplicasAnnotation] = strconv.Itoa(int(r.replicas() + surge))
	return out
}

// copyDeploymentAnnotations copies the Deployment's annotations into to,
// but the controller's own and kubectl's last-applied configuration, and
// reports whether any changed.
func copyDeploymentAnnotations(d *appsv1.Deployment, to map[string]string) bool {
	changed := false
	for k, v := range d.Annotations {
		if k == lastAppliedAnnotation || k == revisionAnnotation || k == desiredReplicasAnnotation || k == maxReplicasAnnotation || to[k] == v {
			continue
		}
		to[k] = v
		changed = true
	}
	return changed
}

// setRevision writes the new ReplicaSet's revision on the Deployment.
func (r *rollout) setRevision(ctx context.Context, rev string) error {
	if r.d.Annotations[revisionAnnotation] == rev {
		return nil
	}
	d := r.d.DeepCopy()
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[revisionAnnotation] = rev
	updated, err := r.c.client.AppsV1().Deployments(d.Namespace).Update(ctx, d, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("set the revision of %s: %w", d.Name, err)
	}
	r.d = updated
	return nil
}

func revision(rs *appsv1.ReplicaSet) int {
	n, _ := strconv.Atoi(rs.Annotations[revisionAnnotation])
	return n
}

// scaleReplicaSet sets a ReplicaSet's replicas and the annotations that
// record the Deployment's size it was scaled for.
func (r *rollout) scaleReplicaSet(ctx context.Context, rs *appsv1.ReplicaSet, n int32) error {
	surge, _ := r.surgeAndUnavailable()
	desired, maxR := strconv.Itoa(int(r.replicas())), strconv.Itoa(int(r.replicas()+surge))
	from := ptr.Deref(rs.Spec.Replicas, 0)
	if from == n && rs.Annotations[desiredReplicasAnnotation] == desired && rs.Annotations[maxReplicasAnnotation] == maxR {
		return nil
	}
	next := rs.DeepCopy()
	next.Spec.Replicas = ptr.To(n)
	if next.Annotations == nil {
		next.Annotations = map[string]string{}
	}
	next.Annotations[desiredReplicasAnnotation], next.Annotations[maxReplicasAnnotation] = desired, maxR
	updated, err := r.c.client.AppsV1().ReplicaSets(rs.Namespace).Update(ctx, next, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("scale replica set %s to %d: %w", rs.Name, n, err)
	}
	*rs = *updated
	if from != n {
		dir := "up"
		if n < from {
			dir = "down"
		}
		r.c.recorder.Eventf(r.d, corev1.EventTypeNormal, "ScalingReplicaSet", "Scaled %s replica set %s from %d to %d", dir, rs.Name, from, n)
	}
	return nil
}

// cleanup deletes the oldest empty old ReplicaSets beyond
// revisionHistoryLimit.
func (r *rollout) cleanup(ctx context.Context) error {
	limit := int(ptr.Deref(r.d.Spec.RevisionHistoryLimit, 10))
	var empty []*appsv1.ReplicaSet
	for _, rs := range r.old {
		if ptr.Deref(rs.Spec.Replicas, 0) == 0 && rs.Status.Replicas == 0 && rs.DeletionTimestamp == nil {
			empty = append(empty, rs)
		}
	}
	if len(empty) <= limit {
		return nil
	}
	sort.Slice(empty, func(i, j int) bool { return revision(empty[i]) < revision(empty[j]) })
	for _, rs := range empty[:len(empty)-limit] {
		uid := rs.UID
		err := r.c.client.AppsV1().ReplicaSets(rs.Namespace).Delete(ctx, rs.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete old replica set %s: %w", rs.Name, err)
		}
	}
	return nil
}

// complete is Kubernetes' DeploymentComplete: every replica is updated
// and available and no old one is left.
func (r *rollout) complete() bool {
	if r.newRS == nil {
		return false
	}
	s := r.status()
	want := r.replicas()
	return s.UpdatedReplicas == want && s.Replicas == want && s.AvailableReplicas == want
}

func (r *rollout) status() appsv1.DeploymentStatus {
	s := appsv1.DeploymentStatus{ObservedGeneration: r.d.Generation, CollisionCount: r.d.Status.CollisionCount,
		Conditions: append([]appsv1.DeploymentCondition(nil), r.d.Status.Conditions...)}
	for _, rs := range r.all() {
		s.Replicas += rs.Status.Replicas
		s.ReadyReplicas += rs.Status.ReadyReplicas
		s.AvailableReplicas += rs.Status.AvailableReplicas
	}
	if r.newRS != nil {
		s.UpdatedReplicas = r.newRS.Status.Replicas
	}
	s.UnavailableReplicas = max(0, sumReplicas(r.all())-s.AvailableReplicas)
	if s.Replicas < r.replicas() {
		s.UnavailableReplicas = max(s.UnavailableReplicas, r.replicas()-s.AvailableReplicas)
	}
	return s
}

// syncStatus writes the Deployment's status and its conditions, as
// Kubernetes' syncRolloutStatus does: Available by minimum availability;
// Progressing on every step forward, True when the rollout completes,
// False once it has made no progress for progressDeadlineSeconds.
func (r *rollout) syncStatus(ctx context.Context) error {
	s := r.status()
	now := metav1.Now()
	_, unavailable := r.surgeAndUnavailable()
	if s.AvailableReplicas >= r.replicas()-unavailable {
		setCondition(&s, appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionTrue,
			Reason: "MinimumReplicasAvailable", Message: "Deployment has minimum availability."}, now)
	} else {
		setCondition(&s, appsv1.DeploymentCondition{Type: appsv1.DeploymentAvailable, Status: corev1.ConditionFalse,
			Reason: "MinimumReplicasUnavailable", Message: "Deployment does not have minimum availability."}, now)
	}
	if r.progress != nil {
		setCondition(&s, *r.progress, now)
	}
	cur := findCondition(s.Conditions, appsv1.DeploymentProgressing)
	paused := r.d.Spec.Paused
	switch {
	case paused && (cur == nil || cur.Reason != "DeploymentPaused"):
		setCondition(&s, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionUnknown,
			Reason: "DeploymentPaused", Message: "Deployment is paused"}, now)
	case !paused && cur != nil && cur.Reason == "DeploymentPaused":
		setCondition(&s, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionUnknown,
			Reason: "DeploymentResumed", Message: "Deployment is resumed"}, now)
	}
	var requeue time.Duration
	cur = findCondition(s.Conditions, appsv1.DeploymentProgressing)
	done := s.Replicas == s.UpdatedReplicas && cur != nil && cur.Reason == "NewReplicaSetAvailable"
	if deadline := r.d.Spec.ProgressDeadlineSeconds; !paused && r.newRS != nil && deadline != nil && !done {
		limit := time.Duration(*deadline) * time.Second
		switch {
		case r.complete():
			setCondition(&s, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
				Reason: "NewReplicaSetAvailable", Message: fmt.Sprintf("ReplicaSet %q has successfully progressed.", r.newRS.Name)}, now)
		case progressed(r.d.Status, s):
			c := appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionTrue,
				Reason: "ReplicaSetUpdated", Message: fmt.Sprintf("ReplicaSet %q is progressing.", r.newRS.Name),
				LastUpdateTime: now, LastTransitionTime: now}
			if cur != nil && cur.Status == corev1.ConditionTrue {
				c.LastTransitionTime = cur.LastTransitionTime
			}
			if cur != nil {
				*cur = c
			} else {
				s.Conditions = append(s.Conditions, c)
			}
		case cur != nil && cur.Reason != "ProgressDeadlineExceeded" && now.Sub(cur.LastUpdateTime.Time) > limit:
			setCondition(&s, appsv1.DeploymentCondition{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse,
				Reason: "ProgressDeadlineExceeded", Message: fmt.Sprintf("ReplicaSet %q has timed out progressing.", r.newRS.Name)}, now)
			r.c.recorder.Eventf(r.d, corev1.EventTypeWarning, "ProgressDeadlineExceeded", "ReplicaSet %q has timed out progressing.", r.newRS.Name)
		case cur != nil && cur.Reason != "ProgressDeadlineExceeded":
			requeue = limit - now.Sub(cur.LastUpdateTime.Time) + time.Second
		}
	}
	if !equality.Semantic.DeepEqual(s, r.d.Status) {
		d := r.d.DeepCopy()
		d.Status = s
		if _, err := r.c.client.AppsV1().Deployments(d.Namespace).UpdateStatus(ctx, d, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("update status of %s: %w", d.Name, err)
		}
	}
	if requeue > 0 {
		return requeueAfter(requeue)
	}
	return nil
}

// progressed reports whether the rollout moved forward between two
// statuses: more updated, ready or available replicas, or fewer old ones.
func progressed(old, cur appsv1.DeploymentStatus) bool {
	return cur.UpdatedReplicas > old.UpdatedReplicas || cur.Replicas-cur.UpdatedReplicas < old.Replicas-old.UpdatedReplicas ||
		cur.ReadyReplicas > old.ReadyReplicas || cur.AvailableReplicas > old.AvailableReplicas
}

func findCondition(cs []appsv1.DeploymentCondition, t appsv1.DeploymentConditionType) *appsv1.DeploymentCondition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

// setCondition sets a condition unless one with the same status and
// reason is there, keeping its transition time when the status stays.
func setCondition(s *appsv1.DeploymentStatus, c appsv1.DeploymentCondition, now metav1.Time) {
	c.LastUpdateTime, c.LastTransitionTime = now, now
	if cur := findCondition(s.Conditions, c.Type); cur != nil {
		if cur.Status == c.Status && cur.Reason == c.Reason {
			return
		}
		if cur.Status == c.Status {
			c.LastTransitionTime = cur.LastTransitionTime
		}
		*cur = c
		return
	}
	s.Conditions = append(s.Conditions, c)
}

// templateHash names a pod template: the same on every leader, changed
// by the collision count.
func templateHash(t *corev1.PodTemplateSpec, collisions *int32) string {
	h := fnv.New32a()
	b, _ := json.Marshal(t) // a PodTemplateSpec always encodes
	h.Write(b)
	if collisions != nil {
		var buf [4]byte
		binary.LittleEndian.PutUint32(buf[:], uint32(*collisions))
		h.Write(buf[:])
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// equalIgnoreHash compares two templates without the pod-template-hash
// label.
func equalIgnoreHash(a, b *corev1.PodTemplateSpec) bool {
	a, b = a.DeepCopy(), b.DeepCopy()
	delete(a.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	delete(b.Labels, appsv1.DefaultDeploymentUniqueLabelKey)
	if len(a.Labels) == 0 {
		a.Labels = nil
	}
	if len(b.Labels) == 0 {
		b.Labels = nil
	}
	return equality.Semantic.DeepEqual(a, b)
}
