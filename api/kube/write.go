package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/google/uuid"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// maxBodySize is kube-apiserver's request body limit; objects themselves
// are limited to fsm.MaxValueSize when stored.
const maxBodySize = 3 << 20

// updateRetries bounds the retries of an update whose precondition lost a
// race with another writer, when the client did not ask for one.
const updateRetries = 8

func readBody(req *request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxBodySize+1))
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The body came slower than the request timeout allows: the
		// Status is a timeout (Config.StatusFor).
		return nil, err
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("reading the request body: %v", err))
	}
	if len(body) > maxBodySize {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("limit is %d", maxBodySize))
	}
	return body, nil
}

// fieldValidation reads the fieldValidation parameter: Strict refuses
// unknown and duplicate fields, Warn (the default) reports them in
// Warning headers, Ignore drops them silently.
func fieldValidation(req *request) (string, error) {
	switch v := req.URL.Query().Get("fieldValidation"); v {
	case "":
		return metav1.FieldValidationWarn, nil
	case metav1.FieldValidationIgnore, metav1.FieldValidationWarn, metav1.FieldValidationStrict:
		return v, nil
	default:
		return "", apierrors.NewBadRequest(fmt.Sprintf("fieldValidation must be one of Ignore, Warn or Strict, not %q", v))
	}
}

// decodeInto decodes a request body into a new object of the kind r
// expects, honouring fieldValidation.
func (h *Handler) decodeInto(w http.ResponseWriter, req *request, body []byte, newObj func() runtime.Object, gvk func() (string, string)) (runtime.Object, error) {
	info, err := h.requestSerializer(req.Request)
	if err != nil {
		return nil, err
	}
	return h.decodeWith(w, req, info, body, newObj, gvk)
}

// decodeWith decodes body with the given serializer.
func (h *Handler) decodeWith(w http.ResponseWriter, req *request, info runtime.SerializerInfo, body []byte, newObj func() runtime.Object, gvk func() (string, string)) (runtime.Object, error) {
	validate, err := fieldValidation(req)
	if err != nil {
		return nil, err
	}
	dec := info.Serializer
	if info.StrictSerializer != nil && validate != metav1.FieldValidationIgnore {
		dec = info.StrictSerializer
	}
	into := newObj()
	obj, got, err := dec.Decode(body, nil, into)
	if err != nil && runtime.IsStrictDecodingError(err) && obj != nil {
		if validate == metav1.FieldValidationStrict {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		if sde, ok := runtime.AsStrictDecodingError(err); ok {
			for _, e := range sde.Errors() {
				w.Header().Add("Warning", fmt.Sprintf("299 - %q", e))
			}
		}
		err = nil
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized or malformed: %v", err))
	}
	if obj != into {
		wantGV, wantKind := gvk()
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized (must be of type %s): %s %s, not %s", wantKind, got.GroupVersion(), got.Kind, wantGV))
	}
	if got != nil && got.Kind != "" {
		wantGV, wantKind := gvk()
		if got.Kind != wantKind || (wantGV != "" && got.GroupVersion().String() != wantGV) {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s) or kind %s", got.GroupVersion(), wantGV, wantKind))
		}
	}
	return obj, nil
}

// decodeObject decodes the body of a create or update of req.res.
func (h *Handler) decodeObject(w http.ResponseWriter, req *request, body []byte) (runtime.Object, error) {
	r := req.res
	return h.decodeInto(w, req, body, r.New, func() (string, string) { return r.GroupVersion.String(), r.Kind })
}

// dryRun reports whether the request asked for dryRun=All.
func dryRun(req *request, opts []string) (bool, error) {
	if opts == nil {
		opts = req.URL.Query()["dryRun"]
	}
	for _, v := range opts {
		if v != metav1.DryRunAll {
			return false, apierrors.NewBadRequest(fmt.Sprintf("dryRun must be %q, not %q", metav1.DryRunAll, v))
		}
	}
	return len(opts) > 0, nil
}

func invalid(r *resource.Resource, name string, errs field.ErrorList) error {
	return apierrors.NewInvalid(r.GroupVersionKind().GroupKind(), name, errs)
}

// validate runs metadata and resource validation of obj, written through
// sub ("" for the object itself) as the version after old (nil on
// create). As in kube-apiserver, each subresource has its own rules: an
// update of the object itself is judged by the resource's update rules;
// a status or a namespace's finalizers change only what they may, so the
// object they leave is judged as any stored object is; a binding is
// judged by action (validateBinding), and the pod it binds not at all, as
// kube-apiserver's binding writes the pod without validating it.
func validate(r *resource.Resource, obj, old runtime.Object, sub string) error {
	if sub == "binding" {
		return nil
	}
	m := accessor(obj)
	errs := validation.ValidateObjectMetaAccessor(m, r.Namespaced, r.NameRule(), field.NewPath("metadata"))
	if old != nil {
		errs = append(errs, validation.ValidateObjectMetaAccessorUpdate(m, accessor(old), field.NewPath("metadata"))...)
	}
	switch {
	case r.Validate == nil:
	case sub == "":
		errs = append(errs, r.Validate(obj, old)...)
	default:
		errs = append(errs, r.Validate(obj, nil)...)
	}
	if len(errs) > 0 {
		return invalid(r, m.GetName(), errs)
	}
	return nil
}

// checkNamespace refuses content in a namespace that does not exist or is
// being deleted (kube-apiserver's NamespaceLifecycle admission), and
// returns the namespace's key and revision for the create's precondition.
func (h *Handler) checkNamespace(ctx context.Context, ns string) (string, uint64, error) {
	nsRes, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("namespaces"))
	cur, err := h.objects.getShared(ctx, nsRes, "", ns)
	if err != nil {
		return "", 0, err
	}
	if n := cur.obj.(*corev1.Namespace); n.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating {
		return "", 0, apierrors.NewForbidden(corev1.Resource("namespaces"), ns,
			fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	return key(nsRes, "", ns), cur.rev, nil
}

func (h *Handler) create(w http.ResponseWriter, req *request) error {
	body, err := readBody(req)
	if err != nil {
		return err
	}
	obj, err := h.decodeObject(w, req, body)
	if err != nil {
		return err
	}
	if req.res.Review != nil {
		obj, err = review(req.res, obj)
	} else {
		obj, err = h.createObject(req.Context(), req, obj)
	}
	if err != nil {
		return err
	}
	return h.writeResult(w, req, http.StatusCreated, obj)
}

// createObject prepares a decoded object and stores it: everything a
// server decides (uid, timestamps, generated name, ClusterIP) is decided
// here, before the transaction enters the log.
func (h *Handler) createObject(ctx context.Context, req *request, obj runtime.Object) (runtime.Object, error) {
	r := req.res
	dry, err := dryRun(req, nil)
	if err != nil {
		return nil, err
	}
	m := accessor(obj)
	if r.Namespaced {
		if m.GetNamespace() != "" && m.GetNamespace() != req.namespace {
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		m.SetNamespace(req.namespace)
	} else {
		m.SetNamespace("")
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + utilrand.String(5))
	}
	m.SetUID(types.UID(uuid.NewString()))
	m.SetCreationTimestamp(metav1.Now())
	m.SetResourceVersion("")
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetGeneration(0)
	if r.Generation {
		m.SetGeneration(1)
	}
	if r.Status {
		resource.ClearStatus(obj)
	}
	if r.Default != nil {
		r.Default(obj)
	}
	// As in kube-apiserver, the creator owns what it sent and its
	// defaults, not what the server prepares for every new object (a
	// Job's generated selector).
	if !req.applied {
		if obj, err = h.fields.get(r, "").Update(r.New(), obj, managerName(req.Request)); err != nil {
			return nil, apierrors.NewInternalError(fmt.Errorf("managed fields: %w", err))
		}
	}
	if r.PrepareCreate != nil {
		r.PrepareCreate(obj)
	}
	if err := validate(r, obj, nil, ""); err != nil {
		return nil, err
	}
	for attempt := 0; ; attempt++ {
		// The create is conditioned on what it was decided from: the
		// namespace's revision, and the keys of what it allocates. When
		// one of them changed meanwhile, it is decided again.
		var ops []fsm.Op
		if r.Namespaced {
			nsKey, nsRev, err := h.checkNamespace(ctx, req.namespace)
			if err != nil {
				return nil, err
			}
			ops = append(ops, fsm.Check(nsKey, fsm.Cond{ModRevision: nsRev}))
		}
		out := obj.DeepCopyObject()
		allocated, err := h.admitCreate(ctx, r, out)
		if err != nil {
			return nil, err
		}
		if dry {
			return out, nil
		}
		k := key(r, m.GetNamespace(), m.GetName())
		value, err := h.objects.encodeSealed(r, k, out)
		if err != nil {
			return nil, err
		}
		txn := &fsm.Txn{Ops: append(append([]fsm.Op{fsm.Put(k, value, string(m.GetUID()), fsm.Cond{MustNotExist: true})}, ops...), allocated...)}
		rev, err := h.objects.apply(ctx, r, m.GetName(), txn)
		if errors.Is(err, errDependencyChanged) && attempt < updateRetries {
			if err := h.objects.sync(ctx, consistency{linearizable: true}); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		setRV(out, rev)
		return out, nil
	}
}

func (h *Handler) update(w http.ResponseWriter, req *request) error {
	body, err := readBody(req)
	if err != nil {
		return err
	}
	if req.sub == "scale" {
		return h.updateScale(w, req, body)
	}
	obj, err := h.decodeObject(w, req, body)
	if err != nil {
		return err
	}
	m := accessor(obj)
	if m.GetName() != req.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", m.GetName(), req.name))
	}
	if req.res.Namespaced && m.GetNamespace() != "" && m.GetNamespace() != req.namespace {
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	minRev, _ := strconv.ParseUint(m.GetResourceVersion(), 10, 64)
	out, err := h.updateObject(req.Context(), req, minRev, func(old runtime.Object) (runtime.Object, error) {
		return obj.DeepCopyObject(), nil
	}, m.GetResourceVersion() == "")
	if err != nil {
		return err
	}
	return h.writeResult(w, req, http.StatusOK, out)
}

// updateFunc returns the object as the client wants it, given the stored
// one.
type updateFunc func(old runtime.Object) (runtime.Object, error)

// updateObject reads the stored object, applies fn, prepares and stores
// the result conditioned on the stored revision. With retry (an update
// without resourceVersion, a patch) a lost race is retried on a fresh
// read; otherwise it is a 409 Conflict.
//
// minRev is the revision the client's object came from: this server waits
// until it has applied it before reading.
func (h *Handler) updateObject(ctx context.Context, req *request, minRev uint64, fn updateFunc, retry bool) (runtime.Object, error) {
	r := req.res
	dry, err := dryRun(req, nil)
	if err != nil {
		return nil, err
	}
	// fresh says the object was read after a linearizable sync.
	fresh := false
	for attempt := 0; ; attempt++ {
		cur, err := h.objects.getCurrent(ctx, r, req.namespace, req.name, minRev)
		if err != nil {
			return nil, err
		}
		obj, err := fn(cur.obj.DeepCopyObject())
		if err != nil {
			return nil, err
		}
		out, err := h.storeUpdate(ctx, req, cur, obj, dry)
		lost := (retry && apierrors.IsConflict(err) || errors.Is(err, errDependencyChanged)) && attempt < updateRetries
		// An update that changes nothing may only seem to because this
		// server has not yet applied a write made through another (or
		// through this one, by a client reading its own write): as
		// kube-apiserver does when its cache served the object, it is
		// judged again on the latest state before it is answered.
		unchanged := err == nil && out == cur.obj && !fresh
		if !lost && !unchanged {
			return out, err
		}
		if err := h.objects.sync(ctx, consistency{linearizable: true}); err != nil {
			return nil, err
		}
		fresh = true
	}
}

// storeUpdate prepares obj as the new version of cur and stores it. An object whose deletion waited only for finalizers is
// deleted when the last one is removed.
func (h *Handler) storeUpdate(ctx context.Context, req *request, cur stored, obj runtime.Object, dry bool) (runtime.Object, error) {
	r, old := req.res, cur.obj
	m, om := accessor(obj), accessor(old)
	if rv := m.GetResourceVersion(); rv != "" && rv != om.GetResourceVersion() {
		return nil, apierrors.NewConflict(r.GroupVersionResource().GroupResource(), req.name, errors.New(conflictMessage))
	}
	// A uid the update names must be the stored one, as kube-apiserver
	// has it: controllers condition their patches on it.
	if uid := m.GetUID(); uid != "" && uid != om.GetUID() {
		return nil, invalid(r, req.name, field.ErrorList{field.Invalid(field.NewPath("metadata", "uid"), uid, "field is immutable")})
	}
	m.SetNamespace(om.GetNamespace())
	m.SetUID(om.GetUID())
	m.SetCreationTimestamp(om.GetCreationTimestamp())
	m.SetDeletionTimestamp(om.GetDeletionTimestamp())
	m.SetDeletionGracePeriodSeconds(om.GetDeletionGracePeriodSeconds())
	m.SetGeneration(om.GetGeneration())
	m.SetResourceVersion(om.GetResourceVersion())
	switch req.sub {
	case "status":
		// As kube-apiserver's status strategies: the spec stays as it
		// was, and changes to the metadata are kept, but to a
		// Deployment's labels and a Pod's owners.
		resource.CopySpec(obj, old)
		switch obj.(type) {
		case *appsv1.Deployment:
			m.SetLabels(om.GetLabels())
		case *corev1.Pod:
			m.SetOwnerReferences(om.GetOwnerReferences())
		}
	case "binding":
		// bind has changed exactly what a binding may change.
	case "finalize":
		ns, o := obj.(*corev1.Namespace), old.(*corev1.Namespace)
		finalizers := ns.Spec.Finalizers
		*ns = *o.DeepCopy()
		ns.Spec.Finalizers = finalizers
		m = accessor(obj)
	case "ephemeralcontainers":
		// Only the ephemeral containers change, and only by being added.
		pod, o := obj.(*corev1.Pod), old.(*corev1.Pod)
		ecs := pod.Spec.EphemeralContainers
		*pod = *o.DeepCopy()
		pod.Spec.EphemeralContainers = ecs
		m = accessor(obj)
		if errs := resource.ValidateEphemeralContainersUpdate(pod, o.Spec.EphemeralContainers); len(errs) > 0 {
			return nil, invalid(r, req.name, errs)
		}
	default:
		if r.Status {
			resource.CopyStatus(obj, old)
		}
	}
	if r.Default != nil {
		r.Default(obj)
	}
	if r.PrepareUpdate != nil && req.sub == "" {
		r.PrepareUpdate(obj, old)
	}
	// A binding places an object; it does not change what was asked of it.
	if r.Generation && req.sub != "binding" && resource.SpecChanged(obj, old) {
		m.SetGeneration(om.GetGeneration() + 1)
	}
	if err := validate(r, obj, old, req.sub); err != nil {
		return nil, err
	}
	sub := req.sub
	if sub == "finalize" || sub == "ephemeralcontainers" {
		sub = ""
	}
	if !req.applied {
		var err error
		if obj, err = h.fields.get(r, sub).Update(old, obj, managerName(req.Request)); err != nil {
			return nil, apierrors.NewInternalError(fmt.Errorf("managed fields: %w", err))
		}
		m = accessor(obj)
	}
	if m.GetDeletionTimestamp() != nil && !hasFinalizers(obj) && !graceful(m) {
		return h.deleteNow(ctx, req, cur, dry)
	}
	allocated, err := h.admitUpdate(ctx, r, old, obj)
	if err != nil {
		return nil, err
	}
	return h.writeUpdate(ctx, r, cur, obj, allocated, dry)
}

// writeUpdate stores obj as the version after cur, with the operations
// that take and give back what it allocates. As in kube-apiserver, an
// update that would store the bytes already stored writes nothing and
// keeps the resourceVersion, unless they are stored stale.
func (h *Handler) writeUpdate(ctx context.Context, r *resource.Resource, cur stored, obj runtime.Object, allocated []fsm.Op, dry bool) (runtime.Object, error) {
	value, err := h.objects.encode(r, obj)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(value, cur.value) && !cur.stale {
		return cur.obj, nil
	}
	if dry {
		return obj, nil
	}
	om := accessor(cur.obj)
	k := key(r, om.GetNamespace(), om.GetName())
	if value, err = h.objects.seal(r, k, value); err != nil {
		return nil, err
	}
	txn := &fsm.Txn{Ops: append([]fsm.Op{fsm.Put(k, value, string(om.GetUID()), fsm.Cond{ModRevision: cur.rev})}, allocated...)}
	newRev, err := h.objects.apply(ctx, r, om.GetName(), txn)
	if err != nil {
		return nil, err
	}
	setRV(obj, newRev)
	return obj, nil
}

// graceful says a deletion waits for its grace period (a pod's kubelet)
// rather than only for finalizers.
func graceful(m metav1.Object) bool {
	g := m.GetDeletionGracePeriodSeconds()
	return g != nil && *g > 0
}

// hasFinalizers says whether something must still happen before obj may
// be removed: metadata finalizers, or a namespace's spec finalizers.
func hasFinalizers(obj runtime.Object) bool {
	if ns, ok := obj.(*corev1.Namespace); ok && len(ns.Spec.Finalizers) > 0 {
		return true
	}
	return len(accessor(obj).GetFinalizers()) > 0
}

// deleteNow removes cur and whatever was allocated for it.
func (h *Handler) deleteNow(ctx context.Context, req *request, cur stored, dry bool) (runtime.Object, error) {
	r, old, rev := req.res, cur.obj, cur.rev
	m := accessor(old)
	if dry {
		return old, nil
	}
	ops := append([]fsm.Op{fsm.Delete(key(r, m.GetNamespace(), m.GetName()), fsm.Cond{ModRevision: rev})}, h.releaseOnDelete(r, old)...)
	delRev, err := h.objects.apply(ctx, r, m.GetName(), &fsm.Txn{Ops: ops})
	if err != nil {
		return nil, err
	}
	setRV(old, delRev)
	return old, nil
}

// nowPlus is the time a graceful deletion ends.
func nowPlus(seconds int64) *metav1.Time {
	t := metav1.NewTime(time.Now().Add(time.Duration(seconds) * time.Second))
	return &t
}
