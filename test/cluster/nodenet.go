package cluster

import (
	"fmt"
	"os/exec"
	"strings"
)

// NodeNet is a network of test nodes on one machine (DESIGN.md, "Tests"):
// a hub namespace that holds a bridge, whose addresses the servers listen
// on, and a namespace per node with a veth on the bridge. Addresses are
// Prefix+N in a /24. No namespace of it has a route out, so nothing sent
// in it can leave the machine: an address off the /24 is unreachable.
type NodeNet struct {
	t      TB
	Hub    *Netns
	Prefix string
	// Bridge is the hub's bridge device.
	Bridge string
}

// NewNodeNet makes the hub namespace name with its bridge; prefix is the
// /24 without its last octet and with the dot ("10.250.0.").
func NewNodeNet(t TB, name, prefix string) *NodeNet {
	t.Helper()
	n := &NodeNet{t: t, Hub: NewNetns(t, name), Prefix: prefix, Bridge: "br0"}
	n.ip(n.Hub, "link", "add", n.Bridge, "type", "bridge")
	n.ip(n.Hub, "link", "set", n.Bridge, "up")
	return n
}

// ip runs ip(8) in ns and fails the test on an error.
func (n *NodeNet) ip(ns *Netns, args ...string) {
	n.t.Helper()
	if out, err := exec.Command("ip", append([]string{"-n", ns.Name}, args...)...).CombinedOutput(); err != nil {
		n.t.Fatalf("ip -n %s %s: %v: %s", ns.Name, strings.Join(args, " "), err, out)
	}
}

// AddServerIP gives the bridge the address Prefix+host, for a server of
// the hub, and returns it.
func (n *NodeNet) AddServerIP(host int) string {
	n.t.Helper()
	addr := fmt.Sprintf("%s%d", n.Prefix, host)
	n.ip(n.Hub, "addr", "add", addr+"/24", "dev", n.Bridge)
	n.CheckRoute(n.Hub, addr, "lo")
	return addr
}

// AddNode makes the namespace name with a veth eth0 on the bridge at
// Prefix+host, and returns it and the address.
func (n *NodeNet) AddNode(name string, host int) (*Netns, string) {
	n.t.Helper()
	ns := NewNetns(n.t, name)
	addr := fmt.Sprintf("%s%d", n.Prefix, host)
	// Made in the hub, its peer moved to the node: the root namespace
	// never holds either end.
	hubEnd, nodeEnd := fmt.Sprintf("veth%d", host), fmt.Sprintf("eth%d", host)
	n.ip(n.Hub, "link", "add", hubEnd, "type", "veth", "peer", "name", nodeEnd)
	n.ip(n.Hub, "link", "set", nodeEnd, "netns", ns.Name)
	n.ip(n.Hub, "link", "set", hubEnd, "master", n.Bridge, "up")
	n.ip(ns, "link", "set", nodeEnd, "name", "eth0")
	n.ip(ns, "addr", "add", addr+"/24", "dev", "eth0")
	n.ip(ns, "link", "set", "eth0", "up")
	n.CheckRoute(ns, n.Prefix+"1", "eth0")
	return ns, addr
}

// CheckRoute fails the test unless ns sends to addr through dev, a device
// the test made.
func (n *NodeNet) CheckRoute(ns *Netns, addr, dev string) {
	n.t.Helper()
	out, err := exec.Command("ip", "-n", ns.Name, "route", "get", addr).CombinedOutput()
	if err != nil || !strings.Contains(string(out), " dev "+dev+" ") || strings.Contains(string(out), " via ") {
		n.t.Fatalf("in %s, %s is not reached directly through %s: %v: %s", ns.Name, addr, dev, err, out)
	}
}
