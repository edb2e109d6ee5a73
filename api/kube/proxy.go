package kube

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilnet "k8s.io/apimachinery/pkg/util/net"
	upgradeproxy "k8s.io/apimachinery/pkg/util/proxy"
)

// newPodTransport is how the server reaches pods for pods/proxy and
// services/proxy. As kube-apiserver's, it does not verify a pod's
// certificate: a pod's serving certificate names no address the server
// could check it against, and the proxy is for reaching the pod at all.
func newPodTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true}
	return t
}

// nodeProxy proxies nodes/NAME/proxy/PATH to PATH on the node's kubelet,
// as kube-apiserver does (`kubectl get --raw
// /api/v1/nodes/NAME/proxy/stats/summary`).
func (h *Handler) nodeProxy(w http.ResponseWriter, req *request) error {
	if err := h.objects.sync(req.Context(), consistency{linearizable: true}); err != nil {
		return err
	}
	cur, err := h.objects.get(req.res, "", req.name)
	if err != nil {
		return err
	}
	node := cur.obj.(*corev1.Node)
	host, err := kubeletAddress(node)
	if err != nil {
		return err
	}
	return h.proxyTo(w, req, &url.URL{Scheme: "http", Host: host, Path: "/" + req.proxyPath, RawQuery: req.URL.RawQuery}, "the kubelet of node "+node.Name)
}

// proxied reads the object a pods/ or services/ proxy request names as
// [SCHEME:]NAME[:PORT], after a linearizable sync.
func (h *Handler) proxied(req *request) (scheme, name, port string, obj runtime.Object, err error) {
	scheme, name, port, valid := utilnet.SplitSchemeNamePort(req.name)
	if !valid {
		return "", "", "", nil, apierrors.NewBadRequest(fmt.Sprintf("invalid %s request %q", req.res.SingularName, req.name))
	}
	if err := h.objects.sync(req.Context(), consistency{linearizable: true}); err != nil {
		return "", "", "", nil, err
	}
	cur, err := h.objects.get(req.res, req.namespace, name)
	if err != nil {
		return "", "", "", nil, err
	}
	return scheme, name, port, cur.obj, nil
}

// podProxy proxies pods/[SCHEME:]NAME[:PORT]/proxy/PATH to PATH on the
// pod's IP, as kube-apiserver does: the server reaches pods directly, at
// the port given (a number, or the name of one of its containers' ports)
// or else the first port its containers declare, or the scheme's.
func (h *Handler) podProxy(w http.ResponseWriter, req *request) error {
	scheme, name, port, obj, err := h.proxied(req)
	if err != nil {
		return err
	}
	pod := obj.(*corev1.Pod)
	if pod.Status.PodIP == "" {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("pod %s has no IP yet", name))
	}
	var ports []corev1.ContainerPort
	for _, c := range pod.Spec.Containers {
		ports = append(ports, c.Ports...)
	}
	if port == "" && len(ports) > 0 {
		port = strconv.Itoa(int(ports[0].ContainerPort))
	} else if _, err := strconv.Atoi(port); err != nil && port != "" {
		i := slices.IndexFunc(ports, func(p corev1.ContainerPort) bool { return p.Name == port })
		if i < 0 {
			return apierrors.NewBadRequest(fmt.Sprintf("pod %s has no port named %q", name, port))
		}
		port = strconv.Itoa(int(ports[i].ContainerPort))
	}
	host := pod.Status.PodIP
	if port != "" {
		host = net.JoinHostPort(host, port)
	}
	h.proxyToPod(w, req, &url.URL{Scheme: scheme, Host: host}, "pod "+name)
	return nil
}

// serviceProxy proxies services/[SCHEME:]NAME[:PORT]/proxy/PATH to one
// of the Service's endpoints picked at random, as kube-apiserver does:
// PORT is the Service port's name or number (none for a Service's only
// unnamed port), and only endpoints that are pods of the namespace are
// taken.
func (h *Handler) serviceProxy(w http.ResponseWriter, req *request) error {
	scheme, name, port, obj, err := h.proxied(req)
	if err != nil {
		return err
	}
	svc := obj.(*corev1.Service)
	if n, err := strconv.Atoi(port); err == nil {
		i := slices.IndexFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return int(p.Port) == n })
		if i < 0 {
			return apierrors.NewServiceUnavailable(fmt.Sprintf("no service port %d found for service %q", n, name))
		}
		port = svc.Spec.Ports[i].Name
	}
	epRes, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("endpoints"))
	epObj, err := h.objects.get(epRes, req.namespace, name)
	if err != nil {
		return err
	}
	target, ok := h.serviceEndpoint(req.namespace, epObj.obj.(*corev1.Endpoints), port)
	if !ok {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("no endpoints available for service %q", req.name))
	}
	h.proxyToPod(w, req, &url.URL{Scheme: scheme, Host: target}, "service "+name)
	return nil
}

// serviceEndpoint picks a ready address of eps with the named port, at
// random, among those that are pods of namespace with that address.
func (h *Handler) serviceEndpoint(namespace string, eps *corev1.Endpoints, port string) (string, bool) {
	podRes, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("pods"))
	isPod := func(a corev1.EndpointAddress) bool {
		if a.TargetRef == nil || a.TargetRef.Namespace != namespace {
			return false
		}
		cur, err := h.objects.get(podRes, namespace, a.TargetRef.Name)
		if err != nil {
			return false
		}
		return slices.ContainsFunc(cur.obj.(*corev1.Pod).Status.PodIPs, func(ip corev1.PodIP) bool { return ip.IP == a.IP })
	}
	subsets := eps.Subsets
	first := 0
	if len(subsets) > 0 {
		first = rand.IntN(len(subsets))
	}
	for i := range subsets {
		ss := subsets[(first+i)%len(subsets)]
		pi := slices.IndexFunc(ss.Ports, func(p corev1.EndpointPort) bool { return p.Name == port })
		if pi < 0 || len(ss.Addresses) == 0 {
			continue
		}
		start := rand.IntN(len(ss.Addresses))
		for j := range ss.Addresses {
			if a := ss.Addresses[(start+j)%len(ss.Addresses)]; isPod(a) {
				return net.JoinHostPort(a.IP, strconv.Itoa(int(ss.Ports[pi].Port))), true
			}
		}
	}
	return "", false
}

// proxyToPod proxies the request to PATH at target, as kube-apiserver
// proxies to pods and Services: links in HTML answers are rewritten to go
// through the proxy again, a GET of the bare proxy path is redirected to
// it with a trailing slash, and upgrades pass through.
func (h *Handler) proxyToPod(w http.ResponseWriter, req *request, target *url.URL, what string) {
	if req.proxyPath != "" {
		target.Path = "/" + req.proxyPath
	}
	proxy := upgradeproxy.NewUpgradeAwareHandler(target, h.podTransport, true, false, proxyErrors{h, what})
	proxy.ServeHTTP(w, req.Request)
}

// proxyTo proxies the request to target; what names it in an error.
func (h *Handler) proxyTo(w http.ResponseWriter, req *request, target *url.URL, what string) error {
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL = target
			pr.Out.Host = target.Host
		},
		FlushInterval: -1,
		ErrorHandler:  proxyErrors{h, what}.Error,
	}
	proxy.ServeHTTP(w, req.Request)
	return nil
}
