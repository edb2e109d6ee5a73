package ctrl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"sort"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	"k8s.io/utils/ptr"
)

// errCollision says a revision's name is taken by another template: the
// owner's collisionCount has been raised, so its next sync hashes anew.
var errCollision = errors.New("revision name collision")

// history keeps the ControllerRevisions of DaemonSets and StatefulSets as
// Kubernetes' controllers do (its controller/history package), because
// `kubectl rollout history` and `kubectl rollout undo` read them. There
// is one revision per pod template the set has had, named <set>-<hash>,
// labelled with the template's labels and the hash, controlled by the
// set, numbered in the order the templates were last used, and holding
// the strategic merge patch that puts its template back, byte for byte
// what kubectl computes to tell whether a set already matches one.
type history struct {
	client    kubernetes.Interface
	revisions appslisters.ControllerRevisionLister
}

// historyOwner is what history needs of a set.
type historyOwner struct {
	obj      metav1.Object
	gvk      schema.GroupVersionKind
	selector *metav1.LabelSelector
	template *corev1.PodTemplateSpec
	hash     string
	// limit is spec.revisionHistoryLimit: how many revisions no pod runs
	// are kept.
	limit *int32
	// bumpCollisions raises the set's status.collisionCount.
	bumpCollisions func(ctx context.Context) error
	// fresh reads the set from the API, before it adopts a revision.
	fresh func(ctx context.Context) (metav1.Object, error)
}

// collisionBumper returns a historyOwner's bumpCollisions for a set
// whose status held seen: it raises the count, read afresh, unless it has
// moved on since (then the next sync hashes with the new one anyway).
func collisionBumper[T metav1.Object](client interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	UpdateStatus(ctx context.Context, obj T, opts metav1.UpdateOptions) (T, error)
}, name string, seen *int32, count func(T) **int32) func(context.Context) error {
	return func(ctx context.Context) error {
		cur, err := client.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("read %s to raise its collision count: %w", name, err)
		}
		c := count(cur)
		if ptr.Deref(*c, 0) != ptr.Deref(seen, 0) {
			return nil
		}
		*c = ptr.To(ptr.Deref(seen, 0) + 1)
		if _, err := client.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("raise the collision count of %s: %w", name, err)
		}
		return nil
	}
}

// templatePatch is kubectl's getPatch: {"spec":{"template":{…,"$patch":"replace"}}}.
func templatePatch(t *corev1.PodTemplateSpec) ([]byte, error) {
	b, err := json.Marshal(t)
	if err != nil {
		return nil, err
	}
	var template map[string]any
	if err := json.Unmarshal(b, &template); err != nil {
		return nil, err
	}
	template["$patch"] = "replace"
	return json.Marshal(map[string]any{"spec": map[string]any{"template": template}})
}

// revisionTemplate applies a revision to its set and returns the
// template it holds, as Kubernetes' ApplyRevision does.
func revisionTemplate(set runtime.Object, rev *appsv1.ControllerRevision) (*corev1.PodTemplateSpec, error) {
	b, err := json.Marshal(set)
	if err != nil {
		return nil, err
	}
	patched, err := strategicpatch.StrategicMergePatch(b, rev.Data.Raw, set)
	if err != nil {
		return nil, fmt.Errorf("apply revision %s: %w", rev.Name, err)
	}
	var out struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if err := json.Unmarshal(patched, &out); err != nil {
		return nil, fmt.Errorf("apply revision %s: %w", rev.Name, err)
	}
	return &out.Spec.Template, nil
}

// owned returns the revisions the set controls, by revision number, once
// it has adopted the orphans it selects (those of a set deleted with the
// Orphan policy and made again) and released those it no longer selects.
func (h *history) owned(ctx context.Context, o *historyOwner) ([]*appsv1.ControllerRevision, error) {
	all, err := h.revisions.ControllerRevisions(o.obj.GetNamespace()).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out, err := claim(ctx, &claimer{owner: o.obj, gvk: o.gvk, selector: o.selector, fresh: o.fresh,
		patch: strategicPatch(h.client.AppsV1().ControllerRevisions(o.obj.GetNamespace()))}, all)
	if err != nil {
		return nil, err
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Revision != out[j].Revision {
			return out[i].Revision < out[j].Revision
		}
		return out[i].Name < out[j].Name
	})
	return out, nil
}

// record makes the set's template its newest revision: the revision
// that holds the template gets a number above every other (it is created
// if none holds it). It returns that revision and the others.
func (h *history) record(ctx context.Context, o *historyOwner) (*appsv1.ControllerRevision, []*appsv1.ControllerRevision, error) {
	patch, err := templatePatch(o.template)
	if err != nil {
		return nil, nil, err
	}
	revs, err := h.owned(ctx, o)
	if err != nil {
		return nil, nil, err
	}
	var cur *appsv1.ControllerRevision
	var others []*appsv1.ControllerRevision
	var top int64
	for _, r := range revs {
		if cur == nil && bytes.Equal(r.Data.Raw, patch) {
			cur = r
			continue
		}
		others = append(others, r)
		top = max(top, r.Revision)
	}
	switch {
	case cur == nil:
		cur, err = h.create(ctx, o, patch, top+1)
	case cur.Revision <= top:
		next := cur.DeepCopy()
		next.Revision = top + 1
		cur, err = h.client.AppsV1().ControllerRevisions(next.Namespace).Update(ctx, next, metav1.UpdateOptions{})
		if err != nil {
			err = fmt.Errorf("renumber revision %s: %w", next.Name, err)
		}
	}
	return cur, others, err
}

func (h *history) create(ctx context.Context, o *historyOwner, patch []byte, number int64) (*appsv1.ControllerRevision, error) {
	rev := &appsv1.ControllerRevision{
		ObjectMeta: metav1.ObjectMeta{
			Name:            o.obj.GetName() + "-" + o.hash,
			Namespace:       o.obj.GetNamespace(),
			Labels:          withEntry(maps.Clone(o.template.Labels), appsv1.ControllerRevisionHashLabelKey, o.hash),
			Annotations:     maps.Clone(o.obj.GetAnnotations()),
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(o.obj, o.gvk)},
		},
		Data:     runtime.RawExtension{Raw: patch},
		Revision: number,
	}
	client := h.client.AppsV1().ControllerRevisions(rev.Namespace)
	created, err := client.Create(ctx, rev, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) {
		if err != nil {
			return nil, fmt.Errorf("create revision %s: %w", rev.Name, err)
		}
		return created, nil
	}
	// Made by an earlier sync the informer has not shown yet, or another
	// template with the same hash.
	existing, err := client.Get(ctx, rev.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read revision %s: %w", rev.Name, err)
	}
	if metav1.IsControlledBy(existing, o.obj) && bytes.Equal(existing.Data.Raw, patch) {
		return existing, nil
	}
	if err := o.bumpCollisions(ctx); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w: %s holds another template", errCollision, rev.Name)
}

// truncate deletes the oldest of the revisions that no pod runs, beyond
// the set's limit (10 unless it says otherwise).
func (h *history) truncate(ctx context.Context, o *historyOwner, others []*appsv1.ControllerRevision, live func(*appsv1.ControllerRevision) bool) error {
	limit := int(ptr.Deref(o.limit, 10))
	var idle []*appsv1.ControllerRevision
	for _, r := range others {
		if !live(r) {
			idle = append(idle, r)
		}
	}
	var errs []error
	for _, r := range idle[:max(0, len(idle)-limit)] {
		err := h.client.AppsV1().ControllerRevisions(r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &r.UID}})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("delete revision %s: %w", r.Name, err))
		}
	}
	return errors.Join(errs...)
}
