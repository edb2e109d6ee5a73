// Package cluster runs Pontoon servers as real processes on loopback
// addresses for end-to-end tests and benchmarks: each server has its own
// 127.0.0.x address (so an iptables partition between two addresses cuts
// exactly their traffic), its own data dir, and logs kept for the failure
// report. Everything it starts is stopped, and every rule it adds removed,
// when the test ends, also when it fails.
package cluster

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/jointoken"
)

// ClientIP is the source address of every client the harness makes, so
// that partitions between servers never cut the test's own requests.
const ClientIP = "127.0.0.99"

// Binary returns the pontoon binary to test: $PONTOON_BIN (make test sets
// it) or one built from the repository into dir.
func Binary(dir string) (string, error) {
	if bin := os.Getenv("PONTOON_BIN"); bin != "" {
		return bin, nil
	}
	bin := filepath.Join(dir, "pontoon")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/pontoon")
	cmd.Dir = ".."
	for i := 0; i < 3 && !fileExists(filepath.Join(cmd.Dir, "go.mod")); i++ {
		cmd.Dir = filepath.Join("..", cmd.Dir)
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build pontoon: %v\n%s", err, out)
	}
	return bin, nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

// TB is the part of testing.TB the harness uses, so benchmarks programs
// can drive it too.
type TB interface {
	Helper()
	Logf(format string, args ...any)
	Errorf(format string, args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

var _ TB = (testing.TB)(nil)

// Options shape a cluster.
type Options struct {
	// Bin is the pontoon binary.
	Bin string
	// Servers is how many servers to make; BaseIP is the last octet of the
	// first one's 127.0.0.x address.
	Servers int
	BaseIP  int
	// Expect is --bootstrap-expect; zero means Servers.
	Expect int
	// Args are extra flags for every server.
	Args []string
	// Net, when set, runs the servers in its hub namespace on the
	// bridge's addresses Net.Prefix+BaseIP…, where its nodes reach them;
	// the test's clients and kubectl run in the hub too.
	Net *NodeNet
	// TokenFile holds the cluster's join token, which every server and
	// agent is given; empty makes a new one.
	TokenFile string
}

// TokenFile is the file of the cluster's join token.
func (c *Cluster) TokenFile() string { return c.opts.TokenFile }

// InternalKey is the key its servers show one another on the internal
// endpoints, as the header raftstore.InternalAuthHeader carries it.
func (c *Cluster) InternalKey() string {
	return hex.EncodeToString(c.tokenKey("internal", jointoken.InternalKey))
}

// GossipKey is the key of its gossip pool, for a member the test makes.
func (c *Cluster) GossipKey() []byte {
	return c.tokenKey("gossip", jointoken.GossipKey)
}

// tokenKey derives a key from the cluster's token.
func (c *Cluster) tokenKey(what string, derive func(string) ([]byte, error)) []byte {
	c.t.Helper()
	token, err := jointoken.Read(c.opts.TokenFile)
	if err == nil {
		var key []byte
		if key, err = derive(token); err == nil {
			return key
		}
	}
	c.t.Fatalf("the cluster's %s key: %v", what, err)
	return nil
}

// NewTokenFile writes a new join token to a file in dir.
func NewTokenFile(t TB, dir string) string {
	t.Helper()
	token, err := jointoken.Generate()
	if err != nil {
		t.Fatalf("%v", err)
	}
	path := filepath.Join(dir, "token")
	if err := jointoken.Write(path, token); err != nil {
		t.Fatalf("%v", err)
	}
	return path
}

// Cluster is a set of servers.
type Cluster struct {
	t       TB
	opts    Options
	Servers []*Server
	mu      sync.Mutex
	rules   [][]string
	// kubeconfigs are the kubeconfig files kubectl uses, by server name.
	kubeconfigs map[string]string
	kubeCache   string
}

// Server is one server process.
type Server struct {
	Name    string
	IP      string
	DataDir string
	Args    []string
	c       *Cluster
	mu      sync.Mutex
	cmd     *exec.Cmd
	exited  chan struct{}
	log     *bytes.Buffer
	starts  int
}

// New prepares a cluster's servers without starting them.
func New(t TB, opts Options) *Cluster {
	t.Helper()
	if opts.Expect == 0 {
		opts.Expect = opts.Servers
	}
	c := &Cluster{t: t, opts: opts}
	dir := t.TempDir()
	if c.opts.TokenFile == "" {
		c.opts.TokenFile = NewTokenFile(t, dir)
	}
	for i := range opts.Servers {
		c.Servers = append(c.Servers, c.newServer(dir, i))
	}
	t.Cleanup(c.close)
	return c
}

func (c *Cluster) newServer(dir string, i int) *Server {
	ip := fmt.Sprintf("127.0.0.%d", c.opts.BaseIP+i)
	if c.opts.Net != nil {
		ip = c.opts.Net.AddServerIP(c.opts.BaseIP + i)
	}
	s := &Server{
		Name:    fmt.Sprintf("s%d", i+1),
		IP:      ip,
		DataDir: filepath.Join(dir, fmt.Sprintf("s%d", i+1)),
		c:       c,
		log:     &bytes.Buffer{},
	}
	return s
}

// AddServer prepares one more server that joins the running cluster (no
// --bootstrap-expect of its own).
func (c *Cluster) AddServer() *Server {
	s := c.newServer(c.t.TempDir(), len(c.Servers))
	s.Args = []string{"--bootstrap-expect", "0"}
	c.Servers = append(c.Servers, s)
	return s
}

// Start starts every server, in the order given by idx (all in order when
// idx is empty).
func (c *Cluster) Start(idx ...int) {
	c.t.Helper()
	if len(idx) == 0 {
		for i := range c.Servers {
			idx = append(idx, i)
		}
	}
	for _, i := range idx {
		c.Servers[i].Start()
	}
}

// MountTmpfs puts the server's data dir on a tmpfs of size bytes (a mount
// option such as "64m"), unmounted when the test ends, after the server
// is killed.
func (s *Server) MountTmpfs(size string) {
	t := s.c.t
	t.Helper()
	if err := os.MkdirAll(s.DataDir, 0o700); err != nil {
		t.Fatalf("%v", err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", s.DataDir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs at %s: %v: %s", s.DataDir, err, out)
	}
	t.Cleanup(func() {
		s.Kill()
		if out, err := exec.Command("umount", s.DataDir).CombinedOutput(); err != nil {
			t.Errorf("unmount %s: %v: %s", s.DataDir, err, out)
		}
	})
}

// API returns the server's API URL.
func (s *Server) API() string { return "http://" + s.IP + ":6443" }

// GossipAddr returns the server's gossip address.
func (s *Server) GossipAddr() string { return s.IP + ":7946" }

// RaftAddr returns the server's Raft address.
func (s *Server) RaftAddr() string { return s.IP + ":6444" }

// Client returns a client of this server whose requests leave from
// ClientIP (from the hub with a Net).
func (s *Server) Client() *client.Client {
	return client.New(s.API(), &http.Client{Transport: &http.Transport{DialContext: s.c.dialContext, MaxIdleConnsPerHost: 256}})
}

// dialContext dials from ClientIP, or from inside the hub with a Net.
func (c *Cluster) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	if c.opts.Net != nil {
		return c.opts.Net.Hub.DialContext(ctx, network, addr)
	}
	return dialer().DialContext(ctx, network, addr)
}

// command is a command run where the servers run.
func (c *Cluster) command(name string, args ...string) *exec.Cmd {
	if c.opts.Net != nil {
		return c.opts.Net.Hub.Command(name, args...)
	}
	return exec.Command(name, args...)
}

// HTTPClient returns an HTTP client whose connections leave from ClientIP.
func HTTPClient() *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: dialer().DialContext, MaxIdleConnsPerHost: 256}}
}

func dialer() *net.Dialer {
	return &net.Dialer{Timeout: 2 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(ClientIP)}}
}

// Start starts the server's process with its data dir as it is.
func (s *Server) Start() {
	c := s.c
	c.t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd != nil {
		c.t.Fatalf("%s is already running", s.Name)
	}
	args := []string{"server", "--name", s.Name, "--data-dir", s.DataDir,
		"--api-addr", s.IP + ":6443", "--raft-addr", s.RaftAddr(), "--gossip-addr", s.GossipAddr(),
		"--bootstrap-expect", strconv.Itoa(c.opts.Expect), "--log-level", "debug", "--token-file", c.opts.TokenFile}
	for _, o := range c.Servers {
		if o != s {
			args = append(args, "--join", o.GossipAddr())
		}
	}
	args = append(args, c.opts.Args...)
	args = append(args, s.Args...)
	cmd := c.command(c.opts.Bin, args...)
	s.starts++
	fmt.Fprintf(s.log, "=== start %d: %s\n", s.starts, strings.Join(args, " "))
	cmd.Stdout, cmd.Stderr = lockedWriter{s}, lockedWriter{s}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		c.t.Fatalf("start %s: %v", s.Name, err)
	}
	s.cmd, s.exited = cmd, make(chan struct{})
	go func(exited chan struct{}) {
		err := cmd.Wait()
		s.mu.Lock()
		fmt.Fprintf(s.log, "=== exited: %v\n", err)
		s.mu.Unlock()
		close(exited)
	}(s.exited)
}

type lockedWriter struct{ s *Server }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	return w.s.log.Write(b)
}

func (s *Server) running() (*exec.Cmd, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd, s.exited
}

// Running reports whether the process is up.
func (s *Server) Running() bool {
	cmd, _ := s.running()
	return cmd != nil
}

// Signal sends sig to the process.
func (s *Server) Signal(sig syscall.Signal) {
	if cmd, _ := s.running(); cmd != nil {
		cmd.Process.Signal(sig)
	}
}

// Kill kills the process with SIGKILL and waits for it to exit.
func (s *Server) Kill() { s.stop(syscall.SIGKILL) }

// Stop sends SIGTERM and waits for a graceful exit.
func (s *Server) Stop() { s.stop(syscall.SIGTERM) }

func (s *Server) stop(sig syscall.Signal) {
	cmd, exited := s.running()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
	s.mu.Lock()
	s.cmd = nil
	s.mu.Unlock()
}

// Wait waits for the process to exit by itself and returns its exit code.
func (s *Server) Wait(timeout time.Duration) (int, bool) {
	cmd, exited := s.running()
	if cmd == nil {
		return 0, false
	}
	select {
	case <-exited:
	case <-time.After(timeout):
		return 0, false
	}
	s.mu.Lock()
	s.cmd = nil
	s.mu.Unlock()
	return cmd.ProcessState.ExitCode(), true
}

// Log returns what the server has printed so far.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

func (c *Cluster) close() {
	for _, s := range c.Servers {
		s.Kill()
	}
	c.Heal()
	for _, s := range c.Servers {
		if strings.Contains(s.Log(), "WARNING: DATA RACE") {
			c.t.Errorf("%s reported a data race", s.Name)
		}
	}
	if c.t.Failed() {
		for _, s := range c.Servers {
			log := s.Log()
			if len(log) > 60000 {
				log = "…" + log[len(log)-60000:]
			}
			c.t.Logf("--- log of %s:\n%s", s.Name, log)
		}
	}
}

// Eventually polls cond every 50ms until it returns nil or the timeout
// passes, then fails the test with cond's last error.
func Eventually(t TB, timeout time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Consistently polls cond every 50ms for d and fails the test at the
// first error: for what must not happen within a time.
func Consistently(t TB, d time.Duration, cond func() error) {
	t.Helper()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := cond(); err != nil {
			t.Fatalf("within %v: %v", d, err)
		}
	}
}

// Leader waits until the running servers agree on one leader, and returns it.
func (c *Cluster) Leader(timeout time.Duration) *Server {
	c.t.Helper()
	var leader *Server
	Eventually(c.t, timeout, func() error {
		leader = nil
		names := map[string]bool{}
		for _, s := range c.Servers {
			if !s.Running() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := s.Client().Status(ctx)
			cancel()
			if err != nil {
				return fmt.Errorf("%s: %w", s.Name, err)
			}
			if st.Leader == "" {
				return fmt.Errorf("%s knows no leader", s.Name)
			}
			names[st.Leader] = true
		}
		if len(names) != 1 {
			return fmt.Errorf("servers disagree on the leader: %v", names)
		}
		for name := range names {
			leader = c.Server(name)
		}
		if leader == nil || !leader.Running() {
			return fmt.Errorf("leader %v is not running", names)
		}
		return leader.Ready()
	})
	return leader
}

// Ready returns nil when the server answers /readyz with 200.
func (s *Server) Ready() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.API()+"/readyz", nil)
	resp, err := (&http.Client{Transport: &http.Transport{DialContext: s.c.dialContext}}).Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s not ready: %s", s.Name, resp.Status)
	}
	return nil
}

// Server returns the server with the given name, or nil.
func (c *Cluster) Server(name string) *Server {
	for _, s := range c.Servers {
		if s.Name == name {
			return s
		}
	}
	return nil
}

// Others returns the servers other than s.
func (c *Cluster) Others(s *Server) []*Server {
	var out []*Server
	for _, o := range c.Servers {
		if o != s {
			out = append(out, o)
		}
	}
	return out
}

// PID returns the process ID of the running server, or 0.
func (s *Server) PID() int {
	if cmd, _ := s.running(); cmd != nil {
		return cmd.Process.Pid
	}
	return 0
}

// Cluster returns the cluster s belongs to.
func (s *Server) Cluster() *Cluster { return s.c }
