package ctrl

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

var statefulSetKind = appsv1.SchemeGroupVersion.WithKind("StatefulSet")

// statefulSetController runs the pods of StatefulSets as Kubernetes'
// does: stable names <set>-<ordinal> with the pod-name and pod-index
// labels, hostname and subdomain; OrderedReady creates them one at a
// time in order, each once the one before is Running and Ready, and
// removes them in reverse order; Parallel does both at once; RollingUpdate
// replaces pods of an old revision from the highest ordinal down to the
// partition, one at a time, while pods below the partition keep (and
// are recreated from) the current revision's template. Its templates are
// kept as ControllerRevisions (history.go), which `kubectl rollout
// history` and `undo` read. A pod's fixed name means it can never be
// created twice, whichever leader tries.
type statefulSetController struct {
	*controller
	client  kubernetes.Interface
	sets    appslisters.StatefulSetLister
	pods    corelisters.PodLister
	history *history
}

func newStatefulSetController(cfg Config) *controller {
	c := &statefulSetController{client: cfg.Client}
	c.controller = newController("statefulset", cfg, c.sync)
	stsInf, podInf := cfg.Informers.Apps().V1().StatefulSets(), cfg.Informers.Core().V1().Pods()
	revInf := cfg.Informers.Apps().V1().ControllerRevisions()
	stsInf.Informer().AddEventHandler(c.handler())
	revInf.Informer().AddEventHandler(c.enqueueOwner(statefulSetKind))
	podInf.Informer().AddEventHandler(c.enqueueOwner(statefulSetKind))
	podInf.Informer().AddEventHandler(c.enqueueAdopters(func(ns string) map[string]labels.Selector {
		all, _ := c.sets.StatefulSets(ns).List(labels.Everything())
		return selectors(all, func(sts *appsv1.StatefulSet) *metav1.LabelSelector { return sts.Spec.Selector })
	}))
	c.sets, c.pods = stsInf.Lister(), podInf.Lister()
	c.history = &history{client: cfg.Client, revisions: revInf.Lister()}
	c.synced = append(c.synced, stsInf.Informer().HasSynced, podInf.Informer().HasSynced, revInf.Informer().HasSynced)
	return c.controller
}

// ordinalOf is the ordinal in a StatefulSet pod's name.
func ordinalOf(sts *appsv1.StatefulSet, pod *corev1.Pod) (int, bool) {
	rest, ok := strings.CutPrefix(pod.Name, sts.Name+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && n >= 0
}

func (c *statefulSetController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	sts, err := c.sets.StatefulSets(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	fresh := freshOwner(c.client.AppsV1().StatefulSets(ns), name)
	// A pod is adopted only under one of the set's own names.
	owned, err := claimPods(ctx, c.client, c.pods, &claimer{owner: sts, gvk: statefulSetKind, selector: sts.Spec.Selector,
		adoptable: func(o metav1.Object) bool {
			_, ok := ordinalOf(sts, o.(*corev1.Pod))
			return ok
		},
		fresh: fresh})
	if err != nil {
		return err
	}
	pods := map[int]*corev1.Pod{}
	for _, p := range owned {
		if ord, ok := ordinalOf(sts, p); ok {
			pods[ord] = p
		}
	}
	if sts.DeletionTimestamp != nil {
		return c.writeStatus(ctx, sts, pods, sts.Status.CurrentRevision, sts.Status.UpdateRevision)
	}
	owner := &historyOwner{obj: sts, gvk: statefulSetKind, selector: sts.Spec.Selector, template: &sts.Spec.Template,
		hash: templateHash(&sts.Spec.Template, sts.Status.CollisionCount), limit: sts.Spec.RevisionHistoryLimit,
		bumpCollisions: collisionBumper(c.client.AppsV1().StatefulSets(ns), name, sts.Status.CollisionCount,
			func(s *appsv1.StatefulSet) **int32 { return &s.Status.CollisionCount }), fresh: fresh}
	updateRev, others, err := c.history.record(ctx, owner)
	if err != nil {
		return err
	}
	// The current revision is the one every replica ran last; pods below
	// a partition are made from it, its template read from the revision
	// only when one is made.
	current := &setRevision{name: updateRev.Name, template: &sts.Spec.Template}
	for _, r := range others {
		if r.Name == sts.Status.CurrentRevision {
			current = &setRevision{name: r.Name, from: r}
		}
	}
	stepErr := c.step(ctx, sts, pods, current, updateRev.Name)
	statusErr := c.writeStatus(ctx, sts, pods, current.name, updateRev.Name)
	running := map[string]bool{current.name: true}
	for _, p := range pods {
		running[p.Labels[appsv1.ControllerRevisionHashLabelKey]] = true
	}
	truncateErr := c.history.truncate(ctx, owner, others, func(r *appsv1.ControllerRevision) bool { return running[r.Name] })
	return errors.Join(stepErr, statusErr, truncateErr)
}

// step takes the next step towards the StatefulSet's spec: in order,
// create what is missing, replace what failed, remove ordinals beyond
// the replicas, roll pods of an old revision.
func (c *statefulSetController) step(ctx context.Context, sts *appsv1.StatefulSet, pods map[int]*corev1.Pod, current *setRevision, update string) error {
	start := 0
	if sts.Spec.Ordinals != nil {
		start = int(sts.Spec.Ordinals.Start)
	}
	end := start + int(ptr.Deref(sts.Spec.Replicas, 1))
	parallel := sts.Spec.PodManagementPolicy == appsv1.ParallelPodManagement
	partition := 0
	if ru := sts.Spec.UpdateStrategy.RollingUpdate; ru != nil && ru.Partition != nil {
		partition = int(*ru.Partition)
	}
	for ord := start; ord < end; ord++ {
		p := pods[ord]
		switch {
		case p == nil:
			rev, template := update, &sts.Spec.Template
			if ord < start+partition {
				t, err := current.podTemplate(sts)
				if err != nil {
					return err
				}
				rev, template = current.name, t
			}
			if err := c.create(ctx, sts, ord, rev, template); err != nil || !parallel {
				return err
			}
		case p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded:
			if err := c.delete(ctx, sts, p); err != nil || !parallel {
				return err
			}
		case !parallel && (p.DeletionTimestamp != nil || p.Status.Phase != corev1.PodRunning || !podReady(p)):
			// OrderedReady: the next ordinal waits for this one.
			return nil
		}
	}
	var condemned []int
	for ord := range pods {
		if ord < start || ord >= end {
			condemned = append(condemned, ord)
		}
	}
	sort.Sort(sort.Reverse(sort.IntSlice(condemned)))
	for _, ord := range condemned {
		p := pods[ord]
		if p.DeletionTimestamp != nil {
			if !parallel {
				return nil
			}
			continue
		}
		if err := c.delete(ctx, sts, p); err != nil || !parallel {
			return err
		}
	}
	if len(condemned) > 0 || sts.Spec.UpdateStrategy.Type == appsv1.OnDeleteStatefulSetStrategyType {
		return nil
	}
	// RollingUpdate: one pod at a time, highest ordinal first, once every
	// pod is Running and Ready.
	for ord := start; ord < end; ord++ {
		if p := pods[ord]; p == nil || p.DeletionTimestamp != nil || !podReady(p) {
			return nil
		}
	}
	for ord := end - 1; ord >= start+partition; ord-- {
		if p := pods[ord]; p.Labels[appsv1.ControllerRevisionHashLabelKey] != update {
			return c.delete(ctx, sts, p)
		}
	}
	return nil
}

// setRevision is a StatefulSet's revision by name, with its pod template
// or the ControllerRevision to read it from.
type setRevision struct {
	name     string
	template *corev1.PodTemplateSpec
	from     *appsv1.ControllerRevision
}

// podTemplate is the revision's template, read once.
func (r *setRevision) podTemplate(sts *appsv1.StatefulSet) (*corev1.PodTemplateSpec, error) {
	if r.template == nil {
		t, err := revisionTemplate(sts, r.from)
		if err != nil {
			return nil, err
		}
		r.template = t
	}
	return r.template, nil
}

// claimVolumes gives the pod a volume for each of the StatefulSet's claim
// templates, bound to the claim <template>-<set>-<ordinal>, in place of a
// template volume of the same name, as Kubernetes' StatefulSet controller
// does. (The claims themselves are not made yet: the scheduler keeps such
// pods Pending until claims are served.)
func claimVolumes(pod *corev1.Pod, sts *appsv1.StatefulSet, ord int) {
	for _, t := range sts.Spec.VolumeClaimTemplates {
		v := corev1.Volume{Name: t.Name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{
			ClaimName: fmt.Sprintf("%s-%s-%d", t.Name, sts.Name, ord)}}}
		i := slices.IndexFunc(pod.Spec.Volumes, func(x corev1.Volume) bool { return x.Name == t.Name })
		if i >= 0 {
			pod.Spec.Volumes[i] = v
		} else {
			pod.Spec.Volumes = append(pod.Spec.Volumes, v)
		}
	}
}

func (c *statefulSetController) create(ctx context.Context, sts *appsv1.StatefulSet, ord int, rev string, template *corev1.PodTemplateSpec) error {
	pod := podFromTemplate(template, sts, statefulSetKind)
	pod.GenerateName = ""
	pod.Name = fmt.Sprintf("%s-%d", sts.Name, ord)
	pod.Labels = withEntry(pod.Labels, appsv1.StatefulSetPodNameLabel, pod.Name)
	pod.Labels[appsv1.PodIndexLabel] = strconv.Itoa(ord)
	pod.Labels[appsv1.ControllerRevisionHashLabelKey] = rev
	pod.Spec.Hostname, pod.Spec.Subdomain = pod.Name, sts.Spec.ServiceName
	claimVolumes(pod, sts, ord)
	_, err := c.client.CoreV1().Pods(sts.Namespace).Create(ctx, pod, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		// The informer has not shown it yet, or an old one is going.
		return nil
	}
	if err != nil {
		c.recorder.Eventf(sts, corev1.EventTypeWarning, "FailedCreate", "create Pod %s in StatefulSet %s failed error: %v", pod.Name, sts.Name, err)
		return fmt.Errorf("create pod %s: %w", pod.Name, err)
	}
	c.recorder.Eventf(sts, corev1.EventTypeNormal, "SuccessfulCreate", "create Pod %s in StatefulSet %s successful", pod.Name, sts.Name)
	return nil
}

func (c *statefulSetController) delete(ctx context.Context, sts *appsv1.StatefulSet, p *corev1.Pod) error {
	if err := deletePod(ctx, c.client, p); err != nil {
		c.recorder.Eventf(sts, corev1.EventTypeWarning, "FailedDelete", "delete Pod %s in StatefulSet %s failed error: %v", p.Name, sts.Name, err)
		return err
	}
	c.recorder.Eventf(sts, corev1.EventTypeNormal, "SuccessfulDelete", "delete Pod %s in StatefulSet %s successful", p.Name, sts.Name)
	return nil
}

func (c *statefulSetController) writeStatus(ctx context.Context, sts *appsv1.StatefulSet, pods map[int]*corev1.Pod, current, update string) error {
	s := appsv1.StatefulSetStatus{ObservedGeneration: sts.Generation, CollisionCount: sts.Status.CollisionCount,
		CurrentRevision: current, UpdateRevision: update, Conditions: sts.Status.Conditions}
	now := time.Now()
	for _, p := range pods {
		if !podActive(p) {
			continue
		}
		s.Replicas++
		if podReady(p) {
			s.ReadyReplicas++
		}
		if ok, _ := podAvailable(p, sts.Spec.MinReadySeconds, now); ok {
			s.AvailableReplicas++
		}
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] == update {
			s.UpdatedReplicas++
		}
		if p.Labels[appsv1.ControllerRevisionHashLabelKey] == current {
			s.CurrentReplicas++
		}
	}
	// Once every replica runs the update revision, it is the current one.
	if want := ptr.Deref(sts.Spec.Replicas, 1); s.UpdatedReplicas == want && s.ReadyReplicas == want && s.Replicas == want {
		s.CurrentRevision, s.CurrentReplicas = update, s.UpdatedReplicas
	}
	if equality.Semantic.DeepEqual(sts.Status, s) {
		return nil
	}
	next := sts.DeepCopy()
	next.Status = s
	if _, err := c.client.AppsV1().StatefulSets(sts.Namespace).UpdateStatus(ctx, next, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update status of statefulset %s: %w", sts.Name, err)
	}
	return nil
}
