package kube

import (
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pontoon-dev/pontoon/api/resource"
)

// review answers the create of a review (resource.Resource.Review): the
// object comes back with its status filled in, and nothing is stored.
func review(r *resource.Resource, obj runtime.Object) (runtime.Object, error) {
	if errs := r.Validate(obj, nil); len(errs) > 0 {
		return nil, invalid(r, "", errs)
	}
	if err := r.Review(obj); err != nil {
		return nil, err
	}
	return obj, nil
}
