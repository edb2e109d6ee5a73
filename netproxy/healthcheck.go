package netproxy

import (
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// serviceHealth is what a Service's health-check node port answers: how
// many endpoints of the Service this node sends outside traffic to.
type serviceHealth struct {
	service        types.NamespacedName
	localEndpoints int
}

// healthChecks are the health-check node ports of the Services with
// externalTrafficPolicy Local, each with its node's count of usable local
// endpoints (the largest over the Service's ports). A load balancer asks
// every node and sends only to those that answer 200, as to kube-proxy's.
func healthChecks(ports []servicePort) map[int32]serviceHealth {
	out := map[int32]serviceHealth{}
	for _, sp := range ports {
		svc := sp.svc
		if svc.Spec.HealthCheckNodePort == 0 || svc.Spec.ExternalTrafficPolicy != corev1.ServiceExternalTrafficPolicyLocal {
			continue
		}
		h := out[svc.Spec.HealthCheckNodePort]
		h.service = types.NamespacedName{Namespace: svc.Namespace, Name: svc.Name}
		h.localEndpoints = max(h.localEndpoints, len(usable(localOnly(sp.endpoints))))
		out[svc.Spec.HealthCheckNodePort] = h
	}
	return out
}

// healthServers serve the health-check node ports on the node's address:
// one HTTP server per port, opened when a Service takes the port and
// closed when none does.
type healthServers struct {
	host string
	log  *slog.Logger

	mu      sync.Mutex
	health  map[int32]serviceHealth
	servers map[int32]*http.Server
}

func newHealthServers(host string, log *slog.Logger) *healthServers {
	return &healthServers{host: host, log: log, health: map[int32]serviceHealth{}, servers: map[int32]*http.Server{}}
}

// sync serves the ports of checks and no others. A port that cannot be
// opened (another program holds it) is logged and tried again at the next
// sync; the rules do not depend on it.
func (h *healthServers) sync(checks map[int32]serviceHealth) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.health = checks
	for port, srv := range h.servers {
		if _, ok := checks[port]; !ok {
			_ = srv.Close()
			delete(h.servers, port)
		}
	}
	for port, c := range checks {
		if _, ok := h.servers[port]; ok {
			continue
		}
		ln, err := net.Listen("tcp", net.JoinHostPort(h.host, strconv.Itoa(int(port))))
		if err != nil {
			h.log.Warn("cannot serve a health-check node port", "service", c.service, "port", port, "err", err)
			continue
		}
		srv := &http.Server{Handler: h.handler(port), ReadHeaderTimeout: 5 * time.Second}
		h.servers[port] = srv
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				h.log.Warn("health-check node port stopped", "port", port, "err", err)
			}
		}()
	}
}

// close stops every server.
func (h *healthServers) close() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for port, srv := range h.servers {
		_ = srv.Close()
		delete(h.servers, port)
	}
}

// healthReply is kube-proxy's answer, which load balancers and tools read.
type healthReply struct {
	Service struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"service"`
	LocalEndpoints      int  `json:"localEndpoints"`
	ServiceProxyHealthy bool `json:"serviceProxyHealthy"`
}

func (h *healthServers) handler(port int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		h.mu.Lock()
		c := h.health[port]
		h.mu.Unlock()
		var reply healthReply
		reply.Service.Namespace, reply.Service.Name = c.service.Namespace, c.service.Name
		reply.LocalEndpoints, reply.ServiceProxyHealthy = c.localEndpoints, true
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("X-Load-Balancing-Endpoint-Weight", strconv.Itoa(c.localEndpoints))
		if c.localEndpoints == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(reply)
	})
}
