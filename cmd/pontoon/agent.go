package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/record"

	"github.com/pontoon-dev/pontoon/ctrl"
	"github.com/pontoon-dev/pontoon/kubeversion"
	"github.com/pontoon-dev/pontoon/membership"
	"github.com/pontoon-dev/pontoon/node"
	"github.com/pontoon-dev/pontoon/node/cni"
	"github.com/pontoon-dev/pontoon/node/containerd"
	"github.com/pontoon-dev/pontoon/node/cri"
	"github.com/pontoon-dev/pontoon/node/localimage"
	"github.com/pontoon-dev/pontoon/node/mounts"
)

// agentOptions are the flags of `pontoon agent`.
type agentOptions struct {
	name, dataDir   string
	nodeIP          string
	gossipAddr      string
	join            []string
	runtimeEndpoint string
	nodeLabels      []string
	taints          []string
	maxPods         int
	clusterDNS      []string
	resolvConf      string
	clusterDomain   string
	kubeletPort     int
	logLevel        string
	// clusterCIDR and serviceCIDR are the servers' (`pontoon dev` takes
	// them from its server's flags).
	clusterCIDR, serviceCIDR string
	// tokens give a standalone agent the cluster's token.
	tokens tokenOptions
}

// flags adds the agent's flags to cmd; standalone adds those that `pontoon
// dev` takes from its server's (name, data dir, log level) and the gossip
// ones.
func (o *agentOptions) flags(cmd *cobra.Command, standalone bool) {
	host, _ := os.Hostname()
	f := cmd.Flags()
	if standalone {
		f.StringVar(&o.name, "name", strings.ToLower(host), "node name, unique in the cluster: a host name")
		f.StringVar(&o.dataDir, "data-dir", "", "directory for the node's containerd, pod logs and network config (required)")
		f.StringVar(&o.gossipAddr, "gossip-addr", "", "address gossip listens on (default: the node IP, port 7946)")
		f.StringArrayVar(&o.join, "join", nil, "gossip address of any cluster member; the servers are found from it (repeatable, required)")
		f.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
		f.StringVar(&o.clusterCIDR, "cluster-cidr", "10.244.0.0/16", "the servers' --cluster-cidr: every pod's address is in it")
		f.StringVar(&o.serviceCIDR, "service-cidr", "10.96.0.0/16", "the servers' --service-cidr: every ClusterIP is in it")
		o.tokens.flags(f, "required")
	}
	f.StringVar(&o.nodeIP, "node-ip", "", "the node's IP, which the servers reach its kubelet at (default: the address of the interface of the default route)")
	f.StringVar(&o.runtimeEndpoint, "container-runtime-endpoint", "", "CRI v1 socket of a container runtime (default: a containerd the agent starts itself under its data dir)")
	f.StringArrayVar(&o.nodeLabels, "node-labels", nil, "labels of the node, key=value (repeatable)")
	f.StringArrayVar(&o.taints, "register-with-taints", nil, "taints the node registers with, key[=value]:Effect (repeatable)")
	f.IntVar(&o.maxPods, "max-pods", 110, "pods the node runs at most")
	f.StringArrayVar(&o.clusterDNS, "cluster-dns", nil, "the cluster DNS's IP, which the agent serves DNS at for its pods and puts in the resolv.conf of pods with dnsPolicy ClusterFirst (default: the 10th address of the service range, the kube-dns Service's)")
	f.StringVar(&o.resolvConf, "resolv-conf", "/etc/resolv.conf", "the node's resolv.conf: pods with dnsPolicy Default get it, and the cluster DNS forwards names outside the cluster to its resolvers")
	f.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	f.IntVar(&o.kubeletPort, "kubelet-port", 10250, "port of the kubelet's endpoint on the node IP, which servers proxy logs, exec and port-forward to")
}

// agentSettings are an agent's validated options.
type agentSettings struct {
	agentOptions
	labels                 map[string]string
	taints                 []corev1.Taint
	clusterNet, serviceNet *net.IPNet
}

func (o agentOptions) validate() (agentSettings, error) {
	s := agentSettings{agentOptions: o, labels: map[string]string{}}
	if o.dataDir == "" {
		return s, errors.New("--data-dir is required")
	}
	if errs := validation.IsDNS1123Subdomain(o.name); len(errs) > 0 {
		return s, fmt.Errorf("--name %q: want a host name in lower case (letters, digits, '-' and '.'): %s", o.name, errs[0])
	}
	if s.nodeIP == "" {
		ip, err := defaultRouteIP()
		if err != nil {
			return s, fmt.Errorf("--node-ip not given and %w", err)
		}
		s.nodeIP = ip
	}
	if ip := net.ParseIP(s.nodeIP); ip == nil || ip.To4() == nil || ip.IsUnspecified() {
		return s, fmt.Errorf("--node-ip %q: want the node's IPv4 address", s.nodeIP)
	}
	for _, l := range o.nodeLabels {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return s, fmt.Errorf("--node-labels %q: want key=value", l)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return s, fmt.Errorf("--node-labels %q: key: %s", l, errs[0])
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return s, fmt.Errorf("--node-labels %q: value: %s", l, errs[0])
		}
		s.labels[k] = v
	}
	for _, t := range o.taints {
		kv, effect, ok := strings.Cut(t, ":")
		k, v, _ := strings.Cut(kv, "=")
		taint := corev1.Taint{Key: k, Value: v, Effect: corev1.TaintEffect(effect)}
		switch taint.Effect {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
		default:
			ok = false
		}
		if !ok || len(validation.IsQualifiedName(k)) > 0 {
			return s, fmt.Errorf("--register-with-taints %q: want key[=value]:Effect, Effect NoSchedule, PreferNoSchedule or NoExecute", t)
		}
		s.taints = append(s.taints, taint)
	}
	if o.maxPods < 1 {
		return s, fmt.Errorf("--max-pods %d: must be at least 1", o.maxPods)
	}
	for _, d := range o.clusterDNS {
		if net.ParseIP(d) == nil {
			return s, fmt.Errorf("--cluster-dns %q: want an IP", d)
		}
	}
	if errs := validation.IsDNS1123Subdomain(o.clusterDomain); len(errs) > 0 {
		return s, fmt.Errorf("--cluster-domain %q: %s", o.clusterDomain, errs[0])
	}
	if o.kubeletPort < 1 || o.kubeletPort > 65535 {
		return s, fmt.Errorf("--kubelet-port %d: want a port", o.kubeletPort)
	}
	if o.runtimeEndpoint != "" && !strings.HasPrefix(o.runtimeEndpoint, "unix://") {
		return s, fmt.Errorf("--container-runtime-endpoint %q: want unix:///path/to/socket", o.runtimeEndpoint)
	}
	for _, c := range []struct {
		flag, value string
		to          **net.IPNet
	}{{"--cluster-cidr", o.clusterCIDR, &s.clusterNet}, {"--service-cidr", o.serviceCIDR, &s.serviceNet}} {
		_, n, err := net.ParseCIDR(c.value)
		if err != nil || n.IP.To4() == nil {
			return s, fmt.Errorf("%s %q: want an IPv4 CIDR", c.flag, c.value)
		}
		*c.to = n
	}
	if len(s.clusterDNS) == 0 {
		s.clusterDNS = []string{ctrl.ServiceAddress(s.serviceNet, ctrl.ClusterDNSIndex).String()}
	} else if net.ParseIP(s.clusterDNS[0]).To4() == nil {
		return s, fmt.Errorf("--cluster-dns %q: the first must be an IPv4 address, which the agent serves DNS at", s.clusterDNS[0])
	}
	return s, nil
}

// defaultRouteIP is the first IPv4 address of the interface that holds
// the default route, read from /proc/net/route (nothing is sent).
func defaultRouteIP() (string, error) {
	b, err := os.ReadFile("/proc/net/route")
	if err != nil {
		return "", err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || f[1] != "00000000" {
			continue
		}
		iface, err := net.InterfaceByName(f[0])
		if err != nil {
			return "", err
		}
		addrs, err := iface.Addrs()
		if err != nil {
			return "", err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
				return n.IP.String(), nil
			}
		}
	}
	return "", errors.New("no default route to take the node's IP from: set --node-ip")
}

func agentCommand() *cobra.Command {
	var o agentOptions
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run a worker node: kubelet over CRI (a containerd of its own by default) and the pod network",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := o.validate()
			if err != nil {
				return err
			}
			if len(o.join) == 0 {
				return errors.New("--join is required: the gossip address of any member of the cluster")
			}
			token, err := o.tokens.given()
			if err != nil {
				return err
			}
			if token == "" && o.tokens.gossipKey == "" {
				return fmt.Errorf("--token or --token-file is required: the cluster's token is in the data dir of any of its servers (%s)", tokenFileName)
			}
			gossipKey, err := o.tokens.secretKey(token)
			if err != nil {
				return err
			}
			logger, err := newLogger(o.logLevel)
			if err != nil {
				return err
			}
			logger = logger.With("node", s.name)
			gossip := s.gossipAddr
			if gossip == "" {
				gossip = net.JoinHostPort(s.nodeIP, "7946")
			}
			pool, err := membership.Create(membership.Config{Name: s.name, BindAddr: gossip, Logger: logger, SecretKey: gossipKey,
				Meta: membership.Meta{Role: membership.RoleAgent}})
			if err != nil {
				return err
			}
			defer pool.Leave(time.Second)
			ctx, stop := signalContext(cmd.Context())
			defer stop()
			go func() {
				if err := pool.Join(ctx, o.join); err != nil && ctx.Err() == nil {
					logger.Error("gossip join", "err", err)
				}
			}()
			// The host is a placeholder: the dialer picks a live server.
			cfg := &rest.Config{Host: "http://pontoon-servers", Dial: pool.APIDialer().DialContext, UserAgent: userAgent("kubelet")}
			return runAgent(ctx, s, cfg, logger)
		},
	}
	o.flags(cmd, true)
	cmd.AddCommand(agentCleanupCommand())
	return cmd
}

// runAgent runs a node until ctx ends: its containerd (unless it was given
// a runtime), the kubelet and its endpoint. The pods keep running after
// it returns.
func runAgent(ctx context.Context, s agentSettings, cfg *rest.Config, logger *slog.Logger) error {
	dirs := agentDirs(s.dataDir)
	for _, d := range []string{s.dataDir, dirs.images, dirs.pods} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	endpoint := s.runtimeEndpoint
	var localImages node.LocalImages
	if endpoint == "" {
		d, err := containerd.Start(ctx, containerd.Options{Dir: dirs.containerd, CNIBinDir: cni.BinDir, CNIConfDir: dirs.cniConf,
			SandboxImage: localimage.Pause, StreamAddress: s.nodeIP, Logger: logger})
		if err != nil {
			return err
		}
		defer func() {
			stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := d.Stop(stopCtx); err != nil {
				logger.Warn("stopping containerd", "err", err)
			}
		}()
		endpoint = d.Endpoint()
		if err := importImages(ctx, containerd.Socket(dirs.containerd), dirs.images, logger); err != nil {
			return err
		}
		l, err := containerd.OpenLocalImages(containerd.Socket(dirs.containerd))
		if err != nil {
			return err
		}
		defer l.Close()
		localImages = l
	}
	runtime, err := cri.Dial(ctx, endpoint, 30*time.Second)
	if err != nil {
		return err
	}
	defer runtime.Close()

	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	defer broadcaster.Shutdown()
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: s.name})

	kubelet, err := node.New(node.Config{Client: client, Runtime: runtime, NodeName: s.name, NodeIPs: []string{s.nodeIP},
		PodLogDir: dirs.pods, VolumeDir: dirs.volumes, CgroupParent: cgroupParent(s.name), ClusterDNS: s.clusterDNS, ClusterDomain: s.clusterDomain, ResolvConf: s.resolvConf,
		LocalImages: localImages, Recorder: recorder, Logger: logger})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.nodeIP, strconv.Itoa(s.kubeletPort)))
	if err != nil {
		return fmt.Errorf("kubelet endpoint: %w", err)
	}
	// The kubelet endpoint also serves the node's metrics, as the
	// kubelet's does.
	reg := newRegistry()
	mux := http.NewServeMux()
	mux.Handle("/", kubelet.Handler())
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	network, err := newNodeNetwork(s, dirs, client, reg, logger)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs <- fmt.Errorf("kubelet endpoint: %w", err)
		}
	})
	wg.Go(func() {
		err := node.RunNodeStatus(ctx, node.Registration{Client: client, Runtime: runtime, NodeName: s.name, NodeIPs: []string{s.nodeIP},
			Labels: s.labels, Taints: s.taints, MaxPods: s.maxPods, KubeletPort: s.kubeletPort, DataDir: s.dataDir,
			KubeletVersion: kubeversion.Info().GitVersion, Network: network.pods})
		if err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	wg.Go(func() {
		if err := kubelet.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- err
		}
	})
	network.run(ctx, &wg, errs)
	logger.Info("agent started", "node_ip", s.nodeIP, "kubelet", ln.Addr().String(), "runtime", endpoint)
	var exitErr error
	select {
	case <-ctx.Done():
	case exitErr = <-errs:
	}
	cancel()
	shutdownCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	srv.Shutdown(shutdownCtx)
	wg.Wait()
	logger.Info("agent stopped; its pods keep running")
	return exitErr
}

// dirs are where an agent keeps things under its data dir.
type dirs struct {
	containerd, cniConf, cniIPAM, images, pods, volumes string
}

func agentDirs(dataDir string) dirs {
	return dirs{
		containerd: filepath.Join(dataDir, "containerd"),
		cniConf:    filepath.Join(dataDir, "cni", "net.d"),
		cniIPAM:    filepath.Join(dataDir, "cni", "ipam"),
		images:     filepath.Join(dataDir, "images"),
		pods:       filepath.Join(dataDir, "pods"),
		volumes:    filepath.Join(dataDir, "volumes"),
	}
}

// importImages imports the images the agent makes itself (the sandbox
// image and busybox) and the archives in dir, as k3s imports its air-gap
// images at start.
func importImages(ctx context.Context, socket, dir string, logger *slog.Logger) error {
	for _, name := range []string{localimage.Pause, localimage.Busybox} {
		img, _ := localimage.Lookup(name)
		var b bytes.Buffer
		if err := localimage.Write(ctx, &b, img, localimage.BusyboxPath); err != nil {
			return err
		}
		if _, err := containerd.Import(ctx, socket, &b); err != nil {
			return fmt.Errorf("image %s: %w", name, err)
		}
	}
	archives, err := filepath.Glob(filepath.Join(dir, "*.tar"))
	if err != nil {
		return err
	}
	for _, a := range archives {
		f, err := os.Open(a)
		if err != nil {
			return err
		}
		names, err := containerd.Import(ctx, socket, f)
		f.Close()
		if err != nil {
			// One bad archive does not stop the node.
			logger.Error("image archive not imported", "file", a, "err", err)
			continue
		}
		logger.Info("image archive imported", "file", a, "images", names)
	}
	return nil
}

// cgroupParent is the cgroup of the named node's pods.
func cgroupParent(node string) string { return "/pontoon/" + node }

func agentCleanupCommand() *cobra.Command {
	var name, dataDir, logLevel string
	host, _ := os.Hostname()
	cmd := &cobra.Command{
		Use:   "cleanup",
		Short: "Remove everything a stopped agent left: pods, containers, mounts, cgroups, network allocations and its containerd",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if dataDir == "" {
				return errors.New("--data-dir is required")
			}
			logger, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			return cleanupAgent(cmd.Context(), name, dataDir, logger)
		},
	}
	cmd.Flags().StringVar(&name, "name", strings.ToLower(host), "the agent's node name")
	cmd.Flags().StringVar(&dataDir, "data-dir", "", "the agent's data dir (required)")
	cmd.Flags().StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

// cleanupAgent removes what the agent named name with dataDir made: it
// starts the agent's containerd to remove every pod through CRI (which
// releases their addresses through CNI), stops it, unmounts what is left
// under the data dir, removes the pods' cgroups and the pod bridge, and
// then the data dir. The agent must be stopped.
func cleanupAgent(ctx context.Context, name, dataDir string, logger *slog.Logger) error {
	dirs := agentDirs(dataDir)
	if _, err := os.Stat(filepath.Join(dirs.containerd, "config.toml")); err == nil {
		d, err := containerd.Start(ctx, containerd.Options{Dir: dirs.containerd, CNIBinDir: cni.BinDir, CNIConfDir: dirs.cniConf,
			SandboxImage: localimage.Pause, StreamAddress: "127.0.0.1", Logger: logger})
		if err != nil {
			return err
		}
		rt, err := cri.Dial(ctx, d.Endpoint(), 30*time.Second)
		if err == nil {
			var n int
			n, err = node.Cleanup(ctx, rt, cgroupParent(name))
			rt.Close()
			logger.Info("pods removed", "count", n)
		}
		stopCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if stopErr := d.Stop(stopCtx); err == nil {
			err = stopErr
		}
		if err != nil {
			return fmt.Errorf("cleanup: %w", err)
		}
	}
	if err := mounts.UnmountUnder(dataDir); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if err := cleanupNodeNetwork(ctx); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	if err := os.RemoveAll(dataDir); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	logger.Info("agent cleaned up", "data_dir", dataDir)
	return nil
}
