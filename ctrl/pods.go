package ctrl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// What the workload controllers share: pod states, owner references,
// making pods from templates, and expectations.

// podReady reports the pod's Ready condition.
func podReady(pod *corev1.Pod) bool {
	return podReadySince(pod) != nil
}

// podReadySince is when the pod became Ready, or nil if it is not.
func podReadySince(pod *corev1.Pod) *metav1.Time {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
			t := c.LastTransitionTime
			return &t
		}
	}
	return nil
}

// podAvailable reports whether the pod has been ready for minReady
// seconds, and if it is ready but not yet available, how long until it
// is.
func podAvailable(pod *corev1.Pod, minReady int32, now time.Time) (bool, time.Duration) {
	since := podReadySince(pod)
	if since == nil {
		return false, 0
	}
	if minReady == 0 {
		return true, 0
	}
	left := since.Add(time.Duration(minReady) * time.Second).Sub(now)
	if left <= 0 {
		return true, 0
	}
	return false, left
}

// podActive is a pod that counts towards its owner's replicas: not
// finished and not being deleted.
func podActive(pod *corev1.Pod) bool {
	return pod.DeletionTimestamp == nil && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed
}

// ownerKey returns the namespace/name key of the object's controller if
// it is of the given kind.
func ownerKey(obj metav1.Object, gvk schema.GroupVersionKind) (string, bool) {
	ref := metav1.GetControllerOf(obj)
	if ref == nil || ref.Kind != gvk.Kind || ref.APIVersion != gvk.GroupVersion().String() {
		return "", false
	}
	return obj.GetNamespace() + "/" + ref.Name, true
}

// ownedBy reports whether owner is obj's controller (by uid).
func ownedBy(obj, owner metav1.Object) bool {
	ref := metav1.GetControllerOf(obj)
	return ref != nil && ref.UID == owner.GetUID()
}

// controllerRef is the owner reference a controller puts on what it
// makes.
func controllerRef(owner metav1.Object, gvk schema.GroupVersionKind) metav1.OwnerReference {
	return *metav1.NewControllerRef(owner, gvk)
}

// podFromTemplate makes a pod of a controller from its template.
func podFromTemplate(t *corev1.PodTemplateSpec, owner metav1.Object, gvk schema.GroupVersionKind) *corev1.Pod {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace:       owner.GetNamespace(),
			GenerateName:    owner.GetName() + "-",
			Labels:          maps.Clone(t.Labels),
			Annotations:     maps.Clone(t.Annotations),
			Finalizers:      t.Finalizers,
			OwnerReferences: []metav1.OwnerReference{controllerRef(owner, gvk)},
		},
	}
	pod.Spec = *t.Spec.DeepCopy()
	return pod
}

// enqueueOwner returns an informer handler that enqueues, on c, the
// owner of kind gvk of every added, changed or deleted object (both the
// old and the new owner on a change).
func (c *controller) enqueueOwner(gvk schema.GroupVersionKind) cache.ResourceEventHandler {
	add := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, ok := obj.(metav1.Object); ok {
			if key, ok := ownerKey(m, gvk); ok {
				c.queue.Add(key)
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(old, obj any) { add(old); add(obj) },
		DeleteFunc: add,
	}
}

// slowStartBatch runs fn for i in 0..count-1, in batches that double
// from one, and stops at the first batch with an error, as Kubernetes'
// controllers create pods: a template the API refuses fails once, not
// count times. It returns how many succeeded and the first error.
func slowStartBatch(ctx context.Context, count int, fn func(ctx context.Context, i int) error) (int, error) {
	done, started := 0, 0
	for batch := 1; done < count; batch *= 2 {
		batch = min(batch, count-done)
		errs := make(chan error, batch)
		var wg sync.WaitGroup
		for i := started; i < started+batch; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- fn(ctx, i)
			}()
		}
		started += batch
		wg.Wait()
		close(errs)
		var first error
		for err := range errs {
			if err == nil {
				done++
			} else if first == nil {
				first = err
			}
		}
		if first != nil {
			return done, first
		}
	}
	return done, nil
}

// createPods creates n pods of owner, pod(i) making the i-th, in
// slow-start batches, with an event on owner for each and for a failure.
// The caller has set the expectations of key to expect the n creations;
// those that did not happen are noted there, as the informer will show
// only the pods that were created.
func (c *controller) createPods(ctx context.Context, client kubernetes.Interface, exp *expectations, key string, owner runtime.Object,
	n int, pod func(i int) *corev1.Pod) error {
	created, err := slowStartBatch(ctx, n, func(ctx context.Context, i int) error {
		p := pod(i)
		p, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		c.recorder.Eventf(owner, corev1.EventTypeNormal, "SuccessfulCreate", "Created pod: %s", p.Name)
		return nil
	})
	for range n - created {
		exp.created(key)
	}
	if err != nil {
		c.recorder.Eventf(owner, corev1.EventTypeWarning, "FailedCreate", "Error creating: %v", err)
		return fmt.Errorf("create pods of %s: %w", key, err)
	}
	return nil
}

// deletePods deletes the pods at once, calling deleted (when set) for
// each one gone. The caller has set the expectations of key to expect
// podKeys(pods); the deletions that failed are noted there.
func deletePods(ctx context.Context, client kubernetes.Interface, exp *expectations, key string, pods []*corev1.Pod, deleted func(*corev1.Pod)) error {
	errs := make([]error, len(pods))
	var wg sync.WaitGroup
	for i, p := range pods {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := deletePod(ctx, client, p); err != nil {
				exp.deleted(key, p.Namespace+"/"+p.Name)
				errs[i] = err
				return
			}
			if deleted != nil {
				deleted(p)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// deletePod deletes exactly this pod (by uid); a pod already gone is no
// error.
func deletePod(ctx context.Context, client kubernetes.Interface, p *corev1.Pod) error {
	uid := p.UID
	err := client.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// markDisrupted gives a pod the DisruptionTarget condition, as
// Kubernetes' controllers do before they delete a pod for a reason of
// their own, so that a Job's pod failure policy can tell such a deletion
// from the pod's own failure; with failed, it also marks the pod Failed
// (one whose node is gone, which no kubelet will finish).
func markDisrupted(ctx context.Context, client kubernetes.Interface, p *corev1.Pod, reason, message string, failed bool) error {
	status := map[string]any{"conditions": []corev1.PodCondition{{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue,
		Reason: reason, Message: message, LastTransitionTime: metav1.Now()}}}
	if failed {
		status["phase"] = corev1.PodFailed
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"uid": p.UID}, "status": status})
	if err != nil {
		return err
	}
	_, err = client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("mark pod %s/%s as disrupted: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// podKeys are the pods' namespace/name keys, as expectations name them.
func podKeys(pods []*corev1.Pod) []string {
	keys := make([]string, len(pods))
	for i, p := range pods {
		keys[i] = p.Namespace + "/" + p.Name
	}
	return keys
}

// rankForDeletion orders pods the way Kubernetes picks which to delete
// first when scaling down: unscheduled before scheduled, pending before
// running, not ready before ready, recently ready before long ready,
// more restarts first, then the newest.
func rankForDeletion(pods []*corev1.Pod) {
	phase := map[corev1.PodPhase]int{corev1.PodPending: 0, corev1.PodUnknown: 1, corev1.PodRunning: 2}
	restarts := func(p *corev1.Pod) int32 {
		var n int32
		for _, s := range p.Status.ContainerStatuses {
			n += s.RestartCount
		}
		return n
	}
	sort.SliceStable(pods, func(i, j int) bool {
		a, b := pods[i], pods[j]
		if (a.Spec.NodeName == "") != (b.Spec.NodeName == "") {
			return a.Spec.NodeName == ""
		}
		if phase[a.Status.Phase] != phase[b.Status.Phase] {
			return phase[a.Status.Phase] < phase[b.Status.Phase]
		}
		ra, rb := podReadySince(a), podReadySince(b)
		if (ra == nil) != (rb == nil) {
			return ra == nil
		}
		if ra != nil && !ra.Equal(rb) {
			return rb.Before(ra)
		}
		if restarts(a) != restarts(b) {
			return restarts(a) > restarts(b)
		}
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	})
}

// expectationsTimeout is how long a controller waits for the informer to
// show what it has written before it stops trusting the record and
// syncs anyway, as Kubernetes' ControllerExpectations.
const expectationsTimeout = 5 * time.Minute

// expectations records, per owner, the pod creations and deletions a
// controller has made and its informer has not shown yet. Until they are
// seen the owner is not synced again, so a slow informer never makes it
// create or delete the same pods twice. A sync reads them before it lists
// the pods, as Kubernetes' controllers do: the informer stores a pod
// before it reports it, so once they are satisfied the list holds every
// pod they waited for. Read after the list, they could be satisfied by a
// pod that arrived in between, and the sync would make that pod again.
type expectations struct {
	mu sync.Mutex
	m  map[string]*expected
}

type expected struct {
	adds int
	dels sets.Set[string] // keys of pods being deleted
	at   time.Time
}

func newExpectations() *expectations { return &expectations{m: map[string]*expected{}} }

// expect records creations and deletions about to be made for key.
func (e *expectations) expect(key string, adds int, dels []string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.m[key] = &expected{adds: adds, dels: sets.New(dels...), at: time.Now()}
}

// created notes a creation seen (or one that failed).
func (e *expectations) created(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		x.adds--
	}
}

// deleted notes a pod deletion seen (or one that failed).
func (e *expectations) deleted(key, pod string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if x, ok := e.m[key]; ok {
		x.dels.Delete(pod)
	}
}

// satisfied reports whether key may be synced: nothing is outstanding,
// or the record is too old to trust.
func (e *expectations) satisfied(key string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	x, ok := e.m[key]
	return !ok || (x.adds <= 0 && x.dels.Len() == 0) || time.Since(x.at) > expectationsTimeout
}

func (e *expectations) forget(key string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	delete(e.m, key)
}

// observePods returns informer handlers that note, on e, the pods of
// owners of kind gvk being created and deleted, and enqueue the owner.
func (c *controller) observePods(e *expectations, gvk schema.GroupVersionKind) cache.ResourceEventHandler {
	enqueue := c.enqueueOwner(gvk)
	gone := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if pod, ok := obj.(*corev1.Pod); ok {
			if key, ok := ownerKey(pod, gvk); ok {
				e.deleted(key, pod.Namespace+"/"+pod.Name)
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if pod, ok := obj.(*corev1.Pod); ok {
				if key, ok := ownerKey(pod, gvk); ok {
					e.created(key)
					if pod.DeletionTimestamp != nil {
						e.deleted(key, pod.Namespace+"/"+pod.Name)
					}
				}
			}
			enqueue.OnAdd(obj, false)
		},
		UpdateFunc: func(old, obj any) {
			if pod, ok := obj.(*corev1.Pod); ok && pod.DeletionTimestamp != nil {
				gone(pod)
			}
			enqueue.OnUpdate(old, obj)
		},
		DeleteFunc: func(obj any) {
			gone(obj)
			enqueue.OnDelete(obj)
		},
	}
}
