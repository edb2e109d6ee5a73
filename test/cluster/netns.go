package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"

	"github.com/vishvananda/netns"
)

// Netns is a network namespace a test made, with only its loopback up:
// what runs in it (a node, its pods) reaches nothing outside it, so no
// packet of a test can leave the machine.
type Netns struct {
	Name string
	Path string
}

// NewNetns makes the network namespace name (deleted when the test ends,
// also when it fails).
func NewNetns(t TB, name string) *Netns {
	t.Helper()
	n := &Netns{Name: name, Path: "/run/netns/" + name}
	if _, err := os.Stat(n.Path); err == nil {
		// Left by a test that was killed.
		exec.Command("ip", "netns", "del", name).Run()
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		t.Fatalf("ip netns add %s: %v: %s", name, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
			t.Errorf("ip netns del %s: %v: %s", name, err, out)
		}
		// `ip netns add` made /run/netns a mount point; it goes with the
		// last namespace.
		if entries, err := os.ReadDir("/run/netns"); err == nil && len(entries) == 0 {
			syscall.Unmount("/run/netns", syscall.MNT_DETACH)
		}
	})
	if out, err := n.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up in %s: %v: %s", name, err, out)
	}
	return n
}

// Command is a command run in the namespace's network (and nothing else
// of the process changed: not with `ip netns exec`, which also makes a
// mount namespace with a /sys where runc finds no cgroups).
func (n *Netns) Command(name string, args ...string) *exec.Cmd {
	return exec.Command("nsenter", append([]string{"--net=" + n.Path, name}, args...)...)
}

// DialContext dials addr from inside the namespace: the socket is made on
// an OS thread that entered it, and stays in it.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.in(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// Listen listens on addr inside the namespace.
func (n *Netns) Listen(network, addr string) (net.Listener, error) {
	var l net.Listener
	err := n.in(func() (err error) {
		l, err = net.Listen(network, addr)
		return err
	})
	return l, err
}

// ListenPacket listens on addr inside the namespace.
func (n *Netns) ListenPacket(network, addr string) (net.PacketConn, error) {
	var c net.PacketConn
	err := n.in(func() (err error) {
		c, err = net.ListenPacket(network, addr)
		return err
	})
	return c, err
}

// Forward listens on a loopback port of the test's own namespace and
// joins each connection to addr inside the namespace, for clients that
// dial for themselves (client-go's SPDY and WebSocket executors take no
// dialer); it returns the port's address and stops when the test ends.
func (n *Netns) Forward(t TB, addr string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen to forward to %s in %s: %v", addr, n.Name, err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				in, err := n.DialContext(context.Background(), "tcp", addr)
				if err != nil {
					return
				}
				defer in.Close()
				go func() { io.Copy(in, c); in.(*net.TCPConn).CloseWrite() }()
				io.Copy(c, in)
			}()
		}
	}()
	return l.Addr().String()
}

// in runs fn on an OS thread that entered the namespace; sockets fn makes
// stay in it.
func (n *Netns) in(fn func() error) error {
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			done <- err
			return
		}
		defer orig.Close()
		h, err := netns.GetFromPath(n.Path)
		if err != nil {
			done <- err
			return
		}
		defer h.Close()
		if err := netns.Set(h); err != nil {
			done <- fmt.Errorf("enter %s: %w", n.Name, err)
			return
		}
		// The thread goes back to the process's namespace before other
		// goroutines may have it; if it cannot, it exits with this one,
		// so its namespace cannot leak. (It must not exit otherwise: a
		// child started with Pdeathsig from it would be killed.)
		defer func() {
			if netns.Set(orig) == nil {
				runtime.UnlockOSThread()
			}
		}()
		done <- fn()
	}()
	return <-done
}

// Run runs a command in the namespace and returns its standard output,
// standard error and exit code.
func (n *Netns) Run(name string, args ...string) (stdout, stderr string, code int) {
	return run(n.Command(name, args...))
}

// Kubectl runs kubectl in the namespace with kubeconfig.
func (n *Netns) Kubectl(kubeconfig, stdin string, args ...string) (stdout, stderr string, code int) {
	cmd := n.Command("kubectl", append([]string{"--kubeconfig", kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	return run(cmd)
}
