package kube

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// deleteOptions reads DeleteOptions from the body, or from the query.
func (h *Handler) deleteOptions(w http.ResponseWriter, req *request) (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	body, err := readBody(req)
	if err != nil {
		return nil, err
	}
	if len(body) > 0 {
		// Clients send DeleteOptions in the resource's group version, in
		// v1 or in meta.k8s.io/v1: every group version registers it.
		obj, err := h.decodeInto(w, req, body, func() runtime.Object { return opts },
			func() (string, string) { return "", "DeleteOptions" })
		if err != nil {
			return nil, err
		}
		opts = obj.(*metav1.DeleteOptions)
	} else if err := metav1.Convert_url_Values_To_v1_DeleteOptions(ptr.To(req.URL.Query()), opts, nil); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return nil, invalid(req.res, req.name, nil)
		}
	}
	return opts, nil
}

func (h *Handler) delete(w http.ResponseWriter, req *request) error {
	opts, err := h.deleteOptions(w, req)
	if err != nil {
		return err
	}
	obj, code, gone, err := h.deleteObject(req.Context(), req, opts)
	if apierrors.IsStoreReadError(err) && ptr.Deref(opts.IgnoreStoreReadErrorWithClusterBreakingPotential, false) {
		return h.deleteUnreadable(w, req, opts)
	}
	if err != nil {
		return err
	}
	if gone {
		m := accessor(obj)
		h.writeDeleted(w, req, m.GetName(), m.GetUID())
		return nil
	}
	return h.writeResult(w, req, code, obj)
}

// writeDeleted answers a delete that removed the object: a success Status
// naming it, as kube-apiserver answers.
func (h *Handler) writeDeleted(w http.ResponseWriter, req *request, name string, uid types.UID) {
	h.writeObject(w, req.out, http.StatusOK, &metav1.Status{
		TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess,
		Details: &metav1.StatusDetails{Name: name, Group: req.res.GroupVersion.Group, Kind: req.res.Name, UID: uid}})
}

// deleteUnreadable removes an object that cannot be decoded, as
// kube-apiserver's unsafe deletion does: the key goes, with no
// finalizers, no graceful deletion and nothing released that the object
// held, which is why the option says it may break the cluster.
func (h *Handler) deleteUnreadable(w http.ResponseWriter, req *request, opts *metav1.DeleteOptions) error {
	dry, err := dryRun(req, opts.DryRun)
	if err != nil {
		return err
	}
	k := key(req.res, req.namespace, req.name)
	kv, found, _, err := h.objects.store.Get(k)
	switch {
	case err != nil:
		return err
	case !found:
		return apierrors.NewNotFound(req.res.GroupVersionResource().GroupResource(), req.name)
	}
	if !dry {
		if _, err := h.objects.apply(req.Context(), req.res, req.name, &fsm.Txn{Ops: []fsm.Op{fsm.Delete(k, fsm.Cond{ModRevision: kv.ModRevision})}}); err != nil {
			return err
		}
	}
	h.cfg.Logger.Warn("deleted a stored object that could not be read", "key", k, "dry_run", dry)
	h.writeDeleted(w, req, req.name, types.UID(kv.UID))
	return nil
}

// deleteObject deletes one object as DeleteOptions say: at once, or by
// setting deletionTimestamp when finalizers (or a pod's grace period) must
// run first; gone says which. The code of an object that stays is
// kube-apiserver's: 200, but 202 when the client set orphanDependents=false.
func (h *Handler) deleteObject(ctx context.Context, req *request, opts *metav1.DeleteOptions) (out runtime.Object, code int, gone bool, err error) {
	dry, err := dryRun(req, opts.DryRun)
	if err != nil {
		return nil, 0, false, err
	}
	r := req.res
	var minRev uint64
	if opts.Preconditions != nil && opts.Preconditions.ResourceVersion != nil {
		minRev, _ = strconv.ParseUint(*opts.Preconditions.ResourceVersion, 10, 64)
	}
	for attempt := 0; ; attempt++ {
		cur, err := h.objects.getCurrent(ctx, r, req.namespace, req.name, minRev)
		if err != nil {
			return nil, 0, false, err
		}
		if err := checkPreconditions(r, req.name, cur.obj, opts.Preconditions); err != nil {
			return nil, 0, false, err
		}
		obj, pending := prepareDelete(cur.obj.DeepCopyObject(), opts)
		code := http.StatusOK
		if pending {
			// Marking for deletion is the store's business alone, as in
			// kube-apiserver: no defaulting, validation or field manager.
			if opts.OrphanDependents != nil && !*opts.OrphanDependents {
				code = http.StatusAccepted
			}
			out, err = h.writeUpdate(ctx, r, cur, obj, nil, dry)
		} else {
			out, err = h.deleteNow(ctx, req, cur, dry)
		}
		if apierrors.IsConflict(err) && attempt < updateRetries {
			if err := h.objects.sync(ctx, consistency{linearizable: true}); err != nil {
				return nil, 0, false, err
			}
			continue
		}
		return out, code, !pending, err
	}
}

func checkPreconditions(r *resource.Resource, name string, obj runtime.Object, p *metav1.Preconditions) error {
	if p == nil {
		return nil
	}
	m := accessor(obj)
	gr := r.GroupVersionResource().GroupResource()
	if p.UID != nil && *p.UID != m.GetUID() {
		return apierrors.NewConflict(gr, name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, m.GetUID()))
	}
	if p.ResourceVersion != nil && *p.ResourceVersion != m.GetResourceVersion() {
		return apierrors.NewConflict(gr, name, fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, m.GetResourceVersion()))
	}
	return nil
}

// prepareDelete marks obj for deletion and says whether it must stay
// (pending) until finalizers or the kubelet are done with it.
func prepareDelete(obj runtime.Object, opts *metav1.DeleteOptions) (runtime.Object, bool) {
	m := accessor(obj)
	policy := metav1.DeletePropagationBackground
	if opts.OrphanDependents != nil && *opts.OrphanDependents {
		policy = metav1.DeletePropagationOrphan
	}
	if opts.PropagationPolicy != nil {
		policy = *opts.PropagationPolicy
	}
	finalizers := m.GetFinalizers()
	switch policy {
	case metav1.DeletePropagationOrphan:
		finalizers = addFinalizer(finalizers, metav1.FinalizerOrphanDependents)
	case metav1.DeletePropagationForeground:
		finalizers = addFinalizer(finalizers, metav1.FinalizerDeleteDependents)
	}
	grace := int64(0)
	if pod, ok := obj.(*corev1.Pod); ok && pod.Spec.NodeName != "" &&
		pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
		// The kubelet stops the containers, then deletes the pod with
		// grace period 0.
		grace = corev1.DefaultTerminationGracePeriodSeconds
		if pod.Spec.TerminationGracePeriodSeconds != nil {
			grace = *pod.Spec.TerminationGracePeriodSeconds
		}
		if opts.GracePeriodSeconds != nil {
			grace = *opts.GracePeriodSeconds
		}
	}
	if ns, ok := obj.(*corev1.Namespace); ok {
		ns.Status.Phase = corev1.NamespaceTerminating
	}
	if len(finalizers) == 0 && grace == 0 && !hasFinalizers(obj) {
		return obj, false
	}
	m.SetFinalizers(finalizers)
	if m.GetDeletionTimestamp() == nil {
		m.SetDeletionTimestamp(nowPlus(grace))
		m.SetDeletionGracePeriodSeconds(&grace)
	} else if cur := m.GetDeletionGracePeriodSeconds(); cur != nil && grace < *cur {
		// A shorter grace period replaces a longer one.
		m.SetDeletionTimestamp(nowPlus(grace))
		m.SetDeletionGracePeriodSeconds(&grace)
	}
	return obj, true
}

func addFinalizer(fs []string, f string) []string {
	if slices.Contains(fs, f) {
		return fs
	}
	return append(fs, f)
}

func (h *Handler) deleteCollection(w http.ResponseWriter, req *request) error {
	opts, err := h.deleteOptions(w, req)
	if err != nil {
		return err
	}
	sel, err := h.parseSelector(req)
	if err != nil {
		return err
	}
	objs, _, err := h.listObjects(req, sel)
	if err != nil {
		return err
	}
	var deleted []runtime.Object
	for _, obj := range objs {
		m := accessor(obj)
		one := *req
		one.namespace, one.name = m.GetNamespace(), m.GetName()
		out, _, _, err := h.deleteObject(req.Context(), &one, opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		deleted = append(deleted, out)
	}
	l := req.res.NewList()
	if err := meta.SetList(l, deleted); err != nil {
		return err
	}
	l.GetObjectKind().SetGroupVersionKind(req.res.GroupVersion.WithKind(req.res.Kind + "List"))
	h.writeObject(w, req.out, http.StatusOK, l)
	return nil
}

// action serves the POST-only subresources: pods/binding and
// pods/eviction.
func (h *Handler) action(w http.ResponseWriter, req *request) error {
	body, err := readBody(req)
	if err != nil {
		return err
	}
	ok := &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated}
	switch req.sub {
	case "binding":
		obj, err := h.decodeInto(w, req, body, func() runtime.Object { return &corev1.Binding{} },
			func() (string, string) { return "v1", "Binding" })
		if err != nil {
			return err
		}
		b := obj.(*corev1.Binding)
		if b.Name != req.name {
			return apierrors.NewBadRequest("name in URL does not match name in Binding object")
		}
		if errs := validateBinding(b); len(errs) > 0 {
			return invalid(req.res, req.name, errs)
		}
		bindReq := *req
		bindReq.sub, bindReq.applied = "binding", true
		_, err = h.updateObject(req.Context(), &bindReq, 0, func(old runtime.Object) (runtime.Object, error) {
			return bind(old.(*corev1.Pod), b)
		}, true)
		if err != nil {
			return err
		}
	case "eviction":
		obj, err := h.decodeInto(w, req, body, func() runtime.Object { return &policyv1.Eviction{} },
			func() (string, string) { return "policy/v1", "Eviction" })
		if err != nil {
			return err
		}
		opts := obj.(*policyv1.Eviction).DeleteOptions
		if opts == nil {
			opts = &metav1.DeleteOptions{}
		}
		if len(opts.DryRun) == 0 {
			// As kube-apiserver: the pod says why it goes before it goes,
			// so that a Job's pod failure policy can tell.
			statusReq := *req
			statusReq.sub, statusReq.applied = "status", true
			_, err := h.updateObject(req.Context(), &statusReq, 0, func(old runtime.Object) (runtime.Object, error) {
				return markDisrupted(old.(*corev1.Pod), "EvictionByEvictionAPI", "Eviction API: evicting"), nil
			}, true)
			if err != nil {
				return err
			}
		}
		if _, _, _, err := h.deleteObject(req.Context(), req, opts); err != nil {
			return err
		}
	}
	h.writeObject(w, req.out, http.StatusCreated, ok)
	return nil
}

// markDisrupted gives a pod that has not finished and is not going yet
// the DisruptionTarget condition.
func markDisrupted(pod *corev1.Pod, reason, message string) *corev1.Pod {
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return pod
	}
	setCondition(pod, corev1.PodCondition{Type: corev1.DisruptionTarget, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastTransitionTime: metav1.Now()})
	return pod
}

// setCondition puts cond in place of the pod's condition of its type, or
// adds it.
func setCondition(pod *corev1.Pod, cond corev1.PodCondition) {
	for i, c := range pod.Status.Conditions {
		if c.Type == cond.Type {
			pod.Status.Conditions[i] = cond
			return
		}
	}
	pod.Status.Conditions = append(pod.Status.Conditions, cond)
}

// validateBinding judges a binding as kube-apiserver does
// (ValidatePodBinding), its node's name as a node's and its annotations
// as any object's. The pod is not validated again: a binding changes only
// its node, those annotations and its PodScheduled condition.
func validateBinding(b *corev1.Binding) field.ErrorList {
	errs := validation.ValidateAnnotations(b.Annotations, field.NewPath("metadata", "annotations"))
	target := field.NewPath("target")
	if b.Target.Kind != "" && b.Target.Kind != "Node" {
		errs = append(errs, field.NotSupported(target.Child("kind"), b.Target.Kind, []string{"Node", "<empty>"}))
	}
	if b.Target.Name == "" {
		return append(errs, field.Required(target.Child("name"), ""))
	}
	for _, msg := range validation.NameIsDNSSubdomain(b.Target.Name, false) {
		errs = append(errs, field.Invalid(target.Child("name"), b.Target.Name, msg))
	}
	return errs
}

// bind sets a pod's node, once, adds the binding's annotations and marks
// the pod scheduled, as the binding subresource of kube-apiserver does.
// The binding's uid and resourceVersion, when it has them, must be the
// pod's: a scheduler's decision for a pod never lands on a namesake
// created since (a StatefulSet's pod, deleted and made again).
func bind(pod *corev1.Pod, b *corev1.Binding) (runtime.Object, error) {
	conflict := func(format string, args ...any) error {
		return apierrors.NewConflict(corev1.Resource("pods/binding"), pod.Name, fmt.Errorf(format, args...))
	}
	switch {
	case b.UID != "" && b.UID != pod.UID:
		return nil, conflict("Precondition failed: UID in precondition: %v, UID in object meta: %v", b.UID, pod.UID)
	case b.ResourceVersion != "" && b.ResourceVersion != pod.ResourceVersion:
		return nil, conflict("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", b.ResourceVersion, pod.ResourceVersion)
	case pod.DeletionTimestamp != nil:
		return nil, conflict("pod %s is being deleted, cannot be assigned to a host", pod.Name)
	case pod.Spec.NodeName != "":
		return nil, conflict("pod %s is already assigned to node %q", pod.Name, pod.Spec.NodeName)
	case len(pod.Spec.SchedulingGates) > 0:
		return nil, conflict("pod %s has non-empty .spec.schedulingGates", pod.Name)
	}
	for k, v := range b.Annotations {
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[k] = v
	}
	pod.Spec.NodeName = b.Target.Name
	setCondition(pod, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
	return pod, nil
}

// scaleOf is the autoscaling/v1 Scale of a scalable object.
func scaleOf(r *resource.Resource, obj runtime.Object) *autoscalingv1.Scale {
	m := accessor(obj)
	spec, status, sel := r.Scale.Get(obj)
	return &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
		Spec:   autoscalingv1.ScaleSpec{Replicas: spec},
		Status: autoscalingv1.ScaleStatus{Replicas: status, Selector: sel},
	}
}

var scaleGVK = schema.GroupVersionKind{Group: "autoscaling", Version: "v1", Kind: "Scale"}

// updateScale sets spec.replicas from a Scale.
func (h *Handler) updateScale(w http.ResponseWriter, req *request, body []byte) error {
	obj, err := h.decodeInto(w, req, body, func() runtime.Object { return &autoscalingv1.Scale{} },
		func() (string, string) { return scaleGVK.GroupVersion().String(), scaleGVK.Kind })
	if err != nil {
		return err
	}
	return h.writeScale(w, req, obj.(*autoscalingv1.Scale))
}

func (h *Handler) writeScale(w http.ResponseWriter, req *request, s *autoscalingv1.Scale) error {
	if s.Spec.Replicas < 0 {
		return apierrors.NewInvalid(scaleGVK.GroupKind(), req.name, nil)
	}
	mainReq := *req
	mainReq.sub = ""
	out, err := h.updateObject(req.Context(), &mainReq, 0, func(old runtime.Object) (runtime.Object, error) {
		if s.ResourceVersion != "" && s.ResourceVersion != accessor(old).GetResourceVersion() {
			return nil, apierrors.NewConflict(req.res.GroupVersionResource().GroupResource(), req.name, errors.New(conflictMessage))
		}
		req.res.Scale.Set(old, s.Spec.Replicas)
		return old, nil
	}, true)
	if err != nil {
		return err
	}
	h.writeObject(w, req.out, http.StatusOK, scaleOf(req.res, out))
	return nil
}
