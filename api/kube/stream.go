package kube

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	upgradeproxy "k8s.io/apimachinery/pkg/util/proxy"
	apiproxy "k8s.io/apiserver/pkg/util/proxy"
)

// kubeletPath is the kubelet's path for a pod subresource it serves.
func kubeletPath(sub string) string {
	switch sub {
	case "log":
		return "containerLogs"
	case "portforward":
		return "portForward"
	}
	return sub // exec, attach
}

// podStream proxies a pod's log, exec, attach or port-forward request to
// the kubelet of its node, as kube-apiserver does: SPDY upgrades, logs
// and the kubelet's answers pass through; WebSocket exec, attach and
// port-forward are translated to SPDY.
func (h *Handler) podStream(w http.ResponseWriter, req *request) error {
	if err := h.objects.sync(req.Context(), consistency{linearizable: true}); err != nil {
		return err
	}
	cur, err := h.objects.get(req.res, req.namespace, req.name)
	if err != nil {
		return err
	}
	pod := cur.obj.(*corev1.Pod)
	q := req.URL.Query()
	path := "/" + kubeletPath(req.sub) + "/" + pod.Namespace + "/" + pod.Name
	if req.sub != "portforward" {
		container, err := streamContainer(pod, q.Get("container"))
		if err != nil {
			return err
		}
		switch req.sub {
		case "log":
			if err := logsReady(pod, container, q); err != nil {
				return err
			}
		case "exec", "attach":
			if _, err := streamOptions(req.sub, q); err != nil {
				return err
			}
		}
		path += "/" + container
	}
	if pod.Spec.NodeName == "" {
		return apierrors.NewBadRequest(fmt.Sprintf("pod %s does not have a host assigned", pod.Name))
	}
	nodeRes, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("nodes"))
	nodeObj, err := h.objects.get(nodeRes, "", pod.Spec.NodeName)
	if err != nil {
		return apierrors.NewServiceUnavailable(fmt.Sprintf("node %s of pod %s: %v", pod.Spec.NodeName, pod.Name, err))
	}
	host, err := kubeletAddress(nodeObj.obj.(*corev1.Node))
	if err != nil {
		return err
	}
	target := &url.URL{Scheme: "http", Host: host, Path: path, RawQuery: req.URL.RawQuery}
	what := "the kubelet of node " + pod.Spec.NodeName
	r := req.Request
	switch {
	case (req.sub == "exec" || req.sub == "attach") && wsstream.IsWebSocketRequestWithStreamCloseProtocol(r):
		// kubectl 1.30 and later speak WebSocket (v5.channel.k8s.io) for
		// exec and attach; the kubelet speaks SPDY. As kube-apiserver
		// does, the server ends the WebSocket and is the SPDY client.
		opts, _ := streamOptions(req.sub, q)
		apiproxy.NewStreamTranslatorHandler(target, nil, 0, opts).ServeHTTP(w, r)
	case req.sub == "portforward" && wsstream.IsWebSocketRequestWithTunnelingProtocol(r):
		// Port-forward tunnels SPDY through a WebSocket: the server takes
		// the SPDY out of the tunnel and proxies it to the kubelet.
		upgrade := upgradeproxy.NewUpgradeAwareHandler(target, nil, false, true, proxyErrors{h, what})
		apiproxy.NewTunnelingHandler(upgrade).ServeHTTP(w, r)
	default:
		h.proxyTo(w, req, target, what)
	}
	return nil
}

// proxyErrors answers a stream the kubelet did not take with a Status.
type proxyErrors struct {
	h    *Handler
	what string
}

func (p proxyErrors) Error(w http.ResponseWriter, r *http.Request, err error) {
	p.h.writeError(w, r, apierrors.NewServiceUnavailable(fmt.Sprintf("%s does not answer: %v", p.what, err)))
}

// streamOptions reads which streams an exec or attach asks for, and
// refuses what the kubelet would: no stream at all, or exec without a
// command.
func streamOptions(sub string, q url.Values) (apiproxy.Options, error) {
	set := func(name string) bool {
		b, _ := strconv.ParseBool(q.Get(name))
		return b
	}
	opts := apiproxy.Options{Stdin: set("stdin"), Stdout: set("stdout"), Stderr: set("stderr"), Tty: set("tty")}
	if !opts.Stdin && !opts.Stdout && !opts.Stderr {
		return opts, apierrors.NewBadRequest("you must specify at least 1 of stdin, stdout, stderr")
	}
	if sub == "exec" && len(q["command"]) == 0 {
		return opts, apierrors.NewBadRequest("you must specify at least one command for the container")
	}
	return opts, nil
}

// streamContainer is the container a request names, or the pod's only
// one (or its default-container annotation, as kubectl sets it).
func streamContainer(pod *corev1.Pod, name string) (string, error) {
	all := append(append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...), ephemeral(pod)...)
	if name == "" {
		if d := pod.Annotations["kubectl.kubernetes.io/default-container"]; d != "" {
			name = d
		} else if len(pod.Spec.Containers) == 1 {
			return pod.Spec.Containers[0].Name, nil
		} else {
			var names []string
			for _, c := range pod.Spec.Containers {
				names = append(names, c.Name)
			}
			return "", apierrors.NewBadRequest(fmt.Sprintf("a container name must be specified for pod %s, choose one of: %v", pod.Name, names))
		}
	}
	for _, c := range all {
		if c.Name == name {
			return name, nil
		}
	}
	return "", apierrors.NewBadRequest(fmt.Sprintf("container %s is not valid for pod %s", name, pod.Name))
}

func ephemeral(pod *corev1.Pod) []corev1.Container {
	var out []corev1.Container
	for _, e := range pod.Spec.EphemeralContainers {
		out = append(out, corev1.Container(e.EphemeralContainerCommon))
	}
	return out
}

// logsReady refuses the logs of a container that has not run yet, as
// kube-apiserver does, and bad log parameters.
func logsReady(pod *corev1.Pod, container string, q url.Values) error {
	for _, p := range []string{"tailLines", "limitBytes", "sinceSeconds"} {
		if v := q.Get(p); v != "" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 || (n == 0 && p != "tailLines") {
				return apierrors.NewBadRequest(fmt.Sprintf("%s %q: must be a %s number", p, v, map[bool]string{true: "non-negative", false: "positive"}[p == "tailLines"]))
			}
		}
	}
	if q.Get("sinceSeconds") != "" && q.Get("sinceTime") != "" {
		return apierrors.NewBadRequest("at most one of sinceTime or sinceSeconds may be specified")
	}
	if previous, _ := strconv.ParseBool(q.Get("previous")); previous {
		return nil
	}
	statuses := append(append(append([]corev1.ContainerStatus{}, pod.Status.InitContainerStatuses...), pod.Status.ContainerStatuses...), pod.Status.EphemeralContainerStatuses...)
	for _, s := range statuses {
		if s.Name == container && s.State.Waiting != nil && s.LastTerminationState.Terminated == nil && s.ContainerID == "" {
			return apierrors.NewBadRequest(fmt.Sprintf("container %q in pod %q is waiting to start: %s", container, pod.Name, s.State.Waiting.Reason))
		}
	}
	return nil
}

// kubeletAddress is where a node's kubelet listens: its InternalIP and
// the port it posts.
func kubeletAddress(n *corev1.Node) (string, error) {
	port := n.Status.DaemonEndpoints.KubeletEndpoint.Port
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && port > 0 {
			return net.JoinHostPort(a.Address, strconv.Itoa(int(port))), nil
		}
	}
	return "", apierrors.NewServiceUnavailable(fmt.Sprintf("node %s has no kubelet endpoint (no InternalIP or port in its status)", n.Name))
}
