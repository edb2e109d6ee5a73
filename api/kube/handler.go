// Package kube serves the Kubernetes REST API from the local store: every
// server answers reads and watches itself (linearizable by default, through
// the Raft read barrier) and turns writes into store transactions. It is
// generic over the resources of package resource.
package kube

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/version"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/kubeversion"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// Config wires the Kubernetes API to the server.
type Config struct {
	Node  *raftstore.Node
	Store *fsm.Store
	// ServiceCIDR is the range ClusterIPs are allocated from.
	ServiceCIDR *net.IPNet
	Logger      *slog.Logger
	// StatusFor maps any error to the Status a client gets: a Status
	// error as it is, the lower layers' (no leader, timeouts) to theirs.
	StatusFor func(error) *metav1.Status
	// EventTTL is how long an event is kept after its last write; zero
	// keeps events for ever.
	EventTTL time.Duration
	// AtRest are the transformers of an EncryptionConfiguration by
	// resource (encryptionconfig.LoadEncryptionConfig); none stores every
	// object as it is encoded.
	AtRest map[schema.GroupResource]value.Transformer
}

// Handler serves /api, /apis, /version and /openapi.
type Handler struct {
	cfg      Config
	registry *resource.Registry
	scheme   *runtime.Scheme
	codecs   serializer.CodecFactory
	objects  *objects
	fields   *fieldManagers
	ips      *ipAllocator
	openapi  *openAPI
	events   *eventCache
	patches  *patcher
	// podTransport reaches pods for pods/proxy and services/proxy.
	podTransport *http.Transport
	// versionInfo is what /version answers, read from the build once.
	versionInfo version.Info
}

// New builds the handler.
func New(cfg Config) (*Handler, error) {
	scheme, err := newScheme()
	if err != nil {
		return nil, fmt.Errorf("kube: scheme: %w", err)
	}
	h := &Handler{cfg: cfg, registry: resource.Builtin(), scheme: scheme, codecs: newCodecs(scheme), versionInfo: kubeversion.Info()}
	h.objects = newObjects(cfg.Node, cfg.Store, scheme, atRestTransformers(h.registry, cfg.AtRest))
	var schemas map[string]*spec.Schema
	if h.openapi, schemas, err = loadOpenAPI(h.registry); err != nil {
		return nil, err
	}
	if h.fields, err = newFieldManagers(schemas, scheme, h.registry); err != nil {
		return nil, err
	}
	h.ips = newIPAllocator(cfg.ServiceCIDR, cfg.Store, h.registry, h.objects)
	h.events = newEventCache()
	h.patches = newPatcher()
	h.podTransport = newPodTransport()
	return h, nil
}

// Register adds the handler's routes to mux.
func (h *Handler) Register(mux *http.ServeMux) {
	mux.HandleFunc("GET /version", h.serveVersion)
	mux.HandleFunc("GET /api", h.discoveryAPI)
	mux.HandleFunc("GET /apis", h.discoveryAPIs)
	mux.HandleFunc("/api/", h.serve)
	mux.HandleFunc("/apis/", h.serve)
	mux.HandleFunc("GET /openapi/v2", h.openapi.serveV2)
	mux.HandleFunc("GET /openapi/v3", h.openapi.serveV3Index)
	mux.HandleFunc("GET /openapi/v3/{path...}", h.openapi.serveV3)
}

// request is a parsed resource URL.
type request struct {
	*http.Request
	gv        schema.GroupVersion
	res       *resource.Resource
	namespace string
	name      string
	sub       string
	// proxyPath is the path after nodes/, pods/ or services/NAME/proxy/.
	proxyPath string
	out       output
	// applied says the update function has merged managedFields itself
	// (server-side apply).
	applied bool
}

// namespaceSubresources are the subresources of a namespace, which would
// otherwise read as resources inside it.
var namespaceSubresources = map[string]bool{"status": true, "finalize": true}

// parse splits /api/v1/... and /apis/<group>/<version>/... into their
// parts, as kube-apiserver's RequestInfoFactory does.
func (h *Handler) parse(r *http.Request) (*request, []string, error) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	req := &request{Request: r}
	switch {
	case parts[0] == "api" && len(parts) >= 2:
		req.gv, parts = schema.GroupVersion{Version: parts[1]}, parts[2:]
	case parts[0] == "apis" && len(parts) >= 3:
		req.gv, parts = schema.GroupVersion{Group: parts[1], Version: parts[2]}, parts[3:]
	case parts[0] == "apis" && len(parts) == 2:
		// /apis/<group>: the group's discovery document.
		return req, nil, nil
	default:
		return req, parts, nil
	}
	if len(parts) == 0 {
		return req, nil, nil
	}
	if parts[0] == "namespaces" && len(parts) > 1 {
		req.namespace = parts[1]
		if len(parts) > 2 && !namespaceSubresources[parts[2]] {
			parts = parts[2:]
		} else {
			// The namespace object itself.
			req.namespace, parts = "", append([]string{"namespaces", parts[1]}, parts[2:]...)
		}
	}
	res, ok := h.registry.Lookup(req.gv.WithResource(parts[0]))
	if !ok {
		return nil, nil, NoSuchPath()
	}
	req.res = res
	if len(parts) > 1 {
		req.name = parts[1]
	}
	if len(parts) > 2 {
		req.sub = parts[2]
	}
	if req.sub == "proxy" && len(parts) > 3 {
		req.proxyPath, parts = strings.Join(parts[3:], "/"), parts[:3]
		if strings.HasSuffix(r.URL.Path, "/") {
			req.proxyPath += "/"
		}
	}
	if len(parts) > 3 || (!res.Namespaced && req.namespace != "") {
		return nil, nil, NoSuchPath()
	}
	return req, parts, nil
}

func (h *Handler) serve(w http.ResponseWriter, r *http.Request) {
	req, parts, err := h.parse(r)
	if err != nil {
		h.writeError(w, r, err)
		return
	}
	if req.res == nil {
		if len(parts) == 0 && r.Method == http.MethodGet && req.gv.Version != "" {
			h.discoveryGroupVersion(w, r, req.gv)
			return
		}
		if len(parts) == 0 && r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/apis/") {
			h.discoveryGroup(w, r, strings.Trim(strings.TrimPrefix(r.URL.Path, "/apis/"), "/"))
			return
		}
		h.writeError(w, r, NoSuchPath())
		return
	}
	if err := h.route(w, req); err != nil {
		h.writeError(w, r, err)
	}
}

// route dispatches a resource request to its verb.
func (h *Handler) route(w http.ResponseWriter, req *request) error {
	if err := h.checkSubresource(req); err != nil {
		return err
	}
	if slices.Contains(req.res.Streams, req.sub) && req.name != "" {
		switch {
		case req.sub != "proxy":
			return h.podStream(w, req)
		case req.res.Name == "pods":
			return h.podProxy(w, req)
		case req.res.Name == "services":
			return h.serviceProxy(w, req)
		}
		return h.nodeProxy(w, req)
	}
	allowed := []outputKind{asPartialMetadata}
	if req.Method == http.MethodGet {
		allowed = append(allowed, asTable)
	}
	out, err := h.negotiate(req.Request, allowed...)
	if err != nil {
		return err
	}
	req.out = out
	if req.res.Review != nil && (req.Method != http.MethodPost || req.name != "") {
		// A review is only created.
		return apierrors.NewMethodNotSupported(req.res.GroupVersionResource().GroupResource(), strings.ToLower(req.Method))
	}
	q := req.URL.Query()
	switch {
	case req.Method == http.MethodGet && req.name == "":
		if q.Get("watch") == "true" || q.Get("watch") == "1" {
			return h.watch(w, req)
		}
		return h.list(w, req)
	case req.Method == http.MethodGet:
		return h.get(w, req)
	case req.Method == http.MethodPost && req.name == "":
		return h.create(w, req)
	case req.Method == http.MethodPost && (req.sub == "binding" || req.sub == "eviction"):
		return h.action(w, req)
	case req.Method == http.MethodPut && req.name != "":
		return h.update(w, req)
	case req.Method == http.MethodPatch && req.name != "":
		return h.patch(w, req)
	case req.Method == http.MethodDelete && req.name == "":
		return h.deleteCollection(w, req)
	case req.Method == http.MethodDelete && req.sub == "":
		return h.delete(w, req)
	}
	return apierrors.NewMethodNotSupported(req.res.GroupVersionResource().GroupResource(), strings.ToLower(req.Method))
}

// checkSubresource refuses a subresource the resource does not have, as
// discovery lists them.
func (h *Handler) checkSubresource(req *request) error {
	if req.sub == "" {
		return nil
	}
	if req.name != "" && slices.ContainsFunc(subresources(req.res), func(s subresource) bool { return s.name == req.sub }) {
		return nil
	}
	return NoSuchPath()
}

// NoSuchPath is the answer to a path the API does not serve: a resource,
// subresource or group it does not have. kube-apiserver answers those
// with a bare 404, which client-go reports as "the server could not find
// the requested resource"; this is that, as a Status.
func NoSuchPath() error {
	return apierrors.NewGenericServerResponse(http.StatusNotFound, "", schema.GroupResource{}, "", "", 0, false)
}

// writeObject encodes obj in the negotiated format.
func (h *Handler) writeObject(w http.ResponseWriter, out output, code int, obj runtime.Object) {
	w.Header().Set("Content-Type", out.info.MediaType)
	w.WriteHeader(code)
	if err := out.info.Serializer.Encode(obj, w); err != nil {
		h.cfg.Logger.Debug("writing response failed", "err", err)
	}
}

// status is the failure Status a client gets for err.
func (h *Handler) status(err error) *metav1.Status {
	st := h.cfg.StatusFor(err)
	st.TypeMeta = metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}
	st.Status = metav1.StatusFailure
	return st
}

// writeError writes err as a Status, in the format the client accepts.
func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	st := h.status(err)
	if st.Code == http.StatusServiceUnavailable || st.Code == http.StatusGatewayTimeout {
		w.Header().Set("Retry-After", "1")
	}
	out, nerr := h.negotiate(r)
	if nerr != nil {
		out = output{info: h.jsonInfo()}
	}
	h.writeObject(w, out, int(st.Code), st)
}

func (h *Handler) jsonInfo() runtime.SerializerInfo {
	info, _ := runtime.SerializerInfoForMediaType(h.codecs.SupportedMediaTypes(), mediaJSON)
	return info
}
