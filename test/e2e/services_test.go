package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// echoScript serves, on 8080, the pod's name at / and the client's
// address at /cgi-bin/ip.
const echoScript = `mkdir -p /www/cgi-bin && hostname > /www/index.html &&
printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/ip && chmod +x /www/cgi-bin/ip &&
exec httpd -f -p 8080 -h /www`

// checkServices runs an echo Deployment with a pod on each of the two
// agents and a client pod on the first, and checks the pod network and
// the service proxy between them: pod to pod across nodes with the
// source address kept; a ClusterIP reaching pods on both nodes; a
// NodePort through each node, from a pod and from outside the cluster
// (the servers' namespace); a LoadBalancer at the nodes' addresses; the
// API through the kubernetes Service from
// each node; a Service without endpoints and an address no Service holds
// refused at once; and each Node's NetworkUnavailable condition cleared.
// It removes what it made.
func checkServices(t *testing.T, c *cluster.Cluster, srv *cluster.Server, cs kubernetes.Interface, net *cluster.NodeNet, agents []*cluster.Agent) {
	ctx := context.Background()
	exec := func(pod string, args ...string) (string, error) {
		out, errOut, code := c.Kubectl(srv, "", append([]string{"exec", pod, "--"}, args...)...)
		if code != 0 {
			return out, fmt.Errorf("exit %d: %s", code, strings.TrimSpace(errOut))
		}
		return strings.TrimSpace(out), nil
	}
	for _, a := range agents {
		cluster.Eventually(t, 30*time.Second, func() error {
			n, err := cs.CoreV1().Nodes().Get(ctx, a.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			for _, cond := range n.Status.Conditions {
				if cond.Type == corev1.NodeNetworkUnavailable && cond.Status == corev1.ConditionFalse {
					return nil
				}
			}
			return fmt.Errorf("%s's NetworkUnavailable is not cleared: %+v", a.Name, n.Status.Conditions)
		})
	}

	labels := map[string]string{"app": "echo"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "echo"},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](2),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{
					TerminationGracePeriodSeconds: ptr.To[int64](1),
					Containers: []corev1.Container{{Name: "echo", Image: busybox, Command: []string{"sh", "-c", echoScript},
						// Ready until /tmp/unready exists.
						ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: &corev1.ExecAction{Command: []string{"test", "!", "-e", "/tmp/unready"}}},
							PeriodSeconds: 1, FailureThreshold: 1}}},
					TopologySpreadConstraints: []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelHostname,
						WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: labels}}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments("default").Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Selector: labels,
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
	svc, err := cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	empty, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "empty"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "none"}, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	client := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "netclient"}, Spec: corev1.PodSpec{NodeName: agents[0].Name,
		TerminationGracePeriodSeconds: ptr.To[int64](1), Containers: []corev1.Container{{Name: "c", Image: busybox, Command: []string{"sleep", "3600"}}}}}
	createPod(t, cs, client)
	defer func() {
		cs.AppsV1().Deployments("default").Delete(ctx, "echo", metav1.DeleteOptions{})
		cs.CoreV1().Services("default").Delete(ctx, "echo", metav1.DeleteOptions{})
		cs.CoreV1().Services("default").Delete(ctx, "empty", metav1.DeleteOptions{})
		deletePod(t, cs, "netclient")
	}()
	echo := runningPods(t, cs, "app=echo", 2, "")
	client = waitPod(t, cs, "netclient", "running with an address", func(p *corev1.Pod) bool {
		return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != ""
	})
	var remote corev1.Pod
	for _, p := range echo {
		if p.Spec.NodeName != client.Spec.NodeName {
			remote = p
		}
	}
	if remote.Name == "" {
		t.Fatalf("no echo pod on the other node: %v", echo)
	}

	// Pod to pod across nodes, the source address kept.
	// (busybox's httpd gives it as an IPv4-mapped IPv6 address.)
	if out, err := exec("netclient", "wget", "-qO-", "http://"+remote.Status.PodIP+":8080/cgi-bin/ip"); err != nil || strings.Trim(strings.TrimPrefix(out, "[::ffff:"), "]") != client.Status.PodIP {
		t.Fatalf("netclient → %s on %s: %q (want its own address %s), %v", remote.Name, remote.Spec.NodeName, out, client.Status.PodIP, err)
	}

	// The ClusterIP reaches both pods (each chosen at random per
	// connection: 40 connections miss one with odds of 2^-39).
	seen := map[string]int{}
	cluster.Eventually(t, 30*time.Second, func() error {
		out, err := exec("netclient", "sh", "-c", "for i in $(seq 40); do wget -qO- http://"+svc.Spec.ClusterIP+"/; done")
		if err != nil {
			return err
		}
		for _, name := range strings.Fields(out) {
			seen[name]++
		}
		if len(seen) != 2 {
			return fmt.Errorf("through the ClusterIP: %v", seen)
		}
		return nil
	})

	// Hairpin: each echo pod reaches itself through the ClusterIP (and
	// the other pod too).
	for _, p := range echo {
		cluster.Eventually(t, 30*time.Second, func() error {
			out, err := exec(p.Name, "sh", "-c", "for i in $(seq 20); do wget -qO- http://"+svc.Spec.ClusterIP+"/ || exit 1; done")
			if err != nil || !strings.Contains(out, p.Name) {
				return fmt.Errorf("%s through the ClusterIP, 20 times, never reached itself: %q %v", p.Name, out, err)
			}
			return nil
		})
	}

	// The NodePort through each node, from a pod and from the servers'
	// namespace, which is outside the cluster.
	port := fmt.Sprint(svc.Spec.Ports[0].NodePort)
	for _, a := range agents {
		if out, err := exec("netclient", "wget", "-qO-", "http://"+a.IP+":"+port+"/"); err != nil || !strings.HasPrefix(out, "echo-") {
			t.Fatalf("the node port %s on %s from a pod: %q %v", port, a.Name, out, err)
		}
		net.CheckRoute(net.Hub, a.IP, net.Bridge)
		if out, errOut, code := net.Hub.Run("busybox", "wget", "-qO-", "http://"+a.IP+":"+port+"/"); code != 0 || !strings.HasPrefix(out, "echo-") {
			t.Fatalf("the node port %s on %s from outside the cluster: exit %d: %q %s", port, a.Name, code, out, errOut)
		}
	}

	// A LoadBalancer Service gets the nodes' addresses, and each node
	// takes its port there from outside the cluster.
	lb, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo-lb"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: labels, Ports: []corev1.ServicePort{{Name: "http", Port: 8081, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().Services("default").Delete(ctx, "echo-lb", metav1.DeleteOptions{})
	cluster.Eventually(t, 30*time.Second, func() error {
		if lb, err = cs.CoreV1().Services("default").Get(ctx, "echo-lb", metav1.GetOptions{}); err != nil {
			return err
		}
		if in := lb.Status.LoadBalancer.Ingress; len(in) != 2 || in[0].IP != agents[0].IP || in[1].IP != agents[1].IP {
			return fmt.Errorf("the load balancer's ingress: %+v", in)
		}
		return nil
	})
	// Each node takes it once its proxy has the Service's status.
	for _, in := range lb.Status.LoadBalancer.Ingress {
		net.CheckRoute(net.Hub, in.IP, net.Bridge)
		cluster.Eventually(t, 30*time.Second, func() error {
			if out, errOut, code := net.Hub.Run("busybox", "wget", "-qO-", "http://"+in.IP+":8081/"); code != 0 || !strings.HasPrefix(out, "echo-") {
				return fmt.Errorf("the load balancer at %s:8081 from outside the cluster: exit %d: %q %s", in.IP, code, out, errOut)
			}
			return nil
		})
	}
	// With externalTrafficPolicy Local, its health-check node port says
	// on each node how many endpoints the node has (one each).
	lb, err = cs.CoreV1().Services("default").Patch(ctx, "echo-lb", types.StrategicMergePatchType, []byte(`{"spec":{"externalTrafficPolicy":"Local"}}`), metav1.PatchOptions{})
	if err != nil || lb.Spec.HealthCheckNodePort == 0 {
		t.Fatalf("a Local load balancer: %v %+v", err, lb.Spec)
	}
	for _, a := range agents {
		url := fmt.Sprintf("http://%s:%d/", a.IP, lb.Spec.HealthCheckNodePort)
		cluster.Eventually(t, 30*time.Second, func() error {
			if out, errOut, code := net.Hub.Run("busybox", "wget", "-qO-", url); code != 0 || !strings.Contains(out, `"localEndpoints":1`) {
				return fmt.Errorf("the health-check node port %s: exit %d: %q %s", url, code, out, errOut)
			}
			return nil
		})
	}

	// The API through the kubernetes Service, from a pod on each node.
	for _, p := range append(echo, *client) {
		if out, err := exec(p.Name, "wget", "-qO-", "http://10.96.0.1:443/version"); err != nil || !strings.Contains(out, "gitVersion") {
			t.Fatalf("the API from %s on %s through the kubernetes Service: %q %v", p.Name, p.Spec.NodeName, out, err)
		}
	}

	// A Service without endpoints, and an address no Service holds, are
	// refused at once, not left to time out.
	for _, ip := range []string{empty.Spec.ClusterIP, "10.96.255.254"} {
		out, err := exec("netclient", "sh", "-c", "nc -w 5 "+ip+" 80 </dev/null 2>&1; true")
		if err != nil || !strings.Contains(out, "Connection refused") {
			t.Fatalf("nc to %s: %q %v", ip, out, err)
		}
	}

	checkDNS(t, cs, exec, svc, echo)

	// The data plane without a control plane: with every server killed,
	// each node still reaches the ClusterIP, resolves the Service's name
	// and reaches the pod on the other node.
	for _, s := range c.Servers {
		s.Kill()
	}
	for _, a := range agents {
		for _, check := range [][]string{
			{"wget", "-qO-", "http://" + svc.Spec.ClusterIP + "/"},
			{"wget", "-qO-", "http://" + remote.Status.PodIP + ":8080/"},
			{"nslookup", "echo.default.svc.cluster.local", "10.96.0.10"},
		} {
			for _, arg := range check {
				if host, ok := strings.CutPrefix(arg, "http://"); ok {
					onNodeDevice(t, a, strings.Split(strings.Split(host, "/")[0], ":")[0])
				}
			}
			out, errOut, code := a.Netns.Run("busybox", check...)
			if code != 0 || !strings.Contains(out, "echo") {
				t.Fatalf("with every server down, on %s: %s: exit %d: %q %s", a.Name, strings.Join(check, " "), code, out, errOut)
			}
		}
	}
	// The proxies' rules for the echo Service counted the traffic above;
	// a chain written again would count from zero.
	counted := map[string]uint64{}
	for _, a := range agents {
		if counted[a.Name] = natCount(t, a, "default/echo:http"); counted[a.Name] == 0 {
			t.Fatalf("%s's rules for the echo Service counted nothing", a.Name)
		}
	}
	for _, s := range c.Servers {
		s.Start()
	}
	c.Leader(30 * time.Second)

	// The servers back, the proxies write only what changed: a new
	// Service works on every node, and the echo Service's rules, which
	// did not change, were not written again.
	again, err := cs.CoreV1().Services("default").Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo-again"},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cs.CoreV1().Services("default").Delete(ctx, "echo-again", metav1.DeleteOptions{})
	for _, a := range agents {
		onNodeDevice(t, a, again.Spec.ClusterIP)
		cluster.Eventually(t, 60*time.Second, func() error {
			if out, errOut, code := a.Netns.Run("busybox", "wget", "-qO-", "http://"+again.Spec.ClusterIP+"/"); code != 0 || !strings.HasPrefix(out, "echo-") {
				return fmt.Errorf("a new Service from %s: exit %d: %q %s", a.Name, code, out, errOut)
			}
			return nil
		})
		if n := natCount(t, a, "default/echo:http"); n < counted[a.Name] {
			t.Fatalf("%s wrote the echo Service's unchanged rules again after the servers returned (their count went from %d to %d)", a.Name, counted[a.Name], n)
		}
	}

	// Endpoints follow readiness: the remote echo pod failing its probe
	// gets no new connections, and does again once it passes.
	through := func(n int) (map[string]int, error) {
		out, err := exec("netclient", "sh", "-c", fmt.Sprintf("for i in $(seq %d); do wget -qO- http://%s/; done", n, svc.Spec.ClusterIP))
		got := map[string]int{}
		for _, name := range strings.Fields(out) {
			got[name]++
		}
		return got, err
	}
	unready := func(on bool) {
		t.Helper()
		cmd := []string{"rm", "/tmp/unready"}
		if on {
			cmd = []string{"touch", "/tmp/unready"}
		}
		if _, err := exec(remote.Name, cmd...); err != nil {
			t.Fatal(err)
		}
	}
	unready(true)
	cluster.Eventually(t, 30*time.Second, func() error {
		if got, err := through(20); err != nil || got[remote.Name] > 0 {
			return fmt.Errorf("through the ClusterIP with %s not ready: %v %v", remote.Name, got, err)
		}
		return nil
	})
	unready(false)
	cluster.Eventually(t, 30*time.Second, func() error {
		if got, err := through(40); err != nil || got[remote.Name] == 0 {
			return fmt.Errorf("through the ClusterIP with %s ready again: %v %v", remote.Name, got, err)
		}
		return nil
	})

	// A pod being deleted drains: it gets no new connections through
	// the Service but, its grace period not over (httpd, its PID 1,
	// ignores SIGTERM), still answers those made to it.
	if err := cs.CoreV1().Pods("default").Delete(ctx, remote.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](30)}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 30*time.Second, func() error {
		if got, err := through(20); err != nil || got[remote.Name] > 0 {
			return fmt.Errorf("through the ClusterIP with %s terminating: %v %v", remote.Name, got, err)
		}
		return nil
	})
	if out, err := exec("netclient", "wget", "-qO-", "http://"+remote.Status.PodIP+":8080/"); err != nil || out != remote.Name {
		t.Fatalf("%s, terminating, no longer answers: %q %v", remote.Name, out, err)
	}
}

// natCount is how many packets the node's DNAT rules for a service port
// (its comment, ns/name:port) have translated, from iptables-save.
func natCount(t *testing.T, a *cluster.Agent, port string) uint64 {
	t.Helper()
	out, errOut, code := a.Netns.Run("iptables-save", "-c", "-t", "nat")
	if code != 0 {
		t.Fatalf("iptables-save in %s: exit %d: %s", a.Name, code, errOut)
	}
	var n uint64
	for _, line := range strings.Split(out, "\n") {
		if !strings.Contains(line, `"`+port+`"`) || !strings.Contains(line, "-j DNAT") {
			continue
		}
		var packets, bytes uint64
		if _, err := fmt.Sscanf(line, "[%d:%d]", &packets, &bytes); err != nil {
			t.Fatalf("iptables-save in %s: %q: %v", a.Name, line, err)
		}
		n += packets
	}
	return n
}

// onNodeDevice fails the test unless the node sends to addr through a
// device the test or the agent made (eth0 on the test's bridge, the pod
// bridge) or keeps it (an address of its own).
func onNodeDevice(t *testing.T, a *cluster.Agent, addr string) {
	t.Helper()
	out, _, code := a.Netns.Run("ip", "route", "get", addr)
	if code != 0 || !strings.Contains(out, " dev eth0 ") && !strings.Contains(out, " dev pontoon0 ") && !strings.HasPrefix(out, "local ") {
		t.Fatalf("in %s, %s does not stay on the test's devices: %s", a.Name, addr, out)
	}
}

// checkDNS resolves, from the pod netclient with the resolv.conf its
// kubelet wrote (dnsPolicy ClusterFirst), each kind of name the cluster
// DNS serves, and a name of the upstream resolver (upstreamName).
func checkDNS(t *testing.T, cs kubernetes.Interface, exec func(string, ...string) (string, error), echo *corev1.Service, echoPods []corev1.Pod) {
	ctx := context.Background()
	if out, err := exec("netclient", "cat", "/etc/resolv.conf"); err != nil ||
		!strings.Contains(out, "nameserver 10.96.0.10") || !strings.Contains(out, "search default.svc.cluster.local svc.cluster.local cluster.local") || !strings.Contains(out, "ndots:5") {
		t.Fatalf("the pod's resolv.conf: %q %v", out, err)
	}
	headless := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "echo-h"}, Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone,
		Selector: map[string]string{"app": "echo"}, Ports: []corev1.ServicePort{{Name: "http", Port: 8080}}}}
	ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ext"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: upstreamName}}
	for _, s := range []*corev1.Service{headless, ext} {
		if _, err := cs.CoreV1().Services("default").Create(ctx, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		defer cs.CoreV1().Services("default").Delete(ctx, s.Name, metav1.DeleteOptions{})
	}
	named := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "named", Labels: map[string]string{"app": "echo"}},
		Spec: corev1.PodSpec{Hostname: "db-0", Subdomain: "echo-h", TerminationGracePeriodSeconds: ptr.To[int64](1),
			Containers: []corev1.Container{{Name: "c", Image: busybox, Command: []string{"sh", "-c", echoScript}}}}}
	createPod(t, cs, named)
	// Gone before the test goes on: it answers for the echo Service too.
	defer func() {
		deletePod(t, cs, "named")
		cluster.Eventually(t, 30*time.Second, func() error {
			if _, err := cs.CoreV1().Pods("default").Get(ctx, "named", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("the pod named is not gone: %v", err)
			}
			return nil
		})
	}()
	named = waitPod(t, cs, "named", "running with an address", func(p *corev1.Pod) bool { return p.Status.Phase == corev1.PodRunning && p.Status.PodIP != "" })

	var podIPs []string
	for _, p := range echoPods {
		podIPs = append(podIPs, p.Status.PodIP)
	}
	dashed := strings.ReplaceAll(echoPods[0].Status.PodIP, ".", "-")
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"nslookup", "echo.default.svc.cluster.local"}, []string{echo.Spec.ClusterIP}},
		// The search path: the short name and the name with its
		// namespace.
		{[]string{"wget", "-qO-", "http://echo/"}, []string{"echo-"}},
		{[]string{"wget", "-qO-", "http://echo.default/"}, []string{"echo-"}},
		{[]string{"nslookup", "echo-h.default.svc.cluster.local"}, append(podIPs, named.Status.PodIP)},
		{[]string{"nslookup", "db-0.echo-h.default.svc.cluster.local"}, []string{named.Status.PodIP}},
		{[]string{"nslookup", "-type=srv", "_http._tcp.echo.default.svc.cluster.local"}, []string{"80 echo.default.svc.cluster.local"}},
		{[]string{"nslookup", echo.Spec.ClusterIP}, []string{"echo.default.svc.cluster.local"}},
		{[]string{"nslookup", dashed + ".default.pod.cluster.local"}, []string{echoPods[0].Status.PodIP}},
		{[]string{"nslookup", "ext.default.svc.cluster.local"}, []string{upstreamName, upstreamIP}},
		{[]string{"nslookup", upstreamName}, []string{upstreamIP}},
		{[]string{"wget", "-qO-", "http://kubernetes.default:443/version"}, []string{"gitVersion"}},
	} {
		cluster.Eventually(t, 20*time.Second, func() error {
			out, err := exec("netclient", c.args...)
			if err != nil {
				return fmt.Errorf("%s: %q %v", strings.Join(c.args, " "), out, err)
			}
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					return fmt.Errorf("%s: %q lacks %s", strings.Join(c.args, " "), out, w)
				}
			}
			return nil
		})
	}
	// A name in the cluster domain that does not exist.
	out, _ := exec("netclient", "sh", "-c", "nslookup nope.default.svc.cluster.local 2>&1; true")
	if !strings.Contains(out, "NXDOMAIN") {
		t.Fatalf("nslookup of a service that does not exist: %q", out)
	}
}

// The upstream resolver's one name, which the agents' resolv.conf leads
// to.
const (
	upstreamName = "upstream.test"
	upstreamIP   = "192.0.2.77"
)

// startUpstreamDNS serves upstreamName at addr in ns, as a node's own
// resolver would, and returns a resolv.conf that names it.
func startUpstreamDNS(t *testing.T, ns *cluster.Netns, ip string) string {
	pc, err := ns.ListenPacket("udp", ip+":53")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Name == upstreamName+"." && q.Qtype == dns.TypeA {
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 30}, A: net.ParseIP(upstreamIP)}}
		} else if q.Name != upstreamName+"." {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	path := filepath.Join(t.TempDir(), "resolv.conf")
	if err := os.WriteFile(path, []byte("nameserver "+ip+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}
