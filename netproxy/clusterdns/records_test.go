package clusterdns

import (
	"net"
	"strings"
	"testing"

	"github.com/miekg/dns"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// mapStore is a Store in memory.
type mapStore struct {
	services []*corev1.Service
	slices   []*discoveryv1.EndpointSlice
}

func (s mapStore) Service(ns, name string) *corev1.Service {
	for _, svc := range s.services {
		if svc.Namespace == ns && svc.Name == name {
			return svc
		}
	}
	return nil
}

func (s mapStore) Slices(ns, name string) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, sl := range s.slices {
		if sl.Namespace == ns && sl.Labels[discoveryv1.LabelServiceName] == name {
			out = append(out, sl)
		}
	}
	return out
}

func (s mapStore) ServiceByIP(ip string) *corev1.Service {
	for _, svc := range s.services {
		if svc.Spec.ClusterIP == ip {
			return svc
		}
	}
	return nil
}

func (s mapStore) SlicesByIP(ip string) []*discoveryv1.EndpointSlice {
	var out []*discoveryv1.EndpointSlice
	for _, sl := range s.slices {
		for _, e := range sl.Endpoints {
			if len(e.Addresses) > 0 && e.Addresses[0] == ip {
				out = append(out, sl)
			}
		}
	}
	return out
}

func testStore() mapStore {
	web := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{ClusterIP: "10.96.0.20", ClusterIPs: []string{"10.96.0.20"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP}}}}
	db := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db"},
		Spec: corev1.ServiceSpec{ClusterIP: corev1.ClusterIPNone, Ports: []corev1.ServicePort{{Name: "pg", Port: 5432, Protocol: corev1.ProtocolTCP}}}}
	ext := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "ext"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "example.org"}}
	dbSlice := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "db-x",
		Labels: map[string]string{discoveryv1.LabelServiceName: "db"}}, AddressType: discoveryv1.AddressTypeIPv4,
		Ports: []discoveryv1.EndpointPort{{Name: ptr.To("pg"), Port: ptr.To[int32](5432)}},
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.1.5"}, Hostname: ptr.To("db-0"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.244.2.7"}, Hostname: ptr.To("db-1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
			{Addresses: []string{"10.244.2.8"}, Hostname: ptr.To("db-2"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		}}
	return mapStore{services: []*corev1.Service{web, db, ext}, slices: []*discoveryv1.EndpointSlice{dbSlice}}
}

// ask answers name/type and returns the rcode, the answers' data and
// whether an SOA came with it.
func ask(t *testing.T, name string, qtype uint16) (string, []string, bool) {
	t.Helper()
	m := Zone("cluster.local.").Answer(testStore(), dns.Question{Name: name, Qtype: qtype, Qclass: dns.ClassINET})
	var data []string
	for _, rr := range m.Answer {
		if rr.Header().Name != name {
			t.Errorf("an answer for %s is named %s", name, rr.Header().Name)
		}
		f := strings.Fields(rr.String())
		data = append(data, strings.Join(f[3:], " "))
	}
	return dns.RcodeToString[m.Rcode], data, len(m.Ns) == 1 && m.Ns[0].Header().Rrtype == dns.TypeSOA
}

func TestRecords(t *testing.T) {
	for _, c := range []struct {
		name  string
		qtype uint16
		rcode string
		want  []string
		soa   bool
	}{
		{"web.default.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"A 10.96.0.20"}, false},
		{"WEB.default.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"A 10.96.0.20"}, false},
		// No AAAA for an IPv4 service: the name exists (NODATA).
		{"web.default.svc.cluster.local.", dns.TypeAAAA, "NOERROR", nil, true},
		{"_http._tcp.web.default.svc.cluster.local.", dns.TypeSRV, "NOERROR", []string{"SRV 0 100 80 web.default.svc.cluster.local."}, false},
		{"db.default.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"A 10.244.1.5", "A 10.244.2.7"}, false},
		{"db-1.db.default.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"A 10.244.2.7"}, false},
		{"_pg._tcp.db.default.svc.cluster.local.", dns.TypeSRV, "NOERROR",
			[]string{"SRV 0 100 5432 db-0.db.default.svc.cluster.local.", "SRV 0 100 5432 db-1.db.default.svc.cluster.local."}, false},
		{"ext.default.svc.cluster.local.", dns.TypeA, "NOERROR", []string{"CNAME example.org."}, false},
		{"10-244-3-4.default.pod.cluster.local.", dns.TypeA, "NOERROR", []string{"A 10.244.3.4"}, false},
		{"20.0.96.10.in-addr.arpa.", dns.TypePTR, "NOERROR", []string{"PTR web.default.svc.cluster.local."}, false},
		{"5.1.244.10.in-addr.arpa.", dns.TypePTR, "NOERROR", []string{"PTR db-0.db.default.svc.cluster.local."}, false},
		{"nope.default.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil, true},
		{"db-2.db.default.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil, true},
		{"web.other.svc.cluster.local.", dns.TypeA, "NXDOMAIN", nil, true},
		{"svc.cluster.local.", dns.TypeA, "NOERROR", nil, true},
	} {
		rcode, got, soa := ask(t, c.name, c.qtype)
		if rcode != c.rcode || strings.Join(got, "|") != strings.Join(c.want, "|") || soa != c.soa {
			t.Errorf("%s %s: %s %v (SOA %v), want %s %v (SOA %v)", c.name, dns.TypeToString[c.qtype], rcode, got, soa, c.rcode, c.want, c.soa)
		}
	}
}

// TestForwarderCaches: names outside the cluster go to the upstream, and
// its answer is served from the cache for its TTL.
func TestForwarderCaches(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	asked := make(chan string, 10)
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		asked <- r.Question[0].Name
		m := new(dns.Msg)
		m.SetReply(r)
		m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: r.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60}, A: net.IPv4(192, 0, 2, 1)}}
		w.WriteMsg(m)
	})}
	go up.ActivateAndServe()
	defer up.Shutdown()
	f := newForwarder([]string{pc.LocalAddr().String()})
	q := new(dns.Msg)
	q.SetQuestion("example.test.", dns.TypeA)
	for range 3 {
		m := f.exchange(q)
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 || m.Answer[0].(*dns.A).A.String() != "192.0.2.1" {
			t.Fatalf("forwarded: %v", m)
		}
	}
	if n := len(asked); n != 1 {
		t.Fatalf("the upstream was asked %d times for one name within its TTL", n)
	}
	down := newForwarder([]string{"127.0.0.1:1"})
	if m := down.exchange(q); m.Rcode != dns.RcodeServerFailure {
		t.Fatalf("with no upstream answering: %v", m)
	}
}
