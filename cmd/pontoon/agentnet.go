package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes"

	"github.com/pontoon-dev/pontoon/netproxy"
	"github.com/pontoon-dev/pontoon/netproxy/clusterdns"
	"github.com/pontoon-dev/pontoon/node/cni"
)

// bridgeName is the pod bridge of a node.
const bridgeName = "pontoon0"

// nodeNetwork is the network side of a node: the pod network's CNI
// config, the service proxy, the routes to the other nodes' pods and the
// cluster DNS. What it programs stays when the agent stops, so the node's
// pods keep their network; cleanupNodeNetwork removes it.
type nodeNetwork struct {
	pods   *podNetwork
	proxy  *netproxy.Proxy
	routes *netproxy.Routes
	dns    *clusterdns.Server
	dnsIP  net.IP
}

func newNodeNetwork(s agentSettings, dirs dirs, client kubernetes.Interface, metrics prometheus.Registerer, logger *slog.Logger) (*nodeNetwork, error) {
	n := &nodeNetwork{pods: &podNetwork{conf: cni.Network{ConfDir: dirs.cniConf, DataDir: dirs.cniIPAM, Bridge: bridgeName}, logger: logger},
		dnsIP: net.ParseIP(s.clusterDNS[0])}
	ipt, err := netproxy.NewIPTables()
	if err != nil {
		return nil, err
	}
	n.proxy, err = netproxy.NewProxy(netproxy.ProxyConfig{Client: client, Iptables: ipt, Conntrack: netproxy.LinkConntrack{}, Logger: logger,
		HealthCheckHost: s.nodeIP, Metrics: metrics,
		Rules: netproxy.Config{NodeName: s.name, ClusterCIDR: s.clusterNet, ServiceCIDR: s.serviceNet, ClusterDNS: n.dnsIP}})
	if err != nil {
		return nil, err
	}
	links := netproxy.LinkRoutes{ServiceLink: bridgeName, RouteLocalnet: net.ParseIP(s.nodeIP).IsLoopback()}
	n.routes, err = netproxy.NewRoutes(netproxy.RoutesConfig{Client: client, NodeName: s.name, ServiceCIDR: s.serviceNet,
		Table: links, Logger: logger})
	if err != nil {
		return nil, err
	}
	upstreams, err := clusterdns.UpstreamsFrom(s.resolvConf, n.dnsIP.String())
	if err != nil {
		logger.Warn("the cluster DNS answers only the cluster's names", "err", err)
	}
	n.dns, err = clusterdns.New(clusterdns.Config{Client: client, Domain: s.clusterDomain, Listen: net.JoinHostPort(n.dnsIP.String(), "53"),
		Upstreams: upstreams, Logger: logger})
	if err != nil {
		return nil, err
	}
	return n, nil
}

// run runs the proxy, the routes and the DNS in wg until ctx ends; the
// first to fail sends its error to errs.
func (n *nodeNetwork) run(ctx context.Context, wg *sync.WaitGroup, errs chan<- error) {
	wg.Go(func() {
		if err := n.proxy.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- fmt.Errorf("service proxy: %w", err)
		}
	})
	wg.Go(func() {
		if err := n.routes.Run(ctx); err != nil && ctx.Err() == nil {
			errs <- fmt.Errorf("node routes: %w", err)
		}
	})
	wg.Go(func() {
		err := netproxy.AddLocalAddress(n.dnsIP)
		if err == nil {
			err = n.dns.Run(ctx)
		}
		if err != nil && ctx.Err() == nil {
			errs <- fmt.Errorf("cluster DNS: %w", err)
		}
	})
}

// cleanupNodeNetwork removes what a node's network programmed: the pod
// bridge, the proxy's rules, the routes and the cluster DNS address.
func cleanupNodeNetwork(ctx context.Context) error {
	if err := cni.RemoveBridge(bridgeName); err != nil {
		return err
	}
	ipt, err := netproxy.NewIPTables()
	if err != nil {
		return err
	}
	if err := netproxy.RemoveRules(ctx, ipt); err != nil {
		return fmt.Errorf("service rules: %w", err)
	}
	if err := netproxy.RemoveRoutes(); err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	return netproxy.RemoveLocalAddresses()
}

// podNetwork writes the CNI config once the node has its pod CIDR.
type podNetwork struct {
	conf   cni.Network
	logger *slog.Logger
}

func (n *podNetwork) SetPodCIDR(cidr string) error {
	_, ipnet, err := net.ParseCIDR(cidr)
	if err != nil {
		return err
	}
	c := n.conf
	c.PodCIDR = ipnet
	changed, err := cni.Write(c)
	if err != nil {
		return fmt.Errorf("CNI config: %w", err)
	}
	if changed {
		n.logger.Info("pod network configured", "pod_cidr", cidr)
	}
	return nil
}
