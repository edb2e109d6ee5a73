// Package api serves everything on a server's API address: the Kubernetes
// API (package kube), health (/livez, /readyz, /healthz), Prometheus
// metrics (/metrics), the operator endpoints under /pontoon/v1/ (Raft
// peers, gossip members, snapshots), the raw key space used by benchmarks
// and tests, and Raft's internal forwarding endpoints. Errors are
// Kubernetes Status objects.
package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/pontoon-dev/pontoon/api/kube"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/membership"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// Config wires the API to the server's parts.
type Config struct {
	Node    *raftstore.Node
	Store   *fsm.Store
	Members *membership.Pool
	Metrics interface {
		prometheus.Gatherer
		prometheus.Registerer
	}
	// TempDir holds uploaded snapshots while they are verified.
	TempDir string
	Logger  *slog.Logger
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof bool
	// ServiceCIDR is the range of service ClusterIPs.
	ServiceCIDR *net.IPNet
	// EventTTL is how long events are kept after their last write.
	EventTTL time.Duration
	// AtRest encrypts what an EncryptionConfiguration names (kube.Config).
	AtRest map[schema.GroupResource]value.Transformer
	// Limits bound requests' time and number.
	Limits Limits
}

// Server is the HTTP API of one server.
type Server struct {
	cfg     Config
	mux     *http.ServeMux
	handler http.Handler // mux behind the limits
}

// New builds the API's routes, and registers the API's leader duties
// (the system objects, event expiry) with the node.
func New(cfg Config) (*Server, error) {
	s := &Server{cfg: cfg, mux: http.NewServeMux()}
	m := s.mux
	k, err := kube.New(kube.Config{Node: cfg.Node, Store: cfg.Store, ServiceCIDR: cfg.ServiceCIDR, EventTTL: cfg.EventTTL, AtRest: cfg.AtRest, Logger: cfg.Logger.With("component", "kube-api"), StatusFor: statusFor})
	if err != nil {
		return nil, err
	}
	k.Register(m)
	cfg.Node.AddLeaderDuty(k.EnsureSystemObjects)
	cfg.Node.AddLeaderDuty(k.ExpireEvents)
	m.HandleFunc("GET /livez", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	m.HandleFunc("GET /readyz", s.readyz)
	// kube-apiserver keeps /healthz, deprecated, for the load balancers
	// and scripts that still ask it; it answers as /readyz does.
	m.HandleFunc("GET /healthz", s.readyz)
	m.Handle("GET /metrics", promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{}))
	m.Handle("/pontoon/internal/", cfg.Node.Handler())

	m.Handle("GET /pontoon/v1/raft/peers", cfg.Node.LeaderOnly(http.HandlerFunc(s.listPeers), writeError))
	m.Handle("DELETE /pontoon/v1/raft/peers/{name}", cfg.Node.LeaderOnly(http.HandlerFunc(s.removePeer), writeError))
	m.HandleFunc("GET /pontoon/v1/members", s.listMembers)
	m.HandleFunc("GET /pontoon/v1/snapshot", s.saveSnapshot)
	m.Handle("POST /pontoon/v1/snapshot", cfg.Node.LeaderOnly(http.HandlerFunc(s.restoreSnapshot), writeError))
	m.HandleFunc("GET /pontoon/v1/digest", s.digest)
	s.routeKV()
	if cfg.Pprof {
		m.HandleFunc("/debug/pprof/", pprof.Index)
		m.HandleFunc("/debug/pprof/profile", pprof.Profile)
		m.HandleFunc("/debug/pprof/trace", pprof.Trace)
		m.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		m.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	}
	m.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, kube.NoSuchPath())
	})
	lim := newLimiter(cfg.Limits, m)
	if err := cfg.Metrics.Register(lim); err != nil {
		return nil, err
	}
	s.handler = lim
	return s, nil
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Node.Ready(r.Context()); err != nil {
		writeError(w, apierrors.NewServiceUnavailable("not ready: "+err.Error()))
		return
	}
	io.WriteString(w, "ok")
}

func (s *Server) listPeers(w http.ResponseWriter, r *http.Request) {
	peers, err := s.cfg.Node.Peers()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, peers)
}

func (s *Server) removePeer(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Node.RemovePeer(r.Context(), r.PathValue("name")); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"removed": r.PathValue("name")})
}

// Member is a gossip member as the operator endpoints show it.
type Member struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	Status     string `json:"status"`
	GossipAddr string `json:"gossip_addr"`
	APIAddr    string `json:"api_addr,omitempty"`
	RaftAddr   string `json:"raft_addr,omitempty"`
	ClusterID  string `json:"cluster_id,omitempty"`
}

func (s *Server) listMembers(w http.ResponseWriter, r *http.Request) {
	var out []Member
	for _, m := range s.cfg.Members.Members() {
		out = append(out, Member{Name: m.Name, Role: string(m.Role), Status: string(m.Status), GossipAddr: m.GossipAddr,
			APIAddr: m.APIAddr, RaftAddr: m.RaftAddr, ClusterID: m.ClusterID})
	}
	writeJSON(w, http.StatusOK, out)
}

// saveSnapshot streams a snapshot of this server's store, taken after a
// linearizable barrier so it holds every write acknowledged before.
func (s *Server) saveSnapshot(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Node.ReadIndex(r.Context()); err != nil {
		writeError(w, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if err := s.cfg.Store.WriteSnapshot(w); err != nil {
		// The status line is gone; a cut stream fails the checksum.
		s.cfg.Logger.Error("snapshot stream failed", "err", err)
		panic(http.ErrAbortHandler)
	}
}

// restoreSnapshot verifies an uploaded snapshot completely before the
// cluster is touched, then restores it through Raft.
func (s *Server) restoreSnapshot(w http.ResponseWriter, r *http.Request) {
	// A restore writes the snapshot three times over: the upload, the
	// Raft log and the staged records. It may take a third of what the
	// data dir can spare, and is cut off as soon as it is larger.
	limit := int64(s.cfg.Node.SpareSpace() / 3)
	path, info, err := fsm.ReadSnapshot(http.MaxBytesReader(w, r.Body, limit), s.cfg.TempDir)
	if tooLarge := (*http.MaxBytesError)(nil); errors.As(err, &tooLarge) {
		writeError(w, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the snapshot is larger than the %d MiB a restore may take: a third of the space the data dir can spare", limit>>20)))
		return
	}
	if err != nil {
		writeError(w, err)
		return
	}
	defer os.Remove(path)
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Minute)
	defer cancel()
	if err := s.cfg.Node.Restore(ctx, path); err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// Digest is a server's applied index and the hash of its whole state.
type Digest struct {
	Index  uint64 `json:"index"`
	SHA256 string `json:"sha256"`
}

func (s *Server) digest(w http.ResponseWriter, r *http.Request) {
	index, sum, err := s.cfg.Store.Digest()
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, Digest{Index: index, SHA256: hex.EncodeToString(sum[:])})
}

// queryUint reads an unsigned query parameter; a missing one is zero.
func queryUint(r *http.Request, name string) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("query parameter %s=%q is not a number", name, v))
	}
	return n, nil
}
