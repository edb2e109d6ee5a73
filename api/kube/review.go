package kube

import (
	"net/http"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// review answers a create of a review resource (resource.Resource.Review):
// the object comes back with its status filled in, and nothing is stored.
// Any other verb is refused, as kube-apiserver refuses it.
func (h *Handler) review(w http.ResponseWriter, req *request) error {
	r := req.res
	if req.Method != http.MethodPost || req.name != "" {
		return apierrors.NewMethodNotSupported(r.GroupVersionResource().GroupResource(), strings.ToLower(req.Method))
	}
	body, err := readBody(req)
	if err != nil {
		return err
	}
	obj, err := h.decodeObject(w, req, body)
	if err != nil {
		return err
	}
	if errs := r.Validate(obj, nil); len(errs) > 0 {
		return invalid(r, "", errs)
	}
	if err := r.Review(obj); err != nil {
		return err
	}
	return h.writeResult(w, req, http.StatusCreated, obj)
}
