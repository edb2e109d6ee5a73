package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// Sizes of the network suite (issue 22's).
const (
	programmingPods = 100
	// programmingBatch pods start at once while their Services are
	// watched.
	programmingBatch = 10
	// dataPathRounds alternate the direct path and the ClusterIP, each
	// round dataPathConns connections and dataPathBulk of bulk transfer.
	dataPathRounds = 3
	dataPathConns  = 1000
	dataPathBulk   = 2 * time.Second
	dnsRounds      = 3
	dnsClients     = 16
	dnsDuration    = 3 * time.Second
	syncEndpoints  = 5
)

// syncSizes are the Service counts the proxy sync is measured at.
var syncSizes = []int{1000, 10000}

// The CoreDNS the DNS measurement compares with, and the Kubernetes
// release whose kube-proxy the proxy syncs compare with, built from the Go
// module proxy.
const (
	coreDNSVersion    = "v1.15.0"
	kubernetesVersion = "v1.33.13"
)

// networkResult is what the network suite measured.
type networkResult struct {
	programming             []time.Duration
	direct, viaService      dataPath
	pontoonDNS, coreDNS     dnsLoad
	syncs                   []proxySync
	dnsName, coreDNSVersion string
}

type dataPath struct {
	p50, p99 time.Duration
	// mbps is the bulk transfer's megabytes per second.
	mbps float64
}

type dnsLoad struct {
	qps      float64
	p50, p99 time.Duration
}

type proxySync struct {
	services int
	// full is a full sync; change the median of syncs after one
	// Service's endpoint changed; the same of kube-proxy.
	full, change                   time.Duration
	kubeProxyFull, kubeProxyChange time.Duration
}

// measureNetwork runs one server and two agents, each node in a network
// namespace of its own on a bridge in a hub namespace (as
// deploy/local-cluster.sh), and measures what a Service costs: how soon a
// Ready pod is reachable through its Service from the other node, the
// data path through a ClusterIP against the pod's address, the agent's
// DNS against CoreDNS, and the proxy's syncs with many Services.
func measureNetwork(r *cluster.Runner, bin string) networkResult {
	coreDNS, kubeProxyBin := buildCoreDNS(r), buildKubeProxy(r)
	ctx := context.Background()
	nn := cluster.NewNodeNet(r, "pontoon-bench-net", "10.251.0.")
	c := cluster.New(r, cluster.Options{Bin: bin, Servers: 1, BaseIP: 1, Net: nn, Args: []string{"--log-level", "warn"}})
	c.Start()
	srv := c.Leader(30 * time.Second)
	cs := srv.Clientset()
	// The agents' DNS forwards to an address of the hub where nothing
	// listens: no query leaves the machine.
	resolvConf := filepath.Join(r.TempDir(), "resolv.conf")
	if err := os.WriteFile(resolvConf, []byte("nameserver "+nn.Prefix+"1\n"), 0o644); err != nil {
		r.Fatalf("%v", err)
	}
	n1 := nn.StartAgent(bin, "n1", 11, c, []string{srv.GossipAddr()}, cs, "--resolv-conf", resolvConf, "--max-pods", "200", "--log-level", "warn")
	n2 := nn.StartAgent(bin, "n2", 12, c, []string{srv.GossipAddr()}, cs, "--resolv-conf", resolvConf, "--log-level", "warn")
	cluster.Eventually(r, 30*time.Second, func() error {
		_, err := cs.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	res := networkResult{coreDNSVersion: coreDNSVersion}

	log.Printf("network: programming latency of %d pods, %d at a time", programmingPods, programmingBatch)
	res.programming = measureProgramming(r, cs, n2)

	log.Printf("network: the data path through a ClusterIP and directly")
	server := startPod(r, cs, "dp-server", "n1", map[string]string{"app": "dp-server"})
	client := startPod(r, cs, "dp-client", "n2", nil)
	svc := createService(r, cs, "dp", map[string]string{"app": "dp-server"}, 8080)
	serverNs, clientNs := podNetns(r, n1, server.Status.PodIP), podNetns(r, n2, client.Status.PodIP)
	stop := serveEcho(r, serverNs, ":8080")
	res.direct, res.viaService = measureDataPath(r, clientNs, net.JoinHostPort(server.Status.PodIP, "8080"), net.JoinHostPort(svc.Spec.ClusterIP, "80"))
	stop()

	log.Printf("network: DNS, the agent's against CoreDNS %s", coreDNSVersion)
	res.dnsName = "dp.default.svc.cluster.local."
	coreDNSAddr := startCoreDNS(r, coreDNS, n2, c.Kubeconfig(srv))
	res.pontoonDNS, res.coreDNS = measureDNS(r, clientNs, "10.96.0.10:53", coreDNSAddr, res.dnsName, svc.Spec.ClusterIP)

	kpNs, _ := nn.AddNode("pontoon-kube-proxy", 13)
	kp := &kubeProxy{bin: kubeProxyBin, kubeconfig: c.Kubeconfig(srv), ns: kpNs, log: filepath.Join(r.TempDir(), "kube-proxy.log")}
	for _, n := range syncSizes {
		log.Printf("network: proxy syncs with %d Services of %d endpoints, Pontoon's and kube-proxy's", n, syncEndpoints)
		res.syncs = append(res.syncs, measureProxySync(r, cs, n2, kp, n))
	}
	return res
}

// cachedBinary is where a reference the benchmark builds is kept: the
// binary name of release version, under the user's cache; built says it
// is there already.
func cachedBinary(r *cluster.Runner, name, version string) (bin string, built bool) {
	home, err := os.UserHomeDir()
	if err != nil {
		r.Fatalf("%v", err)
	}
	bin = filepath.Join(home, ".cache", "pontoon-bench", name+"-"+version, name)
	_, err = os.Stat(bin)
	return bin, err == nil
}

// buildCoreDNS builds CoreDNS from the Go module proxy, once.
func buildCoreDNS(r *cluster.Runner) string {
	bin, built := cachedBinary(r, "coredns", coreDNSVersion)
	if built {
		return bin
	}
	log.Printf("network: building CoreDNS %s from the Go module proxy (once; a few minutes)", coreDNSVersion)
	cmd := exec.Command("go", "install", "github.com/coredns/coredns@"+coreDNSVersion)
	cmd.Env = append(os.Environ(), "GOBIN="+filepath.Dir(bin), "GOFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.Fatalf("building CoreDNS: %v: %s", err, out)
	}
	return bin
}

// podSpecOn is the benchmark's pod on node, running command.
func podSpecOn(node string, command ...string) corev1.PodSpec {
	spec := benchPodSpec()
	spec.NodeSelector = map[string]string{corev1.LabelHostname: node}
	spec.Containers[0].Command = command
	return spec
}

// startPod runs a sleeping pod on node and returns it once Running.
func startPod(r *cluster.Runner, cs kubernetes.Interface, name, node string, labels map[string]string) *corev1.Pod {
	ctx := context.Background()
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}, Spec: podSpecOn(node, "sleep", "3600")}
	if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
		r.Fatalf("create pod %s: %v", name, err)
	}
	cluster.Eventually(r, 2*time.Minute, func() error {
		got, err := cs.CoreV1().Pods("default").Get(ctx, name, metav1.GetOptions{})
		if err == nil && (!cluster.PodReady(got) || got.Status.PodIP == "") {
			err = fmt.Errorf("pod %s is %s", name, got.Status.Phase)
		}
		p = got
		return err
	})
	return p
}

// createService makes a ClusterIP Service on port 80 to targetPort of
// the pods selected.
func createService(r *cluster.Runner, cs kubernetes.Interface, name string, selector map[string]string, targetPort int) *corev1.Service {
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: corev1.ServiceSpec{Selector: selector,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(targetPort)}}}}
	got, err := cs.CoreV1().Services("default").Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		r.Fatalf("create service %s: %v", name, err)
	}
	return got
}

// podNetns is the network namespace of the pod with address ip on node
// a: the one of its containerd's pod namespaces (under its state dir)
// that holds the address.
func podNetns(r *cluster.Runner, a *cluster.Agent, ip string) *cluster.Netns {
	paths, _ := filepath.Glob(filepath.Join(a.DataDir, "containerd", "state", "*", "netns", "*"))
	for _, p := range paths {
		out, err := exec.Command("nsenter", "--net="+p, "ip", "-4", "-o", "addr", "show").Output()
		if err == nil && strings.Contains(string(out), " "+ip+"/") {
			return &cluster.Netns{Name: filepath.Base(p), Path: p}
		}
	}
	r.Fatalf("no network namespace of %s's pods holds the address %s (of %v)", a.Name, ip, paths)
	return nil
}

// measureProgramming creates programmingPods Services, then their pods
// on n1 a batch at a time, and measures for each pod the time from a
// watch seeing it Ready to the first connection from node n2 through its
// Service that succeeds.
func measureProgramming(r *cluster.Runner, cs kubernetes.Interface, n2 *cluster.Agent) []time.Duration {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ips := make([]string, programmingPods)
	for i := range programmingPods {
		ips[i] = createService(r, cs, fmt.Sprintf("prog-%d", i), map[string]string{"prog": strconv.Itoa(i)}, 8080).Spec.ClusterIP
	}
	// An informer, not a bare watch: it carries on across the watch's
	// ends.
	var mu sync.Mutex
	readyAt := map[string]time.Time{}
	seen := func(obj any) {
		if p, ok := obj.(*corev1.Pod); ok && cluster.PodReady(p) {
			mu.Lock()
			if _, ok := readyAt[p.Name]; !ok {
				readyAt[p.Name] = time.Now()
			}
			mu.Unlock()
		}
	}
	factory := informers.NewSharedInformerFactoryWithOptions(cs, 0, informers.WithNamespace("default"),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = "bench=prog" }))
	inf := factory.Core().V1().Pods().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: seen, UpdateFunc: func(_, obj any) { seen(obj) }}); err != nil {
		r.Fatalf("%v", err)
	}
	factory.Start(ctx.Done())
	defer func() {
		cancel()
		factory.Shutdown()
	}()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		r.Fatalf("pod informer did not sync")
	}
	out := make([]time.Duration, programmingPods)
	for batch := 0; batch < programmingPods; batch += programmingBatch {
		var wg sync.WaitGroup
		for i := batch; i < batch+programmingBatch; i++ {
			name := fmt.Sprintf("prog-%d", i)
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"bench": "prog", "prog": strconv.Itoa(i)}},
				Spec: podSpecOn("n1", "httpd", "-f", "-p", "8080")}
			if _, err := cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{}); err != nil {
				r.Fatalf("create pod %s: %v", name, err)
			}
			wg.Go(func() {
				connected := firstConnection(r, n2.Netns, net.JoinHostPort(ips[i], "80"), 2*time.Minute)
				// The watch may deliver the Ready pod after the
				// proxy's watch delivered its endpoint: that counts
				// as no latency.
				var ready time.Time
				cluster.Eventually(r, 30*time.Second, func() error {
					mu.Lock()
					defer mu.Unlock()
					var ok bool
					if ready, ok = readyAt[name]; !ok {
						return fmt.Errorf("%s was reached through its Service and is not seen Ready", name)
					}
					return nil
				})
				out[i] = max(0, connected.Sub(ready))
			})
		}
		wg.Wait()
	}
	deletePods(r, cs, "prog")
	return out
}

// firstConnection dials addr from ns every 5 ms until a connection
// succeeds, and returns when it did.
func firstConnection(r *cluster.Runner, ns *cluster.Netns, addr string, timeout time.Duration) time.Time {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		c, err := ns.DialContext(ctx, "tcp", addr)
		cancel()
		if err == nil {
			at := time.Now()
			c.Close()
			return at
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.Fatalf("no connection to %s from %s within %v", addr, ns.Name, timeout)
	return time.Time{}
}

// echoSize is the size of a request and of its answer on the data path.
const echoSize = 64

// serveEcho serves addr in ns: a connection whose first byte is 'B' is a
// bulk upload the server reads to its end; any other sends requests of
// echoSize bytes, each answered with as many. It returns a func that
// stops it.
func serveEcho(r *cluster.Runner, ns *cluster.Netns, addr string) func() {
	ln, err := ns.Listen("tcp", addr)
	if err != nil {
		r.Fatalf("listen in %s: %v", ns.Name, err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 64<<10)
				if _, err := io.ReadFull(c, buf[:echoSize]); err != nil {
					return
				}
				if buf[0] == 'B' {
					io.CopyBuffer(io.Discard, c, buf)
					return
				}
				for {
					if _, err := c.Write(buf[:echoSize]); err != nil {
						return
					}
					if _, err := io.ReadFull(c, buf[:echoSize]); err != nil {
						return
					}
				}
			}()
		}
	}()
	return func() { ln.Close() }
}

// measureDataPath measures from the client pod's namespace, in rounds
// that alternate the two addresses: a new connection with one request
// and its answer, dataPathConns times, and a bulk upload over one
// connection; latency is over every connection, throughput the median
// round.
func measureDataPath(r *cluster.Runner, ns *cluster.Netns, direct, service string) (dataPath, dataPath) {
	firstConnection(r, ns, service, time.Minute)
	type samples struct {
		lat  []time.Duration
		mbps []float64
	}
	var d, s samples
	for range dataPathRounds {
		for _, t := range []struct {
			addr string
			into *samples
		}{{direct, &d}, {service, &s}} {
			for range dataPathConns {
				t.into.lat = append(t.into.lat, requestOnce(r, ns, t.addr))
			}
			t.into.mbps = append(t.into.mbps, bulk(r, ns, t.addr))
		}
	}
	result := func(s samples) dataPath {
		p50, p99 := durations(s.lat)
		slices.Sort(s.mbps)
		return dataPath{p50: p50, p99: p99, mbps: s.mbps[len(s.mbps)/2]}
	}
	return result(d), result(s)
}

// requestOnce connects to addr, sends a request and reads its answer.
func requestOnce(r *cluster.Runner, ns *cluster.Netns, addr string) time.Duration {
	buf := make([]byte, echoSize)
	start := time.Now()
	c, err := ns.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		r.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	if _, err := c.Write(buf); err != nil {
		r.Fatalf("request to %s: %v", addr, err)
	}
	if _, err := io.ReadFull(c, buf); err != nil {
		r.Fatalf("answer from %s: %v", addr, err)
	}
	return time.Since(start)
}

// bulk uploads to addr for dataPathBulk and returns megabytes per second.
func bulk(r *cluster.Runner, ns *cluster.Netns, addr string) float64 {
	c, err := ns.DialContext(context.Background(), "tcp", addr)
	if err != nil {
		r.Fatalf("dial %s: %v", addr, err)
	}
	defer c.Close()
	buf := make([]byte, 64<<10)
	buf[0] = 'B'
	var sent int64
	start := time.Now()
	for time.Since(start) < dataPathBulk {
		n, err := c.Write(buf)
		if err != nil {
			r.Fatalf("bulk to %s: %v", addr, err)
		}
		sent += int64(n)
		buf[0] = 0
	}
	return float64(sent) / time.Since(start).Seconds() / 1e6
}

// startCoreDNS runs CoreDNS in the node's namespace on its address, port
// 1053, with its kubernetes plugin on the cluster's API and the cache
// kubeadm's Corefile has; it returns the address.
func startCoreDNS(r *cluster.Runner, bin string, node *cluster.Agent, kubeconfig string) string {
	addr := net.JoinHostPort(node.IP, "1053")
	corefile := filepath.Join(r.TempDir(), "Corefile")
	conf := fmt.Sprintf(".:1053 {\n    bind %s\n    errors\n    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        kubeconfig %s\n        pods insecure\n        fallthrough in-addr.arpa ip6.arpa\n    }\n    cache 30\n}\n",
		node.IP, kubeconfig)
	if err := os.WriteFile(corefile, []byte(conf), 0o644); err != nil {
		r.Fatalf("%v", err)
	}
	p := cluster.StartProcess(r, node.Netns, filepath.Join(filepath.Dir(corefile), "coredns.log"), bin, "-conf", corefile)
	r.Cleanup(func() { p.Stop(r, syscall.SIGTERM) })
	return addr
}

// measureDNS sends A queries for name from ns to the two servers with
// dnsClients clients, each waiting for its answer before the next query,
// in rounds that alternate them; each figure is the median round. Every
// answer must hold want.
func measureDNS(r *cluster.Runner, ns *cluster.Netns, pontoon, coreDNS, name, want string) (dnsLoad, dnsLoad) {
	for _, addr := range []string{pontoon, coreDNS} {
		cluster.Eventually(r, time.Minute, func() error {
			_, err := query(ns, addr, name, want)
			return err
		})
	}
	var p, c []dnsLoad
	for range dnsRounds {
		p = append(p, dnsRound(r, ns, pontoon, name, want))
		c = append(c, dnsRound(r, ns, coreDNS, name, want))
	}
	return medianLoad(p), medianLoad(c)
}

// query asks addr once and checks the answer.
func query(ns *cluster.Netns, addr, name, want string) (time.Duration, error) {
	conn, err := ns.DialContext(context.Background(), "udp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	return ask(&dns.Conn{Conn: conn}, name, want)
}

func ask(conn *dns.Conn, name, want string) (time.Duration, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	start := time.Now()
	conn.SetDeadline(start.Add(2 * time.Second))
	if err := conn.WriteMsg(m); err != nil {
		return 0, err
	}
	reply, err := conn.ReadMsg()
	took := time.Since(start)
	if err != nil {
		return 0, err
	}
	if len(reply.Answer) != 1 || reply.Answer[0].(*dns.A).A.String() != want {
		return 0, fmt.Errorf("%s answered %v, not %s", name, reply.Answer, want)
	}
	return took, nil
}

func dnsRound(r *cluster.Runner, ns *cluster.Netns, addr, name, want string) dnsLoad {
	var mu sync.Mutex
	var lat []time.Duration
	var failed error
	var wg sync.WaitGroup
	start := time.Now()
	for range dnsClients {
		wg.Go(func() {
			conn, err := ns.DialContext(context.Background(), "udp", addr)
			if err != nil {
				mu.Lock()
				failed = err
				mu.Unlock()
				return
			}
			defer conn.Close()
			dc := &dns.Conn{Conn: conn}
			var mine []time.Duration
			for time.Since(start) < dnsDuration {
				took, err := ask(dc, name, want)
				if err != nil {
					mu.Lock()
					failed = errors.Join(failed, err)
					mu.Unlock()
					return
				}
				mine = append(mine, took)
			}
			mu.Lock()
			lat = append(lat, mine...)
			mu.Unlock()
		})
	}
	wg.Wait()
	if failed != nil {
		r.Fatalf("DNS load on %s: %v", addr, failed)
	}
	p50, p99 := durations(lat)
	return dnsLoad{qps: float64(len(lat)) / time.Since(start).Seconds(), p50: p50, p99: p99}
}

func medianLoad(rounds []dnsLoad) dnsLoad {
	slices.SortFunc(rounds, func(a, b dnsLoad) int { return cmp.Compare(a.qps, b.qps) })
	return rounds[len(rounds)/2]
}

// syncSlice is Service s<i>'s EndpointSlice, its endpoints' addresses
// shifted by gen.
func syncSlice(i, gen int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i),
		Labels: map[string]string{discoveryv1.LabelServiceName: fmt.Sprintf("s%d", i)}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(8080)), Protocol: ptr.To(corev1.ProtocolTCP)}}}
	for e := range syncEndpoints {
		// Addresses in the pod range that no pod has.
		k := i*syncEndpoints + e + gen
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.%d", 100+k/250%150, 1+k%250)},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}, NodeName: ptr.To("n1")})
	}
	return s
}

// syncedProxy is a service proxy whose syncs the benchmark reads from its
// metrics: Pontoon's on an agent, or kube-proxy.
type syncedProxy struct {
	name string
	ns   *cluster.Netns
	// metrics is the address of its metrics, inside ns.
	metrics string
	// The histograms of full and partial syncs' durations: name and
	// labels ({...} or "").
	full, partial [2]string
}

// proxyMetrics are the sums and counts of a proxy's sync durations.
type proxyMetrics struct {
	fullSum, partialSum     time.Duration
	fullCount, partialCount int64
}

// scrape reads the proxy's metrics.
func (p syncedProxy) scrape(r *cluster.Runner) proxyMetrics {
	c, err := p.ns.DialContext(context.Background(), "tcp", p.metrics)
	if err != nil {
		r.Fatalf("metrics of %s: %v", p.name, err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", p.metrics)
	var m proxyMetrics
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		name, value, _ := strings.Cut(sc.Text(), " ")
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			continue
		}
		switch name {
		case p.full[0] + "_sum" + p.full[1]:
			m.fullSum = time.Duration(v * float64(time.Second))
		case p.partial[0] + "_sum" + p.partial[1]:
			m.partialSum = time.Duration(v * float64(time.Second))
		case p.full[0] + "_count" + p.full[1]:
			m.fullCount = int64(v)
		case p.partial[0] + "_count" + p.partial[1]:
			m.partialCount = int64(v)
		}
	}
	return m
}

// settle waits until the proxy has synced everything it was told of: two
// scrapes 2 s apart that agree.
func (p syncedProxy) settle(r *cluster.Runner) proxyMetrics {
	prev := p.scrape(r)
	for deadline := time.Now().Add(syncTimeout); time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
		m := p.scrape(r)
		if m == prev {
			return m
		}
		prev = m
	}
	r.Fatalf("%s kept syncing for %v", p.name, syncTimeout)
	return prev
}

// syncTimeout bounds the wait for a proxy's sync: kube-proxy's first sync
// of 10,000 Services on iptables-nft did not end within it here.
const syncTimeout = 5 * time.Minute

// nextSync waits for a sync of the kind after before, and returns how long
// the syncs since before took on average, or 0 when none ended within
// syncTimeout.
func (p syncedProxy) nextSync(r *cluster.Runner, before proxyMetrics, full bool) time.Duration {
	var after proxyMetrics
	for deadline := time.Now().Add(syncTimeout); ; time.Sleep(time.Second) {
		after = p.scrape(r)
		if full && after.fullCount != before.fullCount || !full && after.partialCount != before.partialCount {
			break
		}
		if time.Now().After(deadline) {
			log.Printf("network: %s: no sync (full: %v) within %v", p.name, full, syncTimeout)
			return 0
		}
	}
	if full {
		return (after.fullSum - before.fullSum) / time.Duration(after.fullCount-before.fullCount)
	}
	return (after.partialSum - before.partialSum) / time.Duration(after.partialCount-before.partialCount)
}

// changes updates one Service's EndpointSlice 5 times, shifted by shift,
// and returns the median time of the proxy's syncs after each.
func (p syncedProxy) changes(r *cluster.Runner, cs kubernetes.Interface, shift int) time.Duration {
	var took []time.Duration
	for round := range 5 {
		before := p.settle(r)
		if _, err := cs.DiscoveryV1().EndpointSlices("sync").Update(context.Background(), syncSlice(round, shift+round+1), metav1.UpdateOptions{}); err != nil {
			r.Fatalf("update endpoint slice: %v", err)
		}
		took = append(took, p.nextSync(r, before, false))
	}
	median, _ := durations(took)
	return median
}

// measureProxySync grows the cluster to n Services without selectors,
// each with an EndpointSlice of syncEndpoints endpoints, and measures,
// from their metrics, Pontoon's proxy on node n2 and kube-proxy in a node
// namespace of its own: a full sync (for Pontoon's asked for by removing
// one of its jumps, as a firewall's restart would; kube-proxy's is its
// first, started on the n Services) and the syncs after one Service's
// endpoint changed.
func measureProxySync(r *cluster.Runner, cs kubernetes.Interface, n2 *cluster.Agent, kp *kubeProxy, n int) proxySync {
	ctx := context.Background()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sync"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		r.Fatalf("namespace: %v", err)
	}
	have, err := cs.CoreV1().Services("sync").List(ctx, metav1.ListOptions{})
	if err != nil {
		r.Fatalf("list services: %v", err)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i := range next {
				svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("s%d", i)},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt(8080)}}}}
				if _, err := cs.CoreV1().Services("sync").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
					r.Fatalf("create service: %v", err)
				}
				if _, err := cs.DiscoveryV1().EndpointSlices("sync").Create(ctx, syncSlice(i, 0), metav1.CreateOptions{}); err != nil {
					r.Fatalf("create endpoint slice: %v", err)
				}
			}
		})
	}
	for i := len(have.Items); i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()

	res := proxySync{services: n}
	pontoon := syncedProxy{name: "n2's proxy", ns: n2.Netns, metrics: net.JoinHostPort(n2.IP, "10250"),
		full:    [2]string{"pontoon_proxy_sync_duration_seconds", `{sync="full"}`},
		partial: [2]string{"pontoon_proxy_sync_duration_seconds", `{sync="partial"}`}}
	before := pontoon.settle(r)
	jump := []string{"-t", "nat", "-D", "PREROUTING", "-m", "comment", "--comment", "pontoon service portals", "-j", "PONTOON-SERVICES"}
	if out, errOut, code := n2.Netns.Run("iptables", jump...); code != 0 {
		r.Fatalf("iptables %s: %s%s", strings.Join(jump, " "), out, errOut)
	}
	res.full = pontoon.nextSync(r, before, true)
	// Shifted by n, the changes differ from those made at a smaller n.
	res.change = pontoon.changes(r, cs, n)

	reference := kp.start(r)
	if res.kubeProxyFull = reference.nextSync(r, proxyMetrics{}, true); res.kubeProxyFull > 0 {
		res.kubeProxyChange = reference.changes(r, cs, 2*n)
	}
	kp.stop(r)
	return res
}

// kubeProxy runs kube-proxy (iptables mode), built from the Go module
// proxy, in a node namespace of its own on the cluster's API.
type kubeProxy struct {
	bin, kubeconfig string
	ns              *cluster.Netns
	proc            *cluster.Process
	log             string
}

func (k *kubeProxy) start(r *cluster.Runner) syncedProxy {
	// Sysctls and conntrack left as they are; the periodic full sync
	// an hour away.
	k.proc = cluster.StartProcess(r, k.ns, k.log, k.bin, "--kubeconfig", k.kubeconfig, "--proxy-mode", "iptables", "--hostname-override", "kube-proxy",
		"--cluster-cidr", "10.244.0.0/16", "--metrics-bind-address", "127.0.0.1:10249", "--healthz-bind-address", "127.0.0.1:10256",
		"--conntrack-max-per-core", "0", "--conntrack-tcp-timeout-established", "0", "--conntrack-tcp-timeout-close-wait", "0",
		"--iptables-sync-period", "1h")
	// Stopped at the end of each size, and by the cleanup when the run
	// fails before.
	proc := k.proc
	r.Cleanup(func() { proc.Stop(r, syscall.SIGTERM) })
	p := syncedProxy{name: "kube-proxy", ns: k.ns, metrics: "127.0.0.1:10249",
		full:    [2]string{"kubeproxy_sync_full_proxy_rules_duration_seconds", `{ip_family="IPv4"}`},
		partial: [2]string{"kubeproxy_sync_partial_proxy_rules_duration_seconds", `{ip_family="IPv4"}`}}
	cluster.Eventually(r, time.Minute, func() error {
		c, err := k.ns.DialContext(context.Background(), "tcp", p.metrics)
		if err == nil {
			c.Close()
		}
		return err
	})
	return p
}

func (k *kubeProxy) stop(r *cluster.Runner) { k.proc.Stop(r, syscall.SIGTERM) }

// buildKubeProxy builds kube-proxy from the k8s.io/kubernetes module of
// the Go module proxy into the user's cache, once: its go.mod points the
// staging modules at ./staging, which the module's zip does not hold, so
// they are pointed at the published modules of the same release (as
// ../shared/conformance/build.sh builds the conformance suite).
func buildKubeProxy(r *cluster.Runner) string {
	bin, built := cachedBinary(r, "kube-proxy", kubernetesVersion)
	if built {
		return bin
	}
	log.Printf("network: building kube-proxy %s from the Go module proxy (once; several minutes)", kubernetesVersion)
	env := append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "CGO_ENABLED=0")
	run := func(wd string, args ...string) []byte {
		cmd := exec.Command("go", args...)
		cmd.Dir, cmd.Env = wd, env
		out, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			r.Fatalf("go %s: %v: %s", strings.Join(args, " "), err, stderr)
		}
		return out
	}
	var mod struct{ Dir string }
	if err := json.Unmarshal(run(os.TempDir(), "mod", "download", "-json", "k8s.io/kubernetes@"+kubernetesVersion), &mod); err != nil {
		r.Fatalf("k8s.io/kubernetes: %v", err)
	}
	src := filepath.Join(filepath.Dir(bin), "src")
	os.RemoveAll(src)
	if err := os.MkdirAll(filepath.Dir(src), 0o755); err != nil {
		r.Fatalf("%v", err)
	}
	if out, err := exec.Command("cp", "-r", mod.Dir, src).CombinedOutput(); err != nil {
		r.Fatalf("copy k8s.io/kubernetes: %v: %s", err, out)
	}
	defer os.RemoveAll(src)
	if out, err := exec.Command("chmod", "-R", "u+w", src).CombinedOutput(); err != nil {
		r.Fatalf("chmod: %v: %s", err, out)
	}
	gomod, err := os.ReadFile(filepath.Join(src, "go.mod"))
	if err != nil {
		r.Fatalf("%v", err)
	}
	staging := regexp.MustCompile(`(?m)^(\s+)(k8s\.io/[a-z0-9-]+) => \./staging/src/k8s\.io/[a-z0-9-]+$`)
	gomod = staging.ReplaceAll(gomod, []byte("${1}${2} => ${2} v0."+strings.TrimPrefix(kubernetesVersion, "v1.")))
	gomod = regexp.MustCompile(`(?m)^.*k8s\.io/sample-apiserver.*$\n`).ReplaceAll(gomod, nil)
	if err := os.WriteFile(filepath.Join(src, "go.mod"), gomod, 0o644); err != nil {
		r.Fatalf("%v", err)
	}
	run(src, "build", "-o", bin, "./cmd/kube-proxy")
	return bin
}

func (n *networkResult) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "\n## Services and DNS across nodes (issue 22)\n\n")
	fmt.Fprintf(b, "One server and two agents (`pontoon agent`, each with its own containerd), each node in a network namespace of its own on a bridge, as `deploy/local-cluster.sh` lays them out; clients run in a pod's network namespace or in a node's.\n\n")
	pp50, pp99 := durations(n.programming)
	fmt.Fprintf(b, "### Network programming latency, %d pods\n\n", len(n.programming))
	fmt.Fprintf(b, "%d Services first, then a pod for each on node n1, %d at a time; for each pod, from a watch seeing it Ready until the first connection to its ClusterIP from node n2 (tried every 5 ms) succeeds. Kubernetes' SLO is 30 s at p99.\n\n", len(n.programming), programmingBatch)
	fmt.Fprintf(b, "| p50 | p99 |\n|---|---|\n| %s | %s |\n\n", ms(pp50), ms(pp99))
	fmt.Fprintf(b, "### Data path: a ClusterIP against the pod's address\n\n")
	fmt.Fprintf(b, "A client pod on n2 and a server pod on n1 (the benchmark's own server, in the pod's network namespace), in %d rounds that alternate the two addresses. Latency: a new connection, a %d-byte request and its answer, %d per round; throughput: one connection uploading for %v, the median round.\n\n",
		dataPathRounds, echoSize, dataPathConns, dataPathBulk)
	fmt.Fprintf(b, "The ratio is how much the ClusterIP costs: its latency over the pod address's, the pod address's throughput over its (1.00x: none).\n\n")
	fmt.Fprintf(b, "| | p50 | p99 | MB/s |\n|---|---|---|---|\n| pod address | %s | %s | %.0f |\n| ClusterIP | %s | %s | %.0f |\n| ratio | %s | %s | %s |\n\n",
		ms(n.direct.p50), ms(n.direct.p99), n.direct.mbps, ms(n.viaService.p50), ms(n.viaService.p99), n.viaService.mbps,
		ratio(float64(n.viaService.p50), float64(n.direct.p50)), ratio(float64(n.viaService.p99), float64(n.direct.p99)), ratio(n.direct.mbps, n.viaService.mbps))
	fmt.Fprintf(b, "### DNS: the agent's against CoreDNS %s\n\n", n.coreDNSVersion)
	fmt.Fprintf(b, "A queries for `%s` from the client pod's namespace, %d clients each waiting for its answer, %v a round, %d rounds alternating the servers, the median round. CoreDNS (built from the Go module proxy) runs on the same node with its `kubernetes` plugin on the same API and kubeadm's `cache 30`; the agent's DNS answers from its watches.\n\n",
		n.dnsName, dnsClients, dnsDuration, dnsRounds)
	fmt.Fprintf(b, "| | queries/s | p50 | p99 |\n|---|---|---|---|\n| Pontoon | %.0f | %s | %s |\n| CoreDNS | %.0f | %s | %s |\n| ratio | %s | %s | %s |\n\n",
		n.pontoonDNS.qps, ms(n.pontoonDNS.p50), ms(n.pontoonDNS.p99), n.coreDNS.qps, ms(n.coreDNS.p50), ms(n.coreDNS.p99),
		ratio(n.pontoonDNS.qps, n.coreDNS.qps), ratio(float64(n.pontoonDNS.p50), float64(n.coreDNS.p50)), ratio(float64(n.pontoonDNS.p99), float64(n.coreDNS.p99)))
	fmt.Fprintf(b, "### Proxy syncs, against kube-proxy %s\n\n", kubernetesVersion)
	fmt.Fprintf(b, "Services of %d endpoints each, without selectors; the time each proxy took to compute its rules and load them (`iptables-restore`, on Debian's iptables-nft), from its own metrics (`pontoon_proxy_sync_duration_seconds`, kube-proxy's `sync_full_proxy_rules_duration_seconds` and `sync_partial_…`). "+
		"Pontoon's proxy runs on node n2; kube-proxy (iptables mode, built from the Go module proxy) in a node namespace of its own on the same API. "+
		"Pontoon's full sync is asked for by deleting one of its jumps (as a firewall's restart would), kube-proxy's is its first, started on the Services; a one-Service change is the median of 5 syncs after one EndpointSlice changed.\n\n", syncEndpoints)
	b.WriteString("| Services | full sync: Pontoon | kube-proxy | ratio | one-Service change: Pontoon | kube-proxy | ratio |\n|---|---|---|---|---|---|---|\n")
	// A sync that did not end within syncTimeout is 0.
	took := func(d time.Duration) string {
		if d == 0 {
			return fmt.Sprintf("not within %v", syncTimeout)
		}
		return ms(d)
	}
	for _, s := range n.syncs {
		fmt.Fprintf(b, "| %d | %s | %s | %s | %s | %s | %s |\n", s.services, took(s.full), took(s.kubeProxyFull), ratio(float64(s.full), float64(s.kubeProxyFull)),
			took(s.change), took(s.kubeProxyChange), ratio(float64(s.change), float64(s.kubeProxyChange)))
	}
	fmt.Fprintf(b, "\n### Goals (issue 22)\n\n")
	writeGoal(b, pp99 < time.Second, fmt.Sprintf("network programming p99 under 1 s (%s)", ms(pp99)))
	writeGoal(b, float64(n.viaService.p50) <= 1.05*float64(n.direct.p50) && n.viaService.mbps*1.05 >= n.direct.mbps,
		fmt.Sprintf("the ClusterIP within 1.05x of the pod address (latency p50 %s, throughput %s)",
			ratio(float64(n.viaService.p50), float64(n.direct.p50)), ratio(n.direct.mbps, n.viaService.mbps)))
	writeGoal(b, n.pontoonDNS.qps >= n.coreDNS.qps && n.pontoonDNS.p99 <= n.coreDNS.p99,
		fmt.Sprintf("DNS at least CoreDNS's throughput at no higher p99 (%s, p99 %s vs %s)", ratio(n.pontoonDNS.qps, n.coreDNS.qps), ms(n.pontoonDNS.p99), ms(n.coreDNS.p99)))
	for _, s := range n.syncs {
		if s.services == 10000 {
			writeGoal(b, s.full > 0 && s.full < 2*time.Second, fmt.Sprintf("a full sync of 10,000 Services under 2 s (%s)", took(s.full)))
			writeGoal(b, s.change > 0 && s.change < 100*time.Millisecond, fmt.Sprintf("a one-Service change with 10,000 Services under 100 ms (%s)", took(s.change)))
		}
	}
	b.WriteString("\n")
}
