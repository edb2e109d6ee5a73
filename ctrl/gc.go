package ctrl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/metadata"
	"k8s.io/client-go/metadata/metadatainformer"
	"k8s.io/client-go/restmapper"
	"k8s.io/client-go/tools/cache"
)

// Indexes of the garbage collector's metadata informers.
const (
	byUID   = "uid"
	byOwner = "owner"
)

// ownerPoll is how often an owner whose dependents are still going away
// is looked at again, besides the events of those dependents.
const ownerPoll = 2 * time.Second

// garbageCollector deletes what its owners no longer want, as
// Kubernetes' does, from the ownerReferences of every object: dependents
// of a deleted owner (Background), dependents of an owner waiting in
// foregroundDeletion (then it removes that finalizer), and it removes the
// references to an owner with the orphan finalizer (then the finalizer).
// Its queue holds owner uids. It watches the metadata of every resource
// that can be listed, watched and deleted, except events.
type garbageCollector struct {
	*controller
	meta      metadata.Interface
	mapper    meta.RESTMapper
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
}

// newGarbageCollector watches every resource the API serves that can be
// listed, watched and deleted, except events: through the shared typed
// informer where client-go has one, as kube-controller-manager does, so
// pods or nodes are not cached twice; through the metadata informers of
// meta for the rest. The caller starts both factories.
func newGarbageCollector(cfg Config, meta metadatainformer.SharedInformerFactory) (*controller, error) {
	gc := &garbageCollector{meta: cfg.Metadata,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cfg.Discovery)),
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{}}
	gc.controller = newController("garbage-collector", cfg, gc.sync)
	lists, err := cfg.Discovery.ServerPreferredResources()
	if err != nil {
		return nil, fmt.Errorf("discover the resources to collect: %w", err)
	}
	for _, l := range lists {
		gv, err := schema.ParseGroupVersion(l.GroupVersion)
		if err != nil {
			continue
		}
		for _, r := range l.APIResources {
			if r.Name == "events" || !slices.Contains(r.Verbs, "watch") || !slices.Contains(r.Verbs, "delete") || !slices.Contains(r.Verbs, "list") {
				continue
			}
			gvr := gv.WithResource(r.Name)
			var inf cache.SharedIndexInformer
			if typed, err := cfg.Informers.ForResource(gvr); err == nil {
				inf = typed.Informer()
			} else {
				inf = meta.ForResource(gvr).Informer()
				if err := inf.SetTransform(stripManagedFields); err != nil {
					return nil, err
				}
			}
			if err := inf.AddIndexers(cache.Indexers{byUID: indexUID, byOwner: indexOwners}); err != nil {
				return nil, err
			}
			if _, err := inf.AddEventHandler(gc.events()); err != nil {
				return nil, err
			}
			gc.informers[gvr] = inf
			gc.synced = append(gc.synced, inf.HasSynced)
		}
	}
	return gc.controller, nil
}

func indexUID(obj any) ([]string, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	return []string{string(m.GetUID())}, nil
}

func indexOwners(obj any) ([]string, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, ref := range m.GetOwnerReferences() {
		out = append(out, string(ref.UID))
	}
	return out, nil
}

// events enqueues the owners whose state an object's change may settle:
// the object itself when it is deleted or waits on its dependents, and
// its owners when it goes or is going (a foreground owner may be
// waiting), or when they may be gone already.
func (gc *garbageCollector) events() cache.ResourceEventHandler {
	changed := func(obj any, deleted bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj, deleted = d.Obj, true
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		if deleted || (m.GetDeletionTimestamp() != nil && (hasFinalizer(m, metav1.FinalizerOrphanDependents) || hasFinalizer(m, metav1.FinalizerDeleteDependents))) {
			gc.queue.Add(string(m.GetUID()))
		}
		for _, ref := range m.GetOwnerReferences() {
			if deleted || m.GetDeletionTimestamp() != nil || gc.object(ref.UID) == nil {
				gc.queue.Add(string(ref.UID))
			}
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { changed(obj, false) },
		UpdateFunc: func(_, obj any) { changed(obj, false) },
		DeleteFunc: func(obj any) { changed(obj, true) },
	}
}

func hasFinalizer(m metav1.Object, f string) bool { return slices.Contains(m.GetFinalizers(), f) }

// node is one object the collector knows: its metadata and resource.
type node struct {
	meta metav1.Object
	gvr  schema.GroupVersionResource
}

// object finds an object by uid in the informers.
func (gc *garbageCollector) object(uid types.UID) *node {
	for gvr, inf := range gc.informers {
		objs, err := inf.GetIndexer().ByIndex(byUID, string(uid))
		if err == nil && len(objs) > 0 {
			if m, err := meta.Accessor(objs[0]); err == nil {
				return &node{meta: m, gvr: gvr}
			}
		}
	}
	return nil
}

// dependents lists the objects with an owner reference to uid.
func (gc *garbageCollector) dependents(uid types.UID) []node {
	var out []node
	for gvr, inf := range gc.informers {
		objs, err := inf.GetIndexer().ByIndex(byOwner, string(uid))
		if err != nil {
			continue
		}
		for _, o := range objs {
			if m, err := meta.Accessor(o); err == nil {
				out = append(out, node{meta: m, gvr: gvr})
			}
		}
	}
	return out
}

func (gc *garbageCollector) sync(ctx context.Context, key string) error {
	uid := types.UID(key)
	deps := gc.dependents(uid)
	owner := gc.object(uid)
	if owner == nil {
		if len(deps) == 0 {
			return nil
		}
		return gc.ownerGone(ctx, uid, deps)
	}
	if owner.meta.GetDeletionTimestamp() == nil {
		return nil
	}
	switch {
	case hasFinalizer(owner.meta, metav1.FinalizerOrphanDependents):
		for _, d := range deps {
			if err := gc.removeOwnerRefs(ctx, d, uid); err != nil {
				return err
			}
		}
		return gc.removeFinalizer(ctx, owner, metav1.FinalizerOrphanDependents)
	case hasFinalizer(owner.meta, metav1.FinalizerDeleteDependents):
		blocking := 0
		for _, d := range deps {
			if ref := refTo(d.meta, uid); ref != nil && ref.BlockOwnerDeletion != nil && *ref.BlockOwnerDeletion {
				blocking++
			}
			if d.meta.GetDeletionTimestamp() != nil {
				continue
			}
			policy := metav1.DeletePropagationBackground
			if len(gc.dependents(d.meta.GetUID())) > 0 {
				policy = metav1.DeletePropagationForeground
			}
			if err := gc.delete(ctx, d, policy); err != nil {
				return err
			}
		}
		if blocking > 0 {
			return requeueAfter(ownerPoll)
		}
		return gc.removeFinalizer(ctx, owner, metav1.FinalizerDeleteDependents)
	}
	return nil
}

// ownerGone handles the dependents of an owner the informers no longer
// hold, once the API confirms it is gone (an informer may lag): each
// dependent with no other owner left is deleted; the others lose the
// reference.
func (gc *garbageCollector) ownerGone(ctx context.Context, uid types.UID, deps []node) error {
	exists, err := gc.ownerExists(ctx, deps[0].meta, *refTo(deps[0].meta, uid))
	if err != nil || exists {
		return err
	}
	var errs []error
	for _, d := range deps {
		alive := false
		for _, ref := range d.meta.GetOwnerReferences() {
			if ref.UID == uid {
				continue
			}
			ok, err := gc.ownerExists(ctx, d.meta, ref)
			if err != nil {
				errs = append(errs, err)
				alive = true
				break
			}
			alive = alive || ok
		}
		if alive {
			errs = append(errs, gc.removeOwnerRefs(ctx, d, uid))
			continue
		}
		if d.meta.GetDeletionTimestamp() == nil {
			errs = append(errs, gc.delete(ctx, d, metav1.DeletePropagationBackground))
		}
	}
	return errors.Join(errs...)
}

// ownerExists asks the API whether the object ref names still exists
// with its uid.
func (gc *garbageCollector) ownerExists(ctx context.Context, dependent metav1.Object, ref metav1.OwnerReference) (bool, error) {
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return false, nil
	}
	mapping, err := gc.mapper.RESTMapping(gv.WithKind(ref.Kind).GroupKind(), gv.Version)
	if meta.IsNoMatchError(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("owner kind %s: %w", ref.Kind, err)
	}
	var res metadata.ResourceInterface = gc.meta.Resource(mapping.Resource)
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		res = gc.meta.Resource(mapping.Resource).Namespace(dependent.GetNamespace())
	}
	got, err := res.Get(ctx, ref.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("get owner %s %s: %w", ref.Kind, ref.Name, err)
	}
	return got.UID == ref.UID, nil
}

func refTo(m metav1.Object, uid types.UID) *metav1.OwnerReference {
	for _, ref := range m.GetOwnerReferences() {
		if ref.UID == uid {
			return &ref
		}
	}
	return nil
}

func (gc *garbageCollector) resource(n node) metadata.ResourceInterface {
	if ns := n.meta.GetNamespace(); ns != "" {
		return gc.meta.Resource(n.gvr).Namespace(ns)
	}
	return gc.meta.Resource(n.gvr)
}

// delete deletes exactly this object (by uid).
func (gc *garbageCollector) delete(ctx context.Context, n node, policy metav1.DeletionPropagation) error {
	uid := n.meta.GetUID()
	err := gc.resource(n).Delete(ctx, n.meta.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("delete %s %s/%s: %w", n.gvr.Resource, n.meta.GetNamespace(), n.meta.GetName(), err)
	}
	return nil
}

// removeOwnerRefs drops the references to uid from a dependent, with a
// JSON patch that fails if the object changed since it was read.
func (gc *garbageCollector) removeOwnerRefs(ctx context.Context, n node, uid types.UID) error {
	var keep []metav1.OwnerReference
	for _, ref := range n.meta.GetOwnerReferences() {
		if ref.UID != uid {
			keep = append(keep, ref)
		}
	}
	return gc.patchMeta(ctx, n, "ownerReferences", keep)
}

func (gc *garbageCollector) removeFinalizer(ctx context.Context, n *node, f string) error {
	var keep []string
	for _, x := range n.meta.GetFinalizers() {
		if x != f {
			keep = append(keep, x)
		}
	}
	return gc.patchMeta(ctx, *n, "finalizers", keep)
}

// patchMeta replaces one metadata field, if the object is still at the
// resourceVersion the collector read.
func (gc *garbageCollector) patchMeta(ctx context.Context, n node, field string, value any) error {
	patch, err := json.Marshal([]map[string]any{
		{"op": "test", "path": "/metadata/resourceVersion", "value": n.meta.GetResourceVersion()},
		{"op": "replace", "path": "/metadata/" + field, "value": value},
	})
	if err != nil {
		return err
	}
	_, err = gc.resource(n).Patch(ctx, n.meta.GetName(), types.JSONPatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("patch %s of %s %s/%s: %w", field, n.gvr.Resource, n.meta.GetNamespace(), n.meta.GetName(), err)
	}
	return nil
}
