package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/KimMachineGun/automemlimit/memlimit"
	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"
	"k8s.io/client-go/rest"

	"github.com/pontoon-dev/pontoon/api"
	"github.com/pontoon-dev/pontoon/ctrl"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/jointoken"
	"github.com/pontoon-dev/pontoon/membership"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// serverOptions are the flags of `pontoon server`.
type serverOptions struct {
	name, dataDir                  string
	apiAddr, raftAddr, gossipAddr  string
	advertise                      string
	bootstrapExpect                int
	join                           []string
	heartbeatTimeout               time.Duration
	snapshotThreshold, trailingLog uint64
	snapshotInterval               time.Duration
	logStore                       string
	logVerifyInterval              time.Duration
	readyMaxLag                    uint64
	dataDirReserve, walSegmentSize string
	limits                         api.Limits
	deadServerGrace                time.Duration
	watchHistory                   int
	pprof                          bool
	logLevel                       string
	serviceCIDR                    string
	clusterCIDR                    string
	nodeCIDRMaskSize               int
	nodeMonitorGracePeriod         time.Duration
	terminatedPodGCThreshold       int
	eviction                       ctrl.EvictionRates
	eventTTL                       time.Duration
	encryptionConfig               string
	tokens                         tokenOptions
	// kubeconfig, when set, is written for the local API once it listens.
	kubeconfig string
}

func (o *serverOptions) flags(cmd *cobra.Command) {
	host, _ := os.Hostname()
	f := cmd.Flags()
	f.StringVar(&o.name, "name", host, "server name, unique in the cluster: a host name (letters, digits, '-' and '.')")
	f.StringVar(&o.dataDir, "data-dir", "", "directory for the Raft log, snapshots and the store (required)")
	f.StringVar(&o.apiAddr, "api-addr", "127.0.0.1:6443", "address of the Kubernetes and operator API")
	f.StringVar(&o.raftAddr, "raft-addr", "127.0.0.1:6444", "address Raft listens on")
	f.StringVar(&o.gossipAddr, "gossip-addr", "127.0.0.1:7946", "address gossip listens on (TCP and UDP)")
	f.StringVar(&o.advertise, "advertise", "", "IP other members reach this server at (default: the host of --raft-addr)")
	f.IntVar(&o.bootstrapExpect, "bootstrap-expect", 0, "form a new cluster once this many servers see each other (0: join an existing cluster)")
	f.StringArrayVar(&o.join, "join", nil, "gossip address of any member to join, retried until it answers (repeatable)")
	f.DurationVar(&o.heartbeatTimeout, "raft-heartbeat-timeout", 500*time.Millisecond, "Raft heartbeat and election timeout; the leader lease is half of it")
	f.Uint64Var(&o.snapshotThreshold, "raft-snapshot-threshold", 16384, "fewest log entries between Raft snapshots; a snapshot copies the whole store, so one with more objects waits for twice as many entries as it holds objects")
	f.DurationVar(&o.snapshotInterval, "raft-snapshot-interval", 5*time.Second, "how often Raft checks whether --raft-snapshot-threshold is reached (as Consul, not hashicorp/raft's 2 minutes: the log, and the memory it maps, grow until then)")
	f.Uint64Var(&o.trailingLog, "raft-trailing-logs", 32768, "log entries kept after a snapshot, so a lagging follower catches up without one")
	f.StringVar(&o.logStore, "raft-log-store", "", "how a new data dir keeps the Raft log: wal (the default) or boltdb; an existing data dir keeps the store it was made with")
	f.DurationVar(&o.logVerifyInterval, "raft-log-verify-interval", time.Minute, "how often the leader appends a checkpoint against which every server verifies what its Raft log stored (0: never)")
	f.StringVar(&o.dataDirReserve, "data-dir-reserve", "128Mi", "free space kept in the data dir besides room for a snapshot and a log segment; below it writes are refused with 507 until space is freed (as etcd's NOSPACE alarm)")
	f.StringVar(&o.walSegmentSize, "raft-wal-segment-size", "64Mi", "size of each raft-wal segment file, allocated whole when it starts")
	f.Uint64Var(&o.readyMaxLag, "ready-max-lag", raftstore.DefaultReadyMaxLag, "committed entries a server may have left to apply and still answer /readyz with 200")
	f.DurationVar(&o.deadServerGrace, "dead-server-grace", 2*time.Minute, "how long a server must be dead before autopilot may remove it (once a replacement keeps the voters at --bootstrap-expect)")
	f.IntVar(&o.watchHistory, "watch-history", fsm.DefaultWatchHistory, "events kept for watches that start at an older revision")
	f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	f.StringVar(&o.serviceCIDR, "service-cidr", "10.96.0.0/16", "IPv4 range service ClusterIPs are allocated from")
	f.StringVar(&o.clusterCIDR, "cluster-cidr", "10.244.0.0/16", "IPv4 range nodes' pod CIDRs are allocated from")
	f.IntVar(&o.nodeCIDRMaskSize, "node-cidr-mask-size", 24, "prefix length of each node's pod CIDR")
	f.DurationVar(&o.nodeMonitorGracePeriod, "node-monitor-grace-period", 50*time.Second, "how long a node's Lease may go unrenewed before the node is NotReady (as kube-controller-manager)")
	f.IntVar(&o.terminatedPodGCThreshold, "terminated-pod-gc-threshold", 12500, "finished pods kept before the oldest are deleted (0: keep all)")
	f.Float32Var(&o.eviction.NodeEvictionRate, "node-eviction-rate", 0.1, "nodes per second, per zone, that get the NoExecute taints evicting their pods (as kube-controller-manager)")
	f.Float32Var(&o.eviction.SecondaryNodeEvictionRate, "secondary-node-eviction-rate", 0.01, "--node-eviction-rate in a zone where at least --unhealthy-zone-threshold of the nodes are not Ready")
	f.IntVar(&o.eviction.LargeClusterSizeThreshold, "large-cluster-size-threshold", 50, "a zone of no more nodes than this gets no NoExecute taints while it is partly down")
	f.Float32Var(&o.eviction.UnhealthyZoneThreshold, "unhealthy-zone-threshold", 0.55, "the share of not-Ready nodes (more than two) that makes a zone partly down")
	f.DurationVar(&o.eventTTL, "event-ttl", time.Hour, "how long events are kept after their last write (as kube-apiserver)")
	o.tokens.flags(f, "one that bootstraps a cluster alone makes one")
	f.StringVar(&o.encryptionConfig, "encryption-provider-config", "", "an EncryptionConfiguration file (apiserver.config.k8s.io/v1, as kube-apiserver's): the resources it names, Secrets usually, are encrypted in the store, its log and its snapshots; every server needs the same one")
	f.DurationVar(&o.limits.RequestTimeout, "request-timeout", api.DefaultLimits.RequestTimeout, "longest a request may take, but watches and streams; a request's ?timeout= may shorten it (as kube-apiserver)")
	f.IntVar(&o.limits.MaxInFlight, "max-requests-inflight", api.DefaultLimits.MaxInFlight, "reads served at once; more are refused with 429 and Retry-After (0: no limit)")
	f.IntVar(&o.limits.MaxMutatingInFlight, "max-mutating-requests-inflight", api.DefaultLimits.MaxMutatingInFlight, "writes served at once; more are refused with 429 and Retry-After (0: no limit)")
	f.BoolVar(&o.pprof, "enable-pprof", false, "serve Go's profiler under /debug/pprof/ on the API address")
}

func serverCommand() *cobra.Command {
	var o serverOptions
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a control-plane server: Raft member, object store and API",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.dataDir == "" {
				return errors.New("--data-dir is required")
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			return runServer(ctx, o)
		},
	}
	o.flags(cmd)
	return cmd
}

func devCommand() *cobra.Command {
	var o serverOptions
	var a agentOptions
	var cleanup bool
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run a one-server cluster with a node on this machine, its data under ./.pontoon",
		Long: `Runs a server and an agent in one process: a one-server cluster whose node
runs pods here, with a kubeconfig written to the data dir. Ctrl-C stops it;
its pods keep running and the next start takes them up again.
--cleanup removes every pod, container, mount, cgroup and network
allocation of the node instead, and the data dir.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			// The data dir holds the server's and the agent's side by side,
			// and the kubeconfig.
			root := o.dataDir
			o.dataDir = filepath.Join(root, "server")
			a.name, a.dataDir, a.logLevel = o.name, filepath.Join(root, "agent"), o.logLevel
			a.clusterCIDR, a.serviceCIDR = o.clusterCIDR, o.serviceCIDR
			if cleanup {
				logger, err := newLogger(o.logLevel)
				if err != nil {
					return err
				}
				if err := cleanupAgent(cmd.Context(), a.name, a.dataDir, logger); err != nil {
					return err
				}
				return os.RemoveAll(root)
			}
			o.bootstrapExpect = 1
			o.kubeconfig = filepath.Join(root, "kubeconfig")
			if a.nodeIP == "" {
				a.nodeIP, _, _ = net.SplitHostPort(o.apiAddr)
			}
			s, err := a.validate()
			if err != nil {
				return err
			}
			logger, err := newLogger(o.logLevel)
			if err != nil {
				return err
			}
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			ctx, cancel := context.WithCancel(ctx)
			defer cancel()
			// The agent stops first, so the server is there while it does.
			var agentErr error
			agentDone := make(chan struct{})
			go func() {
				defer close(agentDone)
				cfg := &rest.Config{Host: "http://" + o.apiAddr, UserAgent: userAgent("kubelet")}
				agentErr = runAgent(ctx, s, cfg, logger.With("node", s.name))
				if agentErr != nil && ctx.Err() == nil {
					cancel()
				}
			}()
			serverCtx, stopServer := context.WithCancel(context.Background())
			defer stopServer()
			go func() {
				<-ctx.Done()
				<-agentDone
				stopServer()
			}()
			err = runServer(serverCtx, o)
			cancel()
			<-agentDone
			if agentErr != nil && err == nil {
				err = agentErr
			}
			return err
		},
	}
	o.flags(cmd)
	a.flags(cmd, false)
	cmd.Flags().BoolVar(&cleanup, "cleanup", false, "remove the node's pods, containers, mounts, cgroups and network allocations, its containerd, and the data dir, instead of running")
	cmd.Flags().Lookup("data-dir").DefValue = ".pontoon"
	cmd.Flags().Set("data-dir", ".pontoon")
	cmd.Flags().Set("name", "dev")
	return cmd
}

// advertised returns addr with its host replaced by ip when ip is set.
func advertised(addr, ip string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("address %q: %w", addr, err)
	}
	if ip != "" {
		host = ip
	}
	if h := net.ParseIP(host); h == nil || h.IsUnspecified() {
		return "", fmt.Errorf("address %q listens on every interface: set --advertise to the IP others reach this server at", addr)
	}
	return net.JoinHostPort(host, port), nil
}

// setMemoryLimit gives the Go runtime the memory limit of the server's
// cgroup (a container's, a systemd unit's MemoryMax), which it does not
// know by itself: without it, a heap that grows past the limit meets the
// OOM killer before the collector works harder. GOMEMLIMIT becomes 90% of
// the limit, as Prometheus sets it with the same library, unless the
// environment sets GOMEMLIMIT (or AUTOMEMLIMIT to another ratio or "off").
func setMemoryLimit(logger *slog.Logger) {
	if _, set := os.LookupEnv("GOMEMLIMIT"); set {
		return
	}
	limit, err := memlimit.Set()
	switch {
	case err != nil:
		logger.Debug("no cgroup memory limit found; GOMEMLIMIT is not set", "err", err)
	case limit < math.MaxInt64:
		logger.Info("GOMEMLIMIT set from the cgroup memory limit", "bytes", limit)
	}
}

func runServer(ctx context.Context, o serverOptions) error {
	logger, err := newLogger(o.logLevel)
	if err != nil {
		return err
	}
	logger = logger.With("server", o.name)
	_, serviceCIDR, err := net.ParseCIDR(o.serviceCIDR)
	if err != nil || serviceCIDR.IP.To4() == nil {
		return fmt.Errorf("--service-cidr %q: want an IPv4 CIDR such as 10.96.0.0/16", o.serviceCIDR)
	}
	if ones, _ := serviceCIDR.Mask.Size(); ones > 30 || ones < 12 {
		return fmt.Errorf("--service-cidr %q: the prefix must be between /12 and /30", o.serviceCIDR)
	}
	_, clusterCIDR, err := net.ParseCIDR(o.clusterCIDR)
	if err != nil || clusterCIDR.IP.To4() == nil {
		return fmt.Errorf("--cluster-cidr %q: want an IPv4 CIDR such as 10.244.0.0/16", o.clusterCIDR)
	}
	if ones, _ := clusterCIDR.Mask.Size(); o.nodeCIDRMaskSize < ones || o.nodeCIDRMaskSize > 30 || o.nodeCIDRMaskSize-ones > 20 {
		return fmt.Errorf("--node-cidr-mask-size %d: must be between the --cluster-cidr prefix (/%d) and /30, at most 20 bits longer", o.nodeCIDRMaskSize, ones)
	}
	if e := o.eviction; e.NodeEvictionRate < 0 || e.SecondaryNodeEvictionRate < 0 {
		return fmt.Errorf("--node-eviction-rate %v, --secondary-node-eviction-rate %v: must not be negative", e.NodeEvictionRate, e.SecondaryNodeEvictionRate)
	}
	if t := o.eviction.UnhealthyZoneThreshold; t <= 0 || t > 1 {
		return fmt.Errorf("--unhealthy-zone-threshold %v: must be above 0 and at most 1", t)
	}
	if errs := validation.IsDNS1123Subdomain(strings.ToLower(o.name)); len(errs) > 0 {
		return fmt.Errorf("--name %q: want a host name (letters, digits, '-' and '.'): %s", o.name, errs[0])
	}
	if o.bootstrapExpect < 0 {
		return fmt.Errorf("--bootstrap-expect %d: must be 0 (join an existing cluster) or more", o.bootstrapExpect)
	}
	if o.watchHistory < 1 {
		return fmt.Errorf("--watch-history %d: must be at least 1", o.watchHistory)
	}
	if o.deadServerGrace <= 0 {
		return fmt.Errorf("--dead-server-grace %v: must be above 0", o.deadServerGrace)
	}
	if l := o.limits; l.RequestTimeout <= 0 || l.MaxInFlight < 0 || l.MaxMutatingInFlight < 0 {
		return fmt.Errorf("--request-timeout %v, --max-requests-inflight %d, --max-mutating-requests-inflight %d: the timeout must be above 0, the limits 0 or more",
			l.RequestTimeout, l.MaxInFlight, l.MaxMutatingInFlight)
	}
	if o.readyMaxLag < 1 {
		return fmt.Errorf("--ready-max-lag %d: must be at least 1", o.readyMaxLag)
	}
	logStore, err := raftstore.ParseLogStoreKind(o.logStore)
	if err != nil {
		return err
	}
	reserve, err := resource.ParseQuantity(o.dataDirReserve)
	if err != nil || reserve.Sign() < 0 {
		return fmt.Errorf("--data-dir-reserve %q: want a size such as 128Mi or 1Gi", o.dataDirReserve)
	}
	segment, err := resource.ParseQuantity(o.walSegmentSize)
	if err != nil || segment.Value() < 1<<20 || segment.Value() > 1<<30 {
		return fmt.Errorf("--raft-wal-segment-size %q: want a size between 1Mi and 1Gi", o.walSegmentSize)
	}
	token, keepToken, err := serverToken(o.tokens, o.dataDir, o.bootstrapExpect)
	if err != nil {
		return err
	}
	gossipKey, err := o.tokens.secretKey(token)
	if err != nil {
		return err
	}
	internalKey, err := jointoken.InternalKey(token)
	if err != nil {
		return err
	}
	var atRest map[schema.GroupResource]value.Transformer
	if o.encryptionConfig != "" {
		// KMS providers' connections live as long as the server.
		enc, err := encryptionconfig.LoadEncryptionConfig(ctx, o.encryptionConfig, false, o.name)
		if err != nil {
			return fmt.Errorf("--encryption-provider-config %s: %w", o.encryptionConfig, err)
		}
		atRest = enc.Transformers
	}
	// Flags are checked before this process-wide setting: a refused
	// start changes nothing.
	setMemoryLimit(logger)
	if o.advertise == "" {
		o.advertise, _, _ = net.SplitHostPort(o.raftAddr)
	}
	advRaft, err := advertised(o.raftAddr, o.advertise)
	if err != nil {
		return err
	}
	advAPI, err := advertised(o.apiAddr, o.advertise)
	if err != nil {
		return err
	}
	advGossip, err := advertised(o.gossipAddr, o.advertise)
	if err != nil {
		return err
	}

	id, err := raftstore.LoadIdentity(o.dataDir, o.name)
	if err != nil {
		return err
	}
	store, rebuild, err := raftstore.OpenStore(o.dataDir, fsm.Options{WatchHistory: o.watchHistory}, logger)
	if err != nil {
		return fmt.Errorf("data dir %s: %w", o.dataDir, err)
	}
	defer func() {
		if err := raftstore.CloseStore(o.dataDir, store); err != nil {
			logger.Error("close store", "err", err)
		}
	}()

	if keepToken {
		path := filepath.Join(o.dataDir, tokenFileName)
		if err := jointoken.Write(path, token); err != nil {
			return fmt.Errorf("keep the cluster's token: %w", err)
		}
		logger.Info("the cluster's token is kept in the data dir: servers and agents join with it", "file", path)
	}
	pool, err := membership.Create(membership.Config{
		Name: o.name, BindAddr: o.gossipAddr, AdvertiseAddr: advGossip, Logger: logger, SecretKey: gossipKey,
		Meta: membership.Meta{
			Role: membership.RoleServer, APIAddr: advAPI, RaftAddr: advRaft, NodeID: id.NodeID,
			ClusterID: raftstore.StoredClusterID(store), Expect: o.bootstrapExpect,
		},
	})
	if err != nil {
		return err
	}
	defer pool.Shutdown()
	// One join attempt before Raft starts: a data dir of another cluster
	// is refused before anything can write to it. Later attempts (peers
	// not up yet) run in the background.
	if _, err := pool.TryJoin(o.join); errors.Is(err, membership.ErrOtherCluster) {
		return fmt.Errorf("data dir %s: %w", o.dataDir, err)
	}

	reg := newRegistry()
	node, err := raftstore.Open(raftstore.Config{
		Identity: id, DataDir: o.dataDir, InternalKey: internalKey, RaftAddr: o.raftAddr, AdvertiseRaft: advRaft, LocalIP: o.advertise,
		BootstrapExpect: o.bootstrapExpect, Store: store, Members: pool, Logger: logger, Metrics: reg,
		HeartbeatTimeout: o.heartbeatTimeout, SnapshotThreshold: o.snapshotThreshold, TrailingLogs: o.trailingLog,
		SnapshotInterval: o.snapshotInterval, LogStore: logStore, LogVerifyInterval: o.logVerifyInterval,
		ReadyMaxLag: o.readyMaxLag, DataDirReserve: uint64(reserve.Value()), WALSegmentSize: int(segment.Value()),
		DeadServerGrace: o.deadServerGrace, RebuildStore: rebuild,
	})
	if err != nil {
		return err
	}

	apiServer, err := api.New(api.Config{Node: node, Store: store, Members: pool, Metrics: reg, TempDir: o.dataDir, Logger: logger,
		Pprof: o.pprof, ServiceCIDR: serviceCIDR, EventTTL: o.eventTTL, AtRest: atRest, Limits: o.limits})
	if err != nil {
		node.Shutdown(context.Background())
		return err
	}
	// The scheduler and the controllers run on the leader, against its own
	// API in-process.
	node.AddLeaderDuty(func(ctx context.Context) {
		cfg := &rest.Config{Host: "http://" + advAPI, Transport: apiServer.LocalTransport(ctx), QPS: -1}
		settings := ctrl.Config{ClusterCIDR: clusterCIDR, NodeCIDRMaskSize: o.nodeCIDRMaskSize, NodeMonitorGracePeriod: o.nodeMonitorGracePeriod,
			TerminatedPodGCThreshold: o.terminatedPodGCThreshold, Gossip: pool, Eviction: o.eviction,
			Servers: pool, ServiceCIDR: serviceCIDR}
		if err := runLeaderDuties(ctx, cfg, settings, logger); err != nil {
			logger.Error("leader duties", "err", err)
		}
	})
	ln, err := net.Listen("tcp", o.apiAddr)
	if err != nil {
		node.Shutdown(context.Background())
		return fmt.Errorf("API listen on %s: %w", o.apiAddr, err)
	}
	// Watches end when the server shuts down, so clients move to another
	// server at once.
	baseCtx, cancelBase := context.WithCancel(context.Background())
	// Slow headers are cut at 10 s and idle keep-alive connections at
	// 90 s (as kube-apiserver); slow bodies at the request timeout.
	httpServer := &http.Server{Handler: apiServer, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 90 * time.Second,
		BaseContext: func(net.Listener) context.Context { return baseCtx }}
	httpServer.RegisterOnShutdown(cancelBase)
	logger.Info("server started", "api", advAPI, "raft", advRaft, "gossip", advGossip, "data_dir", o.dataDir)
	if o.kubeconfig != "" {
		if err := writeKubeconfig(o.kubeconfig, "http://"+advAPI); err != nil {
			logger.Warn("writing kubeconfig", "err", err)
		} else {
			abs, _ := filepath.Abs(o.kubeconfig)
			fmt.Printf("export KUBECONFIG=%s\n", abs)
		}
	}

	fatal := make(chan error, 3)
	go func() { fatal <- fmt.Errorf("API server: %w", httpServer.Serve(ln)) }()
	go func() {
		if err := pool.Join(ctx, o.join); err != nil && ctx.Err() == nil {
			fatal <- err
		}
	}()
	go func() {
		select {
		case <-node.Removed():
			fatal <- raftstore.ErrRemoved
		case <-ctx.Done():
		}
	}()
	var exitErr error
	select {
	case <-ctx.Done():
		logger.Info("shutting down")
	case exitErr = <-fatal:
	}
	return shutdown(logger, node, pool, httpServer, exitErr)
}

// shutdown stops a server in the order that keeps clients served longest:
// hand over leadership, stop Raft, say goodbye to gossip, close the API.
func shutdown(logger *slog.Logger, node *raftstore.Node, pool *membership.Pool, httpServer *http.Server, exitErr error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := node.Shutdown(ctx); err != nil {
		logger.Warn("raft shutdown", "err", err)
	}
	if err := pool.Leave(time.Second); err != nil {
		logger.Warn("gossip leave", "err", err)
	}
	if err := httpServer.Shutdown(ctx); err != nil {
		httpServer.Close()
	}
	if exitErr == nil {
		logger.Info("stopped")
	}
	return exitErr
}
