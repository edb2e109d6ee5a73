// Package resource is the registry of the Kubernetes resources a server
// serves. Each resource is one entry: its names, scope and subresources,
// and the hooks that make it behave as kube-apiserver's does (defaulting,
// validation, table columns, selectable fields). The REST handler in
// package kube is generic over these entries, so adding a resource is
// adding an entry, not a handler.
package resource

import (
	"reflect"
	"sort"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Column is one column of a resource's table (kubectl get), with the
// function that fills it for an object.
type Column struct {
	metav1.TableColumnDefinition
	Cell func(obj runtime.Object) any
}

// Scale describes a /scale subresource: where the replica counts live.
type Scale struct {
	// Replicas reads spec.replicas, status.replicas and the label
	// selector (as a string) from the object.
	Get func(obj runtime.Object) (spec, status int32, selector string)
	// Set writes spec.replicas.
	Set func(obj runtime.Object, replicas int32)
}

// Resource is one served resource.
type Resource struct {
	GroupVersion schema.GroupVersion
	// Name is the plural resource name in URLs (pods).
	Name         string
	SingularName string
	Kind         string
	Namespaced   bool
	ShortNames   []string
	Categories   []string

	// Status says the resource has a /status subresource: the main
	// resource ignores status changes and /status ignores everything else.
	Status bool
	// Scale, when set, serves /scale.
	Scale *Scale
	// Generation says that metadata.generation counts spec changes.
	Generation bool
	// Actions are POST-only subresources such as pods/binding.
	Actions []string
	// Parts are subresources that read the object and write one part of
	// its spec, and nothing else (pods/ephemeralcontainers).
	Parts []string
	// Streams are the subresources proxied to a node's kubelet (pods/log,
	// pods/exec…, nodes/proxy) or to pods (pods/proxy, services/proxy).
	Streams []string

	// New returns an empty object of the kind; NewList an empty list (nil
	// for a review, never listed).
	New     func() runtime.Object
	NewList func() runtime.Object

	// Names validates object names; nil means DNS subdomains, the rule
	// of most resources.
	Names validation.ValidateNameFunc

	// Default fills in defaults, as kube-apiserver's defaulting does
	// before validation. It may be nil.
	Default func(obj runtime.Object)
	// PrepareCreate completes a new object once its metadata (uid, name)
	// is set, before validation. It may be nil.
	PrepareCreate func(obj runtime.Object)
	// PrepareUpdate adjusts an update of the object (not of its status)
	// to the stored version old, before validation. It may be nil.
	PrepareUpdate func(obj, old runtime.Object)
	// Validate checks an object about to be stored; old is nil on create.
	// It may be nil.
	Validate func(obj, old runtime.Object) field.ErrorList
	// Columns are the table columns, after NAME unless one of them is
	// named Name (events place it last); those with Priority 1 show only
	// with -o wide.
	Columns []Column
	// Fields returns the field selector values beyond metadata.name and
	// metadata.namespace. It may be nil.
	Fields func(obj runtime.Object) fields.Set

	// Review, when set, makes the resource a review, as the access
	// reviews are: it is only created, and a create is answered with the
	// object as Review fills in its status, never stored. Validate checks
	// it first, metadata included; an error from Review is the answer.
	Review func(obj runtime.Object) error
}

// GroupVersionKind is the resource's kind with its group and version.
func (r *Resource) GroupVersionKind() schema.GroupVersionKind {
	return r.GroupVersion.WithKind(r.Kind)
}

// GroupVersionResource names the resource.
func (r *Resource) GroupVersionResource() schema.GroupVersionResource {
	return r.GroupVersion.WithResource(r.Name)
}

// NameRule returns the validation of the resource's object names.
func (r *Resource) NameRule() validation.ValidateNameFunc {
	if r.Names == nil {
		return validation.NameIsDNSSubdomain
	}
	return r.Names
}

// SelectableFields returns every field a field selector may name for obj.
func (r *Resource) SelectableFields(obj runtime.Object, meta metav1.Object) fields.Set {
	set := fields.Set{"metadata.name": meta.GetName()}
	if r.Namespaced {
		set["metadata.namespace"] = meta.GetNamespace()
	}
	if r.Fields != nil {
		for k, v := range r.Fields(obj) {
			set[k] = v
		}
	}
	return set
}

// Verbs lists what the main resource supports, as discovery shows it.
func (r *Resource) Verbs() []string {
	if r.Review != nil {
		return []string{"create"}
	}
	return []string{"create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"}
}

// SpecChanged reports whether obj's spec differs from old's; objects
// without a spec compare everything but metadata and status.
func SpecChanged(obj, old runtime.Object) bool {
	a, b := reflect.ValueOf(obj).Elem(), reflect.ValueOf(old).Elem()
	if f := a.FieldByName("Spec"); f.IsValid() {
		return !apiequality.Semantic.DeepEqual(f.Interface(), b.FieldByName("Spec").Interface())
	}
	return false
}

// CopyStatus sets dst's status to src's. Objects without a status are
// left alone.
func CopyStatus(dst, src runtime.Object) {
	d := reflect.ValueOf(dst).Elem().FieldByName("Status")
	if d.IsValid() && d.CanSet() {
		d.Set(reflect.ValueOf(src).Elem().FieldByName("Status"))
	}
}

// CopySpec sets dst's spec to src's, for status updates.
func CopySpec(dst, src runtime.Object) {
	d := reflect.ValueOf(dst).Elem().FieldByName("Spec")
	if d.IsValid() && d.CanSet() {
		d.Set(reflect.ValueOf(src).Elem().FieldByName("Spec"))
	}
}

// ClearStatus resets obj's status to its zero value, as a create through
// the main resource does.
func ClearStatus(obj runtime.Object) {
	s := reflect.ValueOf(obj).Elem().FieldByName("Status")
	if s.IsValid() && s.CanSet() {
		s.Set(reflect.Zero(s.Type()))
	}
}

// Registry holds the served resources.
type Registry struct {
	byGVR    map[schema.GroupVersionResource]*Resource
	ordered  []*Resource
	versions []schema.GroupVersion
}

// NewRegistry returns a registry of the given resources.
func NewRegistry(resources ...*Resource) *Registry {
	reg := &Registry{byGVR: map[schema.GroupVersionResource]*Resource{}}
	seen := map[schema.GroupVersion]bool{}
	for _, r := range resources {
		reg.byGVR[r.GroupVersionResource()] = r
		reg.ordered = append(reg.ordered, r)
		if !seen[r.GroupVersion] {
			seen[r.GroupVersion] = true
			reg.versions = append(reg.versions, r.GroupVersion)
		}
	}
	sort.SliceStable(reg.ordered, func(i, j int) bool { return reg.ordered[i].Name < reg.ordered[j].Name })
	return reg
}

// Lookup returns the resource served at gvr.
func (reg *Registry) Lookup(gvr schema.GroupVersionResource) (*Resource, bool) {
	r, ok := reg.byGVR[gvr]
	return r, ok
}

// ForKind returns the resource of a kind.
func (reg *Registry) ForKind(gvk schema.GroupVersionKind) (*Resource, bool) {
	for _, r := range reg.ordered {
		if r.GroupVersionKind() == gvk {
			return r, true
		}
	}
	return nil, false
}

// GroupVersions lists the served group versions, the core group first.
func (reg *Registry) GroupVersions() []schema.GroupVersion { return reg.versions }

// In returns the resources of one group version, sorted by name.
func (reg *Registry) In(gv schema.GroupVersion) []*Resource {
	var out []*Resource
	for _, r := range reg.ordered {
		if r.GroupVersion == gv {
			out = append(out, r)
		}
	}
	return out
}
