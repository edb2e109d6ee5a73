package kube

import (
	"fmt"
	"net/http"
	"strings"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/kube-openapi/pkg/validation/spec"
	"sigs.k8s.io/structured-merge-diff/v4/fieldpath"

	"github.com/pontoon-dev/pontoon/api/resource"
)

// fieldManagers track managedFields on every write and merge server-side
// apply patches, with apimachinery's field manager over the types'
// OpenAPI schemas, as kube-apiserver does. As there, the field manager
// converts with runtime.UnsafeObjectConvertor: an object already in the
// version it asks for is used as it is rather than deep-copied, which is
// safe because every object it is given belongs to the one request (none
// comes from sharedObjects).
type fieldManagers struct {
	byKind map[schema.GroupVersionKind]map[string]*managedfields.FieldManager
}

// registryDefaulter applies the registry's defaults where the field
// manager asks the scheme to.
type registryDefaulter struct{ reg *resource.Registry }

func (d registryDefaulter) Default(obj runtime.Object) {
	if r, ok := d.reg.ForKind(obj.GetObjectKind().GroupVersionKind()); ok && r.Default != nil {
		r.Default(obj)
	}
}

func newFieldManagers(schemas map[string]*spec.Schema, scheme *runtime.Scheme, reg *resource.Registry) (*fieldManagers, error) {
	tc, err := managedfields.NewTypeConverter(schemas, false)
	if err != nil {
		return nil, fmt.Errorf("kube: type converter: %w", err)
	}
	f := &fieldManagers{byKind: map[schema.GroupVersionKind]map[string]*managedfields.FieldManager{}}
	for _, gv := range reg.GroupVersions() {
		for _, r := range reg.In(gv) {
			subs := []string{""}
			if r.Status {
				subs = append(subs, "status")
			}
			if r.Scale != nil {
				subs = append(subs, "scale")
			}
			m := map[string]*managedfields.FieldManager{}
			for _, sub := range subs {
				fm, err := managedfields.NewDefaultFieldManager(tc, runtime.UnsafeObjectConvertor(scheme), registryDefaulter{reg}, scheme, r.GroupVersionKind(), gv, sub, resetFields(r, sub))
				if err != nil {
					return nil, fmt.Errorf("kube: field manager for %s: %w", r.Kind, err)
				}
				m[sub] = fm
			}
			f.byKind[r.GroupVersionKind()] = m
		}
	}
	return f, nil
}

// resetFields are the fields a write through sub never owns, as the
// strategies' GetResetFields give them to kube-apiserver's field
// managers: a write of the object itself does not own its status (a pod's
// creator does not own status.phase), and a write of its status does not
// own its spec.
func resetFields(r *resource.Resource, sub string) map[fieldpath.APIVersion]fieldpath.Filter {
	if !r.Status {
		return nil
	}
	reset := "status"
	if sub == "status" {
		reset = "spec"
	}
	return fieldpath.NewExcludeFilterSetMap(map[fieldpath.APIVersion]*fieldpath.Set{
		fieldpath.APIVersion(r.GroupVersion.String()): fieldpath.NewSet(fieldpath.MakePathOrDie(reset)),
	})
}

func (f *fieldManagers) get(r *resource.Resource, sub string) *managedfields.FieldManager {
	if sub == "scale" {
		sub = ""
	}
	return f.byKind[r.GroupVersionKind()][sub]
}

// managerName is the fieldManager query parameter, or the client's name
// from its User-Agent, as kube-apiserver defaults it.
func managerName(r *http.Request) string {
	if m := r.URL.Query().Get("fieldManager"); m != "" {
		return m
	}
	ua := r.Header.Get("User-Agent")
	if i := strings.Index(ua, "/"); i >= 0 {
		ua = ua[:i]
	}
	return ua
}
