package node

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// probeKind is one of a container's three probes.
type probeKind string

const (
	liveness  probeKind = "Liveness"
	readiness probeKind = "Readiness"
	startup   probeKind = "Startup"
)

// probeKey names one probe of one running container.
type probeKey struct {
	containerID string
	kind        probeKind
}

// probeResult is what a probe found, by its thresholds.
type probeResult struct {
	ok bool
	// failed is set when a liveness or startup probe reached its failure
	// threshold: the container is to be restarted.
	failed bool
}

// probes runs the probes of the running containers, as the kubelet's
// prober workers: one goroutine per probe of a container, which waits the
// probe's initial delay, then probes every period with its timeout and
// turns the results into success or failure by its thresholds. A change
// of result enqueues the pod.
type probes struct {
	k       *Kubelet
	mu      sync.Mutex
	workers map[probeKey]probeWorker
	results map[probeKey]probeResult
}

// probeWorker is a running probe of a pod.
type probeWorker struct {
	pod    types.UID
	cancel context.CancelFunc
}

func newProbes(k *Kubelet) *probes {
	return &probes{k: k, workers: map[probeKey]probeWorker{}, results: map[probeKey]probeResult{}}
}

// result returns a probe's result and whether it has one.
func (p *probes) result(id string, kind probeKind) (probeResult, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	r, ok := p.results[probeKey{id, kind}]
	return r, ok
}

// sync starts the probes of the pod's running containers that have none
// yet and stops those of containers that no longer run.
func (p *probes) sync(ctx context.Context, key string, pod *corev1.Pod, o *observed) {
	if ip := o.sandbox.GetNetwork().GetIp(); ip != "" && pod.Status.PodIP != ip {
		// A new pod's status has no IP yet when its first probes start:
		// they probe the sandbox's.
		pod = pod.DeepCopy()
		pod.Status.PodIP = ip
	}
	running := map[probeKey]*corev1.Probe{}
	if pod.DeletionTimestamp == nil {
		for _, list := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
			for i := range list {
				c := &list[i]
				cur, _ := o.latest(c.Name)
				if cur == nil || cur.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
					continue
				}
				for kind, pr := range map[probeKind]*corev1.Probe{liveness: c.LivenessProbe, readiness: c.ReadinessProbe, startup: c.StartupProbe} {
					if pr != nil {
						running[probeKey{cur.Id, kind}] = pr
					}
				}
			}
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, w := range p.workers {
		if _, ok := running[k]; !ok && w.pod == pod.UID {
			w.cancel()
			delete(p.workers, k)
			delete(p.results, k)
		}
	}
	for k, pr := range running {
		if _, ok := p.workers[k]; ok {
			continue
		}
		wctx, cancel := context.WithCancel(ctx)
		p.workers[k] = probeWorker{pod: pod.UID, cancel: cancel}
		go p.run(wctx, key, pod, containerNameOf(o, k.containerID), k, pr)
	}
}

// stopPod stops the probes of a pod that is gone.
func (p *probes) stopPod(uid types.UID) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, w := range p.workers {
		if w.pod == uid {
			w.cancel()
			delete(p.workers, k)
			delete(p.results, k)
		}
	}
}

func containerNameOf(o *observed, id string) string {
	for _, c := range o.containers {
		if c.Id == id {
			return c.Metadata.Name
		}
	}
	return ""
}

// run is one probe's worker.
func (p *probes) run(ctx context.Context, key string, pod *corev1.Pod, container string, k probeKey, pr *corev1.Probe) {
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	success, failure := max(pr.SuccessThreshold, 1), max(pr.FailureThreshold, 1)
	select {
	case <-ctx.Done():
		return
	case <-time.After(time.Duration(pr.InitialDelaySeconds) * time.Second):
	}
	var oks, fails int32
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		// Liveness and readiness wait until the startup probe succeeded.
		if k.kind == startup || p.started(k.containerID) {
			err := p.k.probe(ctx, pod, k.containerID, pr, timeout)
			if ctx.Err() != nil {
				return
			}
			switch {
			case errors.Is(err, errProbeUnknown):
				// As the kubelet does, a probe the runtime could not run
				// (it is restarting, say) counts neither way.
				p.k.log.Debug("probe not run", "pod", key, "container", container, "probe", k.kind, "err", err)
			case err == nil:
				oks, fails = oks+1, 0
			default:
				oks, fails = 0, fails+1
				p.k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "Unhealthy", "%s probe failed: %v", k.kind, err)
			}
			// A result is decided once a threshold is reached; the pod is
			// synced again when it changes.
			decided := oks >= success || fails >= failure
			next := probeResult{ok: oks >= success, failed: fails >= failure && k.kind != readiness}
			p.mu.Lock()
			prev, had := p.results[k]
			if decided {
				p.results[k] = next
			}
			p.mu.Unlock()
			if decided && (!had || next != prev) {
				if next.failed {
					p.k.log.Info("probe failed; the container is restarted", "pod", key, "container", container, "probe", k.kind)
				}
				p.k.queue.Add(key)
			}
			if decided && next.failed {
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// started reports whether a container's startup probe succeeded (true
// when it has none).
func (p *probes) started(id string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.workers[probeKey{id, startup}]; !ok {
		return true
	}
	r, ok := p.results[probeKey{id, startup}]
	return ok && r.ok
}

// errProbeUnknown is a probe that could not be run: no result.
var errProbeUnknown = errors.New("not run")

// probe runs one probe of a container once, within timeout (none when it
// is zero).
func (k *Kubelet) probe(ctx context.Context, pod *corev1.Pod, containerID string, pr *corev1.Probe, timeout time.Duration) error {
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, timeout)
		defer cancel()
	}
	host := pod.Status.PodIP
	if pod.Spec.HostNetwork && len(k.cfg.NodeIPs) > 0 {
		host = k.cfg.NodeIPs[0]
	}
	switch {
	case pr.Exec != nil:
		resp, err := k.cfg.Runtime.ExecSync(ctx, &runtimeapi.ExecSyncRequest{ContainerId: containerID, Cmd: pr.Exec.Command, Timeout: int64(timeout / time.Second)})
		if status.Code(err) == codes.DeadlineExceeded {
			return fmt.Errorf("command %q timed out", pr.Exec.Command)
		} else if err != nil {
			return fmt.Errorf("%w: exec: %s", errProbeUnknown, grpcMessage(err))
		}
		if resp.ExitCode != 0 {
			return fmt.Errorf("command %q exited with %d: %s%s", pr.Exec.Command, resp.ExitCode, resp.Stdout, resp.Stderr)
		}
		return nil
	case pr.HTTPGet != nil:
		g := pr.HTTPGet
		if g.Host != "" {
			host = g.Host
		}
		port, err := probePort(pod, g.Port)
		if err != nil {
			return err
		}
		scheme := "http"
		if g.Scheme == corev1.URISchemeHTTPS {
			scheme = "https"
		}
		// The path may carry a query, as the kubelet reads it.
		u, err := url.Parse(g.Path)
		if err != nil {
			return fmt.Errorf("path %q: %v", g.Path, err)
		}
		u.Scheme, u.Host = scheme, net.JoinHostPort(host, strconv.Itoa(port))
		if u.Path == "" {
			u.Path = "/"
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/1.33")
		for _, h := range g.HTTPHeaders {
			req.Header.Set(h.Name, h.Value)
		}
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true}}
		resp, err := client.Do(req)
		if err != nil {
			return fmt.Errorf("Get %q: %v", u.String(), err)
		}
		resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("HTTP probe failed with statuscode: %d", resp.StatusCode)
		}
		return nil
	case pr.TCPSocket != nil:
		if pr.TCPSocket.Host != "" {
			host = pr.TCPSocket.Host
		}
		port, err := probePort(pod, pr.TCPSocket.Port)
		if err != nil {
			return err
		}
		var d net.Dialer
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return fmt.Errorf("dial tcp %s:%d: %v", host, port, err)
		}
		return conn.Close()
	case pr.GRPC != nil:
		conn, err := grpc.NewClient(net.JoinHostPort(host, strconv.Itoa(int(pr.GRPC.Port))), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		service := ""
		if pr.GRPC.Service != nil {
			service = *pr.GRPC.Service
		}
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			return fmt.Errorf("gRPC health check: %v", err)
		}
		if resp.Status != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("service unhealthy (responded with %q)", resp.Status)
		}
		return nil
	}
	return fmt.Errorf("the probe has no handler")
}

// probePort resolves a probe's port, a number or the name of a container
// port.
func probePort(pod *corev1.Pod, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	for _, c := range pod.Spec.Containers {
		for _, cp := range c.Ports {
			if cp.Name == p.StrVal {
				return int(cp.ContainerPort), nil
			}
		}
	}
	return 0, fmt.Errorf("no container port named %q", p.StrVal)
}
