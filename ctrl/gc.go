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

// byOwner indexes every object the collector watches by the uids of its
// owners.
const byOwner = "owner"

// ownerPoll is how often an owner whose dependents are still going away
// is looked at again, besides the events of those dependents.
const ownerPoll = 2 * time.Second

// garbageCollector deletes what its owners no longer want, as
// Kubernetes' does, from the ownerReferences of every object: dependents
// of a deleted owner (Background), dependents of an owner waiting in
// foregroundDeletion (then it removes that finalizer), and it removes the
// references to an owner with the orphan finalizer (then the finalizer).
// Its queue holds owners (gcOwner). It watches the metadata of every
// resource that can be listed, watched and deleted, except events.
type garbageCollector struct {
	*controller
	meta      metadata.Interface
	mapper    meta.RESTMapper
	informers map[schema.GroupVersionResource]cache.SharedIndexInformer
	// kinds maps the kinds the collector watches to their resource, so an
	// owner reference leads to the informer that holds its owner.
	kinds map[schema.GroupKind]watchedKind
}

// watchedKind is the resource of a kind the collector watches.
type watchedKind struct {
	gvr        schema.GroupVersionResource
	namespaced bool
}

// gcOwner is an owner the queue holds: its uid and where its informer
// keeps it (no resource when the collector does not watch its kind).
// Kubernetes looks for a namespaced dependent's owner in the dependent's
// namespace only, so resource, namespace and name find it without an
// index of every object by uid.
type gcOwner struct {
	uid             types.UID
	gvr             schema.GroupVersionResource
	namespace, name string
}

// String is the key in the queue, in JSON: an owner reference's name and
// uid are whatever its writer put there, a "/" included.
func (k gcOwner) String() string {
	b, _ := json.Marshal([]string{string(k.uid), k.gvr.Group, k.gvr.Version, k.gvr.Resource, k.namespace, k.name})
	return string(b)
}

func parseGCOwner(s string) (gcOwner, error) {
	var p []string
	if err := json.Unmarshal([]byte(s), &p); err != nil || len(p) != 6 {
		return gcOwner{}, fmt.Errorf("malformed owner key %q", s)
	}
	return gcOwner{uid: types.UID(p[0]), gvr: schema.GroupVersionResource{Group: p[1], Version: p[2], Resource: p[3]}, namespace: p[4], name: p[5]}, nil
}

// newGarbageCollector watches every resource the API serves that can be
// listed, watched and deleted, except events: through the shared typed
// informer where client-go has one, as kube-controller-manager does, so
// pods or nodes are not cached twice; through the metadata informers of
// meta for the rest. The caller starts both factories.
func newGarbageCollector(cfg Config, meta metadatainformer.SharedInformerFactory) (*controller, error) {
	gc := &garbageCollector{meta: cfg.Metadata,
		mapper:    restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(cfg.Discovery)),
		informers: map[schema.GroupVersionResource]cache.SharedIndexInformer{},
		kinds:     map[schema.GroupKind]watchedKind{}}
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
			if err := inf.AddIndexers(cache.Indexers{byOwner: indexOwners}); err != nil {
				return nil, err
			}
			if _, err := inf.AddEventHandler(gc.events(gvr)); err != nil {
				return nil, err
			}
			gc.informers[gvr] = inf
			gc.kinds[schema.GroupKind{Group: gv.Group, Kind: r.Kind}] = watchedKind{gvr: gvr, namespaced: r.Namespaced}
			gc.synced = append(gc.synced, inf.HasSynced)
		}
	}
	return gc.controller, nil
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

// events enqueues the owners whose state a change to an object of gvr
// may settle: the object itself when it is deleted or waits on its
// dependents, and its owners when it goes or is going (a foreground owner
// may be waiting), or when they may be gone already.
func (gc *garbageCollector) events(gvr schema.GroupVersionResource) cache.ResourceEventHandler {
	changed := func(obj any, deleted bool) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj, deleted = d.Obj, true
		}
		m, err := meta.Accessor(obj)
		if err != nil {
			return
		}
		if deleted || (m.GetDeletionTimestamp() != nil && (hasFinalizer(m, metav1.FinalizerOrphanDependents) || hasFinalizer(m, metav1.FinalizerDeleteDependents))) {
			gc.queue.Add(gcOwner{uid: m.GetUID(), gvr: gvr, namespace: m.GetNamespace(), name: m.GetName()}.String())
		}
		for _, ref := range m.GetOwnerReferences() {
			k := gc.ownerOf(m, ref)
			if deleted || m.GetDeletionTimestamp() != nil || gc.object(k) == nil {
				gc.queue.Add(k.String())
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

// ownerOf is the owner ref names, for dependent: in the dependent's
// namespace when the owner's kind is namespaced.
func (gc *garbageCollector) ownerOf(dependent metav1.Object, ref metav1.OwnerReference) gcOwner {
	k := gcOwner{uid: ref.UID, name: ref.Name}
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return k
	}
	if w, ok := gc.kinds[gv.WithKind(ref.Kind).GroupKind()]; ok {
		k.gvr = w.gvr
		if w.namespaced {
			k.namespace = dependent.GetNamespace()
		}
	}
	return k
}

// object finds an owner in its informer: the object there under its
// name, if it has the owner's uid.
func (gc *garbageCollector) object(k gcOwner) *node {
	inf, ok := gc.informers[k.gvr]
	if !ok {
		return nil
	}
	obj, exists, err := inf.GetIndexer().GetByKey(cache.NewObjectName(k.namespace, k.name).String())
	if err != nil || !exists {
		return nil
	}
	m, err := meta.Accessor(obj)
	if err != nil || m.GetUID() != k.uid {
		return nil
	}
	return &node{meta: m, gvr: k.gvr}
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
	k, err := parseGCOwner(key)
	if err != nil {
		return err
	}
	uid := k.uid
	deps := gc.dependents(uid)
	owner := gc.object(k)
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
			kept, err := gc.keptByAnother(ctx, d, uid)
			if err != nil {
				return err
			}
			if kept {
				// Another owner still wants it: it only stops being this
				// one's, and no longer holds it up.
				if err := gc.removeOwnerRefs(ctx, d, uid); err != nil {
					return err
				}
				continue
			}
			if ref := refTo(d.meta, uid); ref != nil && ref.BlockOwnerDeletion != nil && *ref.BlockOwnerDeletion {
				blocking++
			}
			if d.meta.GetDeletionTimestamp() != nil {
				continue
			}
			if err := gc.deleteDependent(ctx, d); err != nil {
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

// keptByAnother reports whether a dependent has an owner other than uid
// that keeps it: one that exists and is not itself waiting for its
// dependents to go (Kubernetes calls it a solid owner).
func (gc *garbageCollector) keptByAnother(ctx context.Context, d node, uid types.UID) (bool, error) {
	for _, ref := range d.meta.GetOwnerReferences() {
		if ref.UID == uid {
			continue
		}
		if o := gc.object(gc.ownerOf(d.meta, ref)); o != nil {
			if !deletingDependents(o.meta) {
				return true, nil
			}
			continue
		}
		// Not in the informers: ask the API, which may be ahead of them.
		if ok, err := gc.ownerExists(ctx, d.meta, ref); err != nil || ok {
			return ok, err
		}
	}
	return false, nil
}

// deletingDependents: the object waits in foregroundDeletion.
func deletingDependents(m metav1.Object) bool {
	return m.GetDeletionTimestamp() != nil && hasFinalizer(m, metav1.FinalizerDeleteDependents)
}

// deleteDependent deletes a dependent of an owner deleted in the
// foreground: in the foreground too when it has dependents of its own.
// When one of those waits in foregroundDeletion already, the owners form
// a circle, and each would wait for the next for ever; as Kubernetes
// does, the dependent's references stop blocking its owners first.
func (gc *garbageCollector) deleteDependent(ctx context.Context, d node) error {
	grand := gc.dependents(d.meta.GetUID())
	if len(grand) == 0 {
		return gc.delete(ctx, d, metav1.DeletePropagationBackground)
	}
	for _, g := range grand {
		if deletingDependents(g.meta) {
			if err := gc.unblockOwners(ctx, d); err != nil {
				return err
			}
			break
		}
	}
	return gc.delete(ctx, d, metav1.DeletePropagationForeground)
}

// unblockOwners clears blockOwnerDeletion on every owner reference of n.
func (gc *garbageCollector) unblockOwners(ctx context.Context, n node) error {
	refs := slices.Clone(n.meta.GetOwnerReferences())
	for i := range refs {
		refs[i].BlockOwnerDeletion = nil
	}
	return gc.patchMeta(ctx, n, "ownerReferences", refs)
}

// ownerGone handles the dependents of an owner the informers no longer
// hold, once the API confirms it is gone (an informer may lag): each
// dependent another owner keeps (keptByAnother) loses the reference; the
// others are deleted.
func (gc *garbageCollector) ownerGone(ctx context.Context, uid types.UID, deps []node) error {
	exists, err := gc.ownerExists(ctx, deps[0].meta, *refTo(deps[0].meta, uid))
	if err != nil || exists {
		return err
	}
	var errs []error
	for _, d := range deps {
		kept, err := gc.keptByAnother(ctx, d, uid)
		switch {
		case err != nil:
			errs = append(errs, err) // decided again when the key is retried
			continue
		case kept:
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
