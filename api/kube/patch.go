package kube

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"reflect"
	goruntime "runtime"

	jsonpatch "github.com/evanphx/json-patch/v5"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"sigs.k8s.io/yaml"
)

// patch serves the four patch types: JSON Patch, JSON merge patch,
// strategic merge patch, and server-side apply.
func (h *Handler) patch(w http.ResponseWriter, req *request) error {
	body, err := readBody(req)
	if err != nil {
		return err
	}
	mt, _, _ := mime.ParseMediaType(req.Header.Get("Content-Type"))
	pt := types.PatchType(mt)
	switch pt {
	case types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType:
	case types.ApplyYAMLPatchType:
		return h.apply(w, req, body)
	default:
		return statusError(http.StatusUnsupportedMediaType, "UnsupportedMediaType",
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: %s, %s, %s, %s",
				types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType, types.ApplyYAMLPatchType))
	}
	jsonInfo := h.jsonInfo()
	if req.sub == "scale" {
		cur, err := h.objects.getCurrent(req.Context(), req.res, req.namespace, req.name, 0)
		if err != nil {
			return err
		}
		patched, err := h.patches.apply(req.Context(), pt, scaleOf(req.res, cur.obj), body)
		if err != nil {
			return err
		}
		obj, err := h.decodeWith(w, req, jsonInfo, patched, func() runtime.Object { return &autoscalingv1.Scale{} },
			func() (string, string) { return scaleGVK.GroupVersion().String(), scaleGVK.Kind })
		if err != nil {
			return err
		}
		return h.writeScale(w, req, obj.(*autoscalingv1.Scale))
	}
	out, err := h.updateObject(req.Context(), req, 0, func(old runtime.Object) (runtime.Object, error) {
		old.GetObjectKind().SetGroupVersionKind(req.res.GroupVersionKind())
		patched, err := h.patches.apply(req.Context(), pt, old, body)
		if err != nil {
			return nil, err
		}
		return h.decodeWith(w, req, jsonInfo, patched, req.res.New,
			func() (string, string) { return req.res.GroupVersion.String(), req.res.Kind })
	}, true)
	if err != nil {
		return err
	}
	return h.writeResult(w, req, http.StatusOK, out)
}

// A JSON patch is bounded as kube-apiserver bounds it: in operations, and
// in what its copy operations may add, so that a few kilobytes of
// copies cannot double an object thirty times over. Nothing larger than
// a stored object could be stored anyway.
const (
	maxJSONPatchOperations = 10000
	maxJSONPatchCopyBytes  = maxBodySize
)

// patcher applies patches, a bounded number at once. A patch is CPU work
// that nothing can stop halfway (issue 20 reports a strategic merge patch
// of 700 KB that took 30 CPU-seconds; one of 8,000 containers took 5.5
// here): its request gets a timeout when its context ends, the work goes
// on, and the bound keeps such work to one fewer goroutine than there are
// cores, leaving a core to Raft and to every other request.
type patcher struct {
	slots chan struct{}
}

func newPatcher() *patcher {
	return &patcher{slots: make(chan struct{}, max(1, goruntime.GOMAXPROCS(0)-1))}
}

type patched struct {
	out []byte
	err error
}

// apply applies patch to obj, or gives up when ctx ends first.
func (p *patcher) apply(ctx context.Context, pt types.PatchType, obj runtime.Object, patch []byte) ([]byte, error) {
	cur, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	// The patch may outlive the request: it gets an object of its own
	// for the strategic merge patch's schema, not the caller's.
	schema := reflect.New(reflect.TypeOf(obj).Elem()).Interface()
	gaveUp := apierrors.NewTimeoutError("the patch was not applied within the request's timeout", 0)
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, gaveUp
	}
	done := make(chan patched, 1)
	go func() {
		var r patched
		defer func() {
			// Off the request's goroutine, a panic of the patch library
			// would stop the server, where net/http would have caught it.
			if v := recover(); v != nil {
				r.err = apierrors.NewBadRequest(fmt.Sprintf("the patch could not be applied: %v", v))
			}
			<-p.slots
			done <- r
		}()
		r.out, r.err = applyPatch(pt, cur, schema, patch)
	}()
	select {
	case r := <-done:
		return r.out, r.err
	case <-ctx.Done():
		return nil, gaveUp
	}
}

// applyPatch applies a JSON, merge or strategic merge patch to cur, an
// object's JSON; schema is an object of its type.
func applyPatch(pt types.PatchType, cur []byte, schema any, patch []byte) ([]byte, error) {
	var out []byte
	var err error
	switch pt {
	case types.JSONPatchType:
		p, perr := jsonpatch.DecodePatch(patch)
		if perr != nil {
			return nil, apierrors.NewBadRequest(perr.Error())
		}
		if len(p) > maxJSONPatchOperations {
			return nil, apierrors.NewRequestEntityTooLargeError(
				fmt.Sprintf("The allowed maximum operations in a JSON patch is %d, got %d", maxJSONPatchOperations, len(p)))
		}
		opts := jsonpatch.NewApplyOptions()
		opts.AccumulatedCopySizeLimit = maxJSONPatchCopyBytes
		out, err = p.ApplyWithOptions(cur, opts)
		var tooLarge *jsonpatch.AccumulatedCopySizeError
		if errors.As(err, &tooLarge) {
			return nil, apierrors.NewRequestEntityTooLargeError(tooLarge.Error())
		}
	case types.MergePatchType:
		out, err = jsonpatch.MergePatch(cur, patch)
	case types.StrategicMergePatchType:
		out, err = strategicpatch.StrategicMergePatch(cur, patch, schema)
	}
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch could not be applied: %v", err))
	}
	return out, nil
}

// apply serves server-side apply: the applied configuration is merged into
// the stored object (or creates it) by the field manager, which records
// ownership in managedFields and refuses to take fields another manager
// owns unless forced.
func (h *Handler) apply(w http.ResponseWriter, req *request, body []byte) error {
	q := req.URL.Query()
	manager := q.Get("fieldManager")
	if manager == "" {
		return apierrors.NewBadRequest("PATCH with apply requires fieldManager")
	}
	force := q.Get("force") == "true"
	patch := &unstructured.Unstructured{}
	if err := yaml.Unmarshal(body, &patch.Object); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("error decoding YAML: %v", err))
	}
	if patch.Object == nil {
		return apierrors.NewBadRequest("the applied configuration is empty")
	}
	r := req.res
	if patch.GetAPIVersion() != r.GroupVersion.String() || patch.GetKind() != r.Kind {
		return apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s) or kind %s",
			patch.GetAPIVersion(), r.GroupVersion, r.Kind))
	}
	if patch.GetName() != "" && patch.GetName() != req.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", patch.GetName(), req.name))
	}
	if req.sub == "scale" {
		return apierrors.NewMethodNotSupported(r.GroupVersionResource().GroupResource(), "apply to scale")
	}
	fm := h.fields.get(r, req.sub)
	applied := *req
	applied.applied = true
	out, err := h.updateObject(req.Context(), &applied, 0, func(old runtime.Object) (runtime.Object, error) {
		return fm.Apply(old, patch.DeepCopy(), manager, force)
	}, true)
	if apierrors.IsNotFound(err) && req.sub == "" {
		empty := r.New()
		empty.GetObjectKind().SetGroupVersionKind(r.GroupVersionKind())
		obj, err := fm.Apply(empty, patch.DeepCopy(), manager, force)
		if err != nil {
			return err
		}
		m := accessor(obj)
		m.SetName(req.name)
		if out, err = h.createObject(req.Context(), &applied, obj); err != nil {
			return err
		}
		return h.writeResult(w, req, http.StatusCreated, out)
	}
	if err != nil {
		return err
	}
	return h.writeResult(w, req, http.StatusOK, out)
}
