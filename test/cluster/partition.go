package cluster

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"time"
)

// chain is this test process's own iptables chain, jumped to from OUTPUT:
// every packet on loopback passes OUTPUT once, so dropping there cuts it.
func chain() string { return fmt.Sprintf("PONTOON-TEST-%d", os.Getpid()) }

func iptables(args ...string) error {
	out, err := exec.Command("iptables", append([]string{"-w"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("iptables %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return nil
}

// Partition cuts s off from every other server in both directions. The
// test's clients (from ClientIP) still reach every server. Servers dial
// Raft and forwarded requests from their own address; gossip's TCP dials
// leave from 127.0.0.1, so those to s are dropped too.
func (c *Cluster) Partition(s *Server) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rules) == 0 {
		if err := iptables("-N", chain()); err != nil {
			c.t.Fatalf("%v", err)
		}
		if err := iptables("-I", "OUTPUT", "-j", chain()); err != nil {
			iptables("-X", chain())
			c.t.Fatalf("%v", err)
		}
	}
	add := func(rule ...string) {
		if err := iptables(append([]string{"-A", chain()}, rule...)...); err != nil {
			c.t.Fatalf("%v", err)
		}
		c.rules = append(c.rules, rule)
	}
	for _, o := range c.Others(s) {
		add("-s", s.IP, "-d", o.IP, "-j", "DROP")
		add("-s", o.IP, "-d", s.IP, "-j", "DROP")
	}
	add("-s", "127.0.0.1", "-d", s.IP, "-j", "DROP")
	// The partition must really cut traffic: a Raft dial from s to another
	// server, bound to s's address as the server binds it, must fail.
	o := c.Others(s)[0]
	d := net.Dialer{Timeout: 300 * time.Millisecond, LocalAddr: &net.TCPAddr{IP: net.ParseIP(s.IP)}}
	if conn, err := d.Dial("tcp", o.RaftAddr()); err == nil {
		conn.Close()
		c.t.Fatalf("partition of %s does not cut traffic to %s", s.Name, o.Name)
	}
}

// Heal removes every partition.
func (c *Cluster) Heal() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.rules) == 0 {
		return
	}
	for _, err := range []error{
		iptables("-D", "OUTPUT", "-j", chain()),
		iptables("-F", chain()),
		iptables("-X", chain()),
	} {
		if err != nil {
			c.t.Logf("heal: %v", err)
		}
	}
	c.rules = nil
}
