package ctrl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// claimer is an owner deciding which objects of one resource it controls,
// as Kubernetes' ControllerRefManager does: it keeps those it controls and
// still selects, adopts the orphans it selects (an object a controller
// made outlives it when deleted with the Orphan policy, and a controller
// made again with the same selector takes it back instead of making
// more), and releases those it controls but no longer selects (a pod
// relabelled out of a ReplicaSet is replaced, not deleted). An owner being
// deleted adopts and releases nothing.
type claimer struct {
	owner    metav1.Object
	gvk      schema.GroupVersionKind
	selector *metav1.LabelSelector
	// adoptable, when set, says whether an orphan may be adopted at all.
	adoptable func(metav1.Object) bool
	// patch applies a strategic merge patch to the named object.
	patch func(ctx context.Context, name string, data []byte) error
	// fresh reads the owner from the API rather than the cache: an owner
	// deleted meanwhile must not adopt.
	fresh func(ctx context.Context) (metav1.Object, error)
	// checked is the outcome of the one fresh read, once made.
	checked *error
}

// claim returns the candidates c's owner controls once it has adopted and
// released what it must.
func claim[T metav1.Object](ctx context.Context, c *claimer, candidates []T) ([]T, error) {
	sel, err := metav1.LabelSelectorAsSelector(c.selector)
	if err != nil {
		return nil, fmt.Errorf("selector of %s %s/%s: %w", c.gvk.Kind, c.owner.GetNamespace(), c.owner.GetName(), err)
	}
	var claimed []T
	var errs []error
	deleting := c.owner.GetDeletionTimestamp() != nil
	for _, obj := range candidates {
		matches := sel.Matches(labels.Set(obj.GetLabels()))
		if ref := metav1.GetControllerOf(obj); ref != nil {
			switch {
			case ref.UID != c.owner.GetUID():
			case matches:
				claimed = append(claimed, obj)
			case !deleting && obj.GetDeletionTimestamp() == nil:
				errs = append(errs, c.write(ctx, obj, c.releasePatch(obj)))
			}
			continue
		}
		if deleting || !matches || obj.GetDeletionTimestamp() != nil || (c.adoptable != nil && !c.adoptable(obj)) {
			continue
		}
		if err := c.canAdopt(ctx); err != nil {
			errs = append(errs, err)
			break
		}
		err := c.write(ctx, obj, c.adoptPatch(obj))
		errs = append(errs, err)
		if err == nil {
			claimed = append(claimed, obj)
		}
	}
	return claimed, errors.Join(errs...)
}

// claimPods is claim for a controller's pods: every pod of its namespace
// is a candidate, and only an active pod may be adopted (and then only if
// c.adoptable, when set, agrees). It sets c.patch.
func claimPods(ctx context.Context, client kubernetes.Interface, lister corelisters.PodLister, c *claimer) ([]*corev1.Pod, error) {
	all, err := lister.Pods(c.owner.GetNamespace()).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	c.patch = strategicPatch(client.CoreV1().Pods(c.owner.GetNamespace()))
	also := c.adoptable
	c.adoptable = func(o metav1.Object) bool { return podActive(o.(*corev1.Pod)) && (also == nil || also(o)) }
	return claim(ctx, c, all)
}

// strategicPatch is a claimer's patch through a typed client.
func strategicPatch[T any](client interface {
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
}) func(context.Context, string, []byte) error {
	return func(ctx context.Context, name string, data []byte) error {
		_, err := client.Patch(ctx, name, types.StrategicMergePatchType, data, metav1.PatchOptions{})
		return err
	}
}

// freshOwner is a claimer's fresh read of the named owner through a
// typed client.
func freshOwner[T metav1.Object](client interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
}, name string) func(context.Context) (metav1.Object, error) {
	return func(ctx context.Context) (metav1.Object, error) {
		return client.Get(ctx, name, metav1.GetOptions{})
	}
}

// canAdopt checks, once, that the owner still exists and is not being
// deleted.
func (c *claimer) canAdopt(ctx context.Context) error {
	if c.checked == nil {
		err := func() error {
			cur, err := c.fresh(ctx)
			if err != nil {
				return fmt.Errorf("read %s %s/%s before adopting: %w", c.gvk.Kind, c.owner.GetNamespace(), c.owner.GetName(), err)
			}
			if cur.GetUID() != c.owner.GetUID() || cur.GetDeletionTimestamp() != nil {
				return fmt.Errorf("%s %s/%s has just been deleted", c.gvk.Kind, c.owner.GetNamespace(), c.owner.GetName())
			}
			return nil
		}()
		c.checked = &err
	}
	return *c.checked
}

// write applies a patch; an object gone meanwhile needs none.
func (c *claimer) write(ctx context.Context, obj metav1.Object, patch []byte) error {
	if err := c.patch(ctx, obj.GetName(), patch); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("claim %s/%s for %s %s: %w", obj.GetNamespace(), obj.GetName(), c.gvk.Kind, c.owner.GetName(), err)
	}
	return nil
}

// refPatch is a strategic merge patch of an object's owner references,
// conditioned on its uid, so that it never lands on a namesake made since.
type refPatch struct {
	Metadata struct {
		OwnerReferences []any     `json:"ownerReferences"`
		UID             types.UID `json:"uid"`
	} `json:"metadata"`
}

func (c *claimer) adoptPatch(obj metav1.Object) []byte {
	var p refPatch
	p.Metadata.OwnerReferences = []any{controllerRef(c.owner, c.gvk)}
	p.Metadata.UID = obj.GetUID()
	b, _ := json.Marshal(p)
	return b
}

func (c *claimer) releasePatch(obj metav1.Object) []byte {
	var p refPatch
	p.Metadata.OwnerReferences = []any{map[string]any{"$patch": "delete", "uid": c.owner.GetUID()}}
	p.Metadata.UID = obj.GetUID()
	b, _ := json.Marshal(p)
	return b
}

// enqueueAdopters returns an informer handler that enqueues, for every
// orphan added, relabelled or just orphaned, the owners selectors returns
// for its namespace whose selector matches it, so that they may adopt it.
// Other changes (a pod's status) cannot make an owner adopt, so they cost
// nothing here.
func (c *controller) enqueueAdopters(selectors func(namespace string) map[string]labels.Selector) cache.ResourceEventHandler {
	add := func(obj any) {
		m, ok := obj.(metav1.Object)
		if !ok || metav1.GetControllerOf(m) != nil || m.GetDeletionTimestamp() != nil {
			return
		}
		for key, sel := range selectors(m.GetNamespace()) {
			if sel.Matches(labels.Set(m.GetLabels())) {
				c.queue.Add(key)
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: add,
		UpdateFunc: func(old, obj any) {
			o, ok1 := old.(metav1.Object)
			n, ok2 := obj.(metav1.Object)
			if ok1 && ok2 && (!maps.Equal(o.GetLabels(), n.GetLabels()) || metav1.GetControllerOf(o) != nil) {
				add(obj)
			}
		},
	}
}

// selectors maps the keys of owners to their selectors, for
// enqueueAdopters; an owner whose selector does not parse is left out.
func selectors[T metav1.Object](owners []T, selector func(T) *metav1.LabelSelector) map[string]labels.Selector {
	out := make(map[string]labels.Selector, len(owners))
	for _, o := range owners {
		if sel, err := metav1.LabelSelectorAsSelector(selector(o)); err == nil {
			out[o.GetNamespace()+"/"+o.GetName()] = sel
		}
	}
	return out
}
