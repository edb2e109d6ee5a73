package kube

import (
	"encoding/json"
	"net/http"
	"sort"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/pontoon-dev/pontoon/api/resource"
)

func (h *Handler) serveVersion(w http.ResponseWriter, r *http.Request) {
	writeJSONObject(w, &h.versionInfo)
}

func writeJSONObject(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", mediaJSON)
	json.NewEncoder(w).Encode(v)
}

// subresource describes a subresource in discovery.
type subresource struct {
	name  string
	kind  schema.GroupVersionKind
	verbs []string
}

func subresources(r *resource.Resource) []subresource {
	var out []subresource
	if r.Status {
		out = append(out, subresource{"status", r.GroupVersionKind(), []string{"get", "patch", "update"}})
	}
	if r.Scale != nil {
		out = append(out, subresource{"scale", scaleGVK, []string{"get", "patch", "update"}})
	}
	for _, a := range r.Actions {
		switch a {
		case "binding":
			out = append(out, subresource{a, schema.GroupVersionKind{Version: "v1", Kind: "Binding"}, []string{"create"}})
		case "eviction":
			out = append(out, subresource{a, schema.GroupVersionKind{Group: "policy", Version: "v1", Kind: "Eviction"}, []string{"create"}})
		}
	}
	for _, s := range r.Streams {
		switch s {
		case "log":
			out = append(out, subresource{s, r.GroupVersionKind(), []string{"get"}})
		case "exec":
			out = append(out, subresource{s, schema.GroupVersionKind{Version: "v1", Kind: "PodExecOptions"}, []string{"create", "get"}})
		case "attach":
			out = append(out, subresource{s, schema.GroupVersionKind{Version: "v1", Kind: "PodAttachOptions"}, []string{"create", "get"}})
		case "portforward":
			out = append(out, subresource{s, schema.GroupVersionKind{Version: "v1", Kind: "PodPortForwardOptions"}, []string{"create", "get"}})
		case "proxy":
			out = append(out, subresource{s, schema.GroupVersionKind{Version: "v1", Kind: r.Kind + "ProxyOptions"}, []string{"create", "delete", "get", "patch", "update"}})
		}
	}
	for _, p := range r.Parts {
		out = append(out, subresource{p, r.GroupVersionKind(), []string{"get", "patch", "update"}})
	}
	if r.Name == "namespaces" {
		out = append(out, subresource{"finalize", r.GroupVersionKind(), []string{"update"}})
	}
	return out
}

// resourceList is the legacy discovery document of one group version.
func (h *Handler) resourceList(gv schema.GroupVersion) *metav1.APIResourceList {
	l := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String()}
	for _, r := range h.registry.In(gv) {
		l.APIResources = append(l.APIResources, metav1.APIResource{Name: r.Name, SingularName: r.SingularName, Namespaced: r.Namespaced,
			Kind: r.Kind, Verbs: r.Verbs(), ShortNames: r.ShortNames, Categories: r.Categories})
		for _, s := range subresources(r) {
			ar := metav1.APIResource{Name: r.Name + "/" + s.name, Namespaced: r.Namespaced, Kind: s.kind.Kind, Verbs: s.verbs}
			if s.kind.GroupVersion() != gv {
				ar.Group, ar.Version = s.kind.Group, s.kind.Version
			}
			l.APIResources = append(l.APIResources, ar)
		}
	}
	return l
}

func (h *Handler) groups() map[string][]schema.GroupVersion {
	out := map[string][]schema.GroupVersion{}
	for _, gv := range h.registry.GroupVersions() {
		out[gv.Group] = append(out[gv.Group], gv)
	}
	return out
}

func apiGroup(name string, gvs []schema.GroupVersion) metav1.APIGroup {
	g := metav1.APIGroup{TypeMeta: metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}, Name: name}
	for _, gv := range gvs {
		g.Versions = append(g.Versions, metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version})
	}
	g.PreferredVersion = g.Versions[0]
	return g
}

func (h *Handler) discoveryAPI(w http.ResponseWriter, r *http.Request) {
	h.serveDiscovery(w, r, true)
}

func (h *Handler) discoveryAPIs(w http.ResponseWriter, r *http.Request) {
	h.serveDiscovery(w, r, false)
}

// serveDiscovery answers /api and /apis, aggregated when the client asks
// for it (one request for everything) and legacy otherwise.
func (h *Handler) serveDiscovery(w http.ResponseWriter, r *http.Request, core bool) {
	out, err := h.negotiate(r, asDiscovery)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if out.kind == asDiscovery {
		l := h.aggregated(core)
		w.Header().Set("Content-Type", out.info.MediaType+";g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList")
		w.WriteHeader(http.StatusOK)
		out.info.Serializer.Encode(l, w)
		return
	}
	if core {
		h.writeObject(w, out, http.StatusOK, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: r.Host}}})
		return
	}
	l := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
	groups := h.groups()
	for _, name := range sortedGroups(groups) {
		if name != "" {
			l.Groups = append(l.Groups, apiGroup(name, groups[name]))
		}
	}
	h.writeObject(w, out, http.StatusOK, l)
}

func sortedGroups(groups map[string][]schema.GroupVersion) []string {
	var names []string
	for name := range groups {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func (h *Handler) discoveryGroup(w http.ResponseWriter, r *http.Request, name string) {
	gvs, ok := h.groups()[name]
	if !ok || name == "" {
		h.writeDiscovery(w, r, nil)
		return
	}
	g := apiGroup(name, gvs)
	h.writeDiscovery(w, r, &g)
}

func (h *Handler) discoveryGroupVersion(w http.ResponseWriter, r *http.Request, gv schema.GroupVersion) {
	if len(h.registry.In(gv)) == 0 {
		h.writeDiscovery(w, r, nil)
		return
	}
	h.writeDiscovery(w, r, h.resourceList(gv))
}

// writeDiscovery writes a legacy discovery document, or 404 for nil.
func (h *Handler) writeDiscovery(w http.ResponseWriter, r *http.Request, doc runtime.Object) {
	if doc == nil {
		h.writeError(w, r, NoSuchPath())
		return
	}
	out, err := h.negotiate(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	h.writeObject(w, out, http.StatusOK, doc)
}

// aggregated is the aggregated discovery document of the core group or of
// the named groups.
func (h *Handler) aggregated(core bool) runtime.Object {
	l := &apidiscoveryv2.APIGroupDiscoveryList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupDiscoveryList", APIVersion: "apidiscovery.k8s.io/v2"}}
	groups := h.groups()
	for _, name := range sortedGroups(groups) {
		if (name == "") != core {
			continue
		}
		g := apidiscoveryv2.APIGroupDiscovery{ObjectMeta: metav1.ObjectMeta{Name: name}}
		for _, gv := range groups[name] {
			v := apidiscoveryv2.APIVersionDiscovery{Version: gv.Version, Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent}
			for _, r := range h.registry.In(gv) {
				scope := apidiscoveryv2.ScopeCluster
				if r.Namespaced {
					scope = apidiscoveryv2.ScopeNamespace
				}
				gvk := r.GroupVersionKind()
				rd := apidiscoveryv2.APIResourceDiscovery{Resource: r.Name, SingularResource: r.SingularName, Scope: scope,
					ResponseKind: &metav1.GroupVersionKind{Group: gvk.Group, Version: gvk.Version, Kind: gvk.Kind},
					Verbs:        r.Verbs(), ShortNames: r.ShortNames, Categories: r.Categories}
				for _, s := range subresources(r) {
					rd.Subresources = append(rd.Subresources, apidiscoveryv2.APISubresourceDiscovery{Subresource: s.name,
						ResponseKind: &metav1.GroupVersionKind{Group: s.kind.Group, Version: s.kind.Version, Kind: s.kind.Kind}, Verbs: s.verbs})
				}
				v.Resources = append(v.Resources, rd)
			}
			g.Versions = append(g.Versions, v)
		}
		l.Items = append(l.Items, g)
	}
	return l
}
