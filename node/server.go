package node

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/httpstream/wsstream"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Handler is the kubelet's HTTP endpoint, to which the API servers proxy
// pods' log, exec, attach and port-forward subresources (with the
// kubelet's paths) and nodes/proxy: logs are read from the CRI log files,
// streams are proxied on to the runtime's streaming server, /pods lists
// the pods bound to the node and /stats/summary is the node's and its
// pods' resource usage.
func (k *Kubelet) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.HandleFunc("GET /pods", k.servePods)
	mux.HandleFunc("GET /stats/summary", k.serveSummary)
	mux.HandleFunc("GET /containerLogs/{namespace}/{pod}/{container}", k.serveLogs)
	mux.HandleFunc("/exec/{namespace}/{pod}/{container}", k.serveExec)
	mux.HandleFunc("/attach/{namespace}/{pod}/{container}", k.serveAttach)
	mux.HandleFunc("/portForward/{namespace}/{pod}", k.servePortForward)
	return mux
}

// servePods lists the pods bound to the node, as the kubelet's /pods.
func (k *Kubelet) servePods(w http.ResponseWriter, r *http.Request) {
	list := corev1.PodList{TypeMeta: metav1.TypeMeta{Kind: "PodList", APIVersion: "v1"}}
	for _, obj := range k.pods.List() {
		list.Items = append(list.Items, *obj.(*corev1.Pod))
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(list)
}

// podFor returns the pod of a request's path, and what the runtime holds
// for it.
func (k *Kubelet) podFor(r *http.Request) (*corev1.Pod, *observed, int, error) {
	key := r.PathValue("namespace") + "/" + r.PathValue("pod")
	obj, ok, err := k.pods.GetByKey(key)
	if err != nil || !ok {
		return nil, nil, http.StatusNotFound, fmt.Errorf("pod %s is not on this node", key)
	}
	pod := obj.(*corev1.Pod)
	o, err := k.observe(r.Context(), pod.UID)
	if err != nil {
		return nil, nil, http.StatusInternalServerError, err
	}
	return pod, o, 0, nil
}

// runningContainer returns the ID of the running container of the request.
func (k *Kubelet) runningContainer(r *http.Request) (string, int, error) {
	pod, o, code, err := k.podFor(r)
	if err != nil {
		return "", code, err
	}
	name := r.PathValue("container")
	cur, _ := o.latest(name)
	if cur == nil || cur.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return "", http.StatusBadRequest, fmt.Errorf("container %s is not running in pod %s", name, pod.Name)
	}
	return cur.Id, 0, nil
}

func (k *Kubelet) serveExec(w http.ResponseWriter, r *http.Request) {
	id, code, err := k.runningContainer(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	q := r.URL.Query()
	resp, err := k.cfg.Runtime.Exec(r.Context(), &runtimeapi.ExecRequest{ContainerId: id, Cmd: q["command"],
		Stdin: flag(q, "stdin", "input"), Stdout: flag(q, "stdout", "output"), Stderr: flag(q, "stderr", "error"), Tty: flag(q, "tty")})
	k.proxyStream(w, r, resp.GetUrl(), err)
}

func (k *Kubelet) serveAttach(w http.ResponseWriter, r *http.Request) {
	id, code, err := k.runningContainer(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	q := r.URL.Query()
	resp, err := k.cfg.Runtime.Attach(r.Context(), &runtimeapi.AttachRequest{ContainerId: id,
		Stdin: flag(q, "stdin", "input"), Stdout: flag(q, "stdout", "output"), Stderr: flag(q, "stderr", "error"), Tty: flag(q, "tty")})
	k.proxyStream(w, r, resp.GetUrl(), err)
}

func (k *Kubelet) servePortForward(w http.ResponseWriter, r *http.Request) {
	_, o, code, err := k.podFor(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	if !o.sandboxReady() {
		http.Error(w, "the pod's sandbox is not running", http.StatusBadRequest)
		return
	}
	resp, err := k.cfg.Runtime.PortForward(r.Context(), &runtimeapi.PortForwardRequest{PodSandboxId: o.sandboxes[0].Id})
	k.proxyStream(w, r, resp.GetUrl(), err)
}

// proxyStream proxies an exec, attach or port-forward request, with its
// protocol upgrade (SPDY or WebSocket), to the runtime's streaming URL.
func (k *Kubelet) proxyStream(w http.ResponseWriter, r *http.Request, target string, err error) {
	if err != nil {
		http.Error(w, grpcMessage(err), http.StatusInternalServerError)
		return
	}
	u, err := url.Parse(target)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	// The runtime's URL carries the session; the client's query (which
	// for port-forward names the ports) goes along.
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme, pr.Out.URL.Host, pr.Out.URL.Path = u.Scheme, u.Host, u.Path
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			pr.Out.Host = u.Host
		},
		FlushInterval: -1,
	}
	proxy.ServeHTTP(w, r)
}

// flag reads a boolean query parameter under any of its names.
func flag(q url.Values, names ...string) bool {
	for _, n := range names {
		if v := q.Get(n); v != "" {
			b, _ := strconv.ParseBool(v)
			return b || v == "1"
		}
	}
	return false
}

func (k *Kubelet) serveLogs(w http.ResponseWriter, r *http.Request) {
	pod, o, code, err := k.podFor(r)
	if err != nil {
		http.Error(w, err.Error(), code)
		return
	}
	opts, err := parseLogOptions(r.URL.Query())
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	name := r.PathValue("container")
	cur, prev := o.latest(name)
	c := cur
	if opts.previous {
		c = prev
	}
	if c == nil {
		what := "container"
		if opts.previous {
			what = "previous terminated container"
		}
		http.Error(w, fmt.Sprintf("%s %q in pod %q not found", what, name, pod.Name), http.StatusBadRequest)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	running := func(ctx context.Context) bool {
		st, err := k.cfg.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
		return err == nil && st.Status.State == runtimeapi.ContainerState_CONTAINER_RUNNING
	}
	if !opts.follow || opts.previous {
		running = nil
	}
	if wsstream.IsWebSocketRequest(r) {
		// A WebSocket client (kube-apiserver serves logs so too) gets the
		// log in binary or base64 frames.
		pr, pw := io.Pipe()
		go func() { pw.CloseWithError(copyLogs(r.Context(), pw, c.LogPath, opts, running)) }()
		if err := wsstream.NewReader(pr, true, wsstream.NewDefaultReaderProtocols()).Copy(w, r); err != nil {
			k.log.Debug("serving logs over a websocket", "pod", pod.Name, "container", name, "err", err)
		}
		pr.Close()
		return
	}
	if err := copyLogs(r.Context(), w, c.LogPath, opts, running); err != nil {
		k.log.Debug("serving logs", "pod", pod.Name, "container", name, "err", err)
	}
}

// logOptions are a log request's parameters (PodLogOptions).
type logOptions struct {
	follow, previous, timestamps bool
	tail                         int64 // -1: all
	since                        time.Time
	limitBytes                   int64 // 0: no limit
}

func parseLogOptions(q url.Values) (logOptions, error) {
	o := logOptions{tail: -1, follow: flag(q, "follow"), previous: flag(q, "previous"), timestamps: flag(q, "timestamps")}
	var err error
	if v := q.Get("tailLines"); v != "" {
		if o.tail, err = strconv.ParseInt(v, 10, 64); err != nil || o.tail < 0 {
			return o, fmt.Errorf("tailLines %q: want a number of lines", v)
		}
	}
	if v := q.Get("limitBytes"); v != "" {
		if o.limitBytes, err = strconv.ParseInt(v, 10, 64); err != nil || o.limitBytes < 1 {
			return o, fmt.Errorf("limitBytes %q: want a positive number", v)
		}
	}
	if v := q.Get("sinceSeconds"); v != "" {
		s, err := strconv.ParseInt(v, 10, 64)
		if err != nil || s < 1 {
			return o, fmt.Errorf("sinceSeconds %q: want a positive number", v)
		}
		o.since = time.Now().Add(-time.Duration(s) * time.Second)
	}
	if v := q.Get("sinceTime"); v != "" {
		if o.since, err = time.Parse(time.RFC3339, v); err != nil {
			return o, fmt.Errorf("sinceTime %q: %w", v, err)
		}
	}
	return o, nil
}

// splitLogLine splits a CRI log line (`<RFC3339Nano> <stream> <P|F>
// <content>`) into its time, whether it is a partial line, and content.
func splitLogLine(line string) (t time.Time, partial bool, content string, ok bool) {
	f := strings.SplitN(line, " ", 4)
	if len(f) < 3 {
		return t, false, "", false
	}
	t, err := time.Parse(time.RFC3339Nano, f[0])
	if err != nil {
		return t, false, "", false
	}
	if len(f) == 4 {
		content = f[3]
	}
	return t, f[2] == "P", content, true
}
