package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Dev is a one-node cluster in a network namespace of its own, reached
// from the test through it: `pontoon dev` (a server and a node that runs
// pods in one process), or, split, a `pontoon server` and a `pontoon
// agent` that finds it by gossip.
type Dev struct {
	t       TB
	bin     string
	Netns   *Netns
	DataDir string
	Args    []string
	split   bool
	logPath string
	// tokenFile is the join token of the split server and agent.
	tokenFile string
	procs     []*Process
}

// Process is a process the harness started in a network namespace: one
// of a Dev, an agent, or a program a benchmark compares with.
type Process struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

// DevAPI is where the dev server listens, inside its namespace.
const DevAPI = "127.0.0.1:6443"

// StartDev starts `pontoon dev` in a new network namespace named ns and
// waits until its node is Ready. When the test ends it is stopped and its
// node cleaned up (`pontoon dev --cleanup`), and the test fails if
// anything of it is left: a process, a mount, a cgroup.
func StartDev(t TB, bin, ns string, args ...string) *Dev {
	t.Helper()
	return startDev(t, bin, ns, false, args)
}

// StartSplitDev is StartDev with the server and the agent in processes
// of their own; args go to the agent.
func StartSplitDev(t TB, bin, ns string, args ...string) *Dev {
	t.Helper()
	return startDev(t, bin, ns, true, args)
}

func startDev(t TB, bin, ns string, split bool, args []string) *Dev {
	t.Helper()
	dir := t.TempDir()
	d := &Dev{t: t, bin: bin, Netns: NewNetns(t, ns), DataDir: filepath.Join(dir, "data"), Args: args, split: split, logPath: filepath.Join(dir, "dev.log"),
		tokenFile: NewTokenFile(t, dir)}
	t.Cleanup(d.cleanup)
	// A --node-ip is the node's address: it is put on the namespace's lo,
	// where pods reach it as their node's, as on a machine whose address
	// is on an interface.
	if i := slices.Index(args, "--node-ip"); i >= 0 && i+1 < len(args) {
		if out, err := d.Netns.Command("ip", "addr", "add", args[i+1]+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("node address %s on lo: %v: %s", args[i+1], err, out)
		}
	}
	d.Start()
	d.WaitReady(60 * time.Second)
	return d
}

// Start starts the processes (again).
func (d *Dev) Start() {
	d.t.Helper()
	runs := [][]string{append([]string{"dev", "--data-dir", d.DataDir, "--log-level", "info"}, d.Args...)}
	if d.split {
		// The layout of pontoon dev's data dir, so cleanup is the same.
		runs = [][]string{
			{"server", "--name", "dev-server", "--data-dir", filepath.Join(d.DataDir, "server"), "--bootstrap-expect", "1", "--token-file", d.tokenFile},
			append([]string{"agent", "--name", "dev", "--data-dir", filepath.Join(d.DataDir, "agent"), "--node-ip", "127.0.0.1",
				"--gossip-addr", "127.0.0.1:7947", "--join", "127.0.0.1:7946", "--token-file", d.tokenFile}, d.Args...),
		}
	}
	if d.split {
		out, errOut, code := run(exec.Command(d.bin, "kubeconfig", "--server", "http://"+DevAPI))
		if code != 0 {
			d.t.Fatalf("pontoon kubeconfig: %s", errOut)
		}
		if err := os.MkdirAll(d.DataDir, 0o755); err != nil {
			d.t.Fatalf("%v", err)
		}
		if err := os.WriteFile(d.Kubeconfig(), []byte(out), 0o600); err != nil {
			d.t.Fatalf("%v", err)
		}
	}
	for _, args := range runs {
		d.procs = append(d.procs, StartProcess(d.t, d.Netns, d.logPath, d.bin, args...))
	}
}

// StartProcess starts bin with args in ns, its output appended to
// logPath.
func StartProcess(t TB, ns *Netns, logPath, bin string, args ...string) *Process {
	t.Helper()
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatalf("%v", err)
	}
	defer log.Close()
	p := &Process{cmd: ns.Command(bin, args...), exited: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = log, log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("%v", err)
	}
	go func() {
		p.cmd.Wait()
		close(p.exited)
	}()
	return p
}

// Stop stops the process with sig and waits for it; one that has not
// exited 30 s after is killed, and the test fails.
func (p *Process) Stop(t TB, sig syscall.Signal) {
	t.Helper()
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("%s did not stop within 30 s of %v", strings.Join(p.cmd.Args, " "), sig)
	}
}

// Stop stops the processes as Ctrl-C does, the agent first, and waits for
// them.
func (d *Dev) Stop() {
	d.t.Helper()
	for i := len(d.procs) - 1; i >= 0; i-- {
		d.procs[i].Stop(d.t, syscall.SIGINT)
	}
	d.procs = nil
}

// AgentPID is the process that runs the node: the agent, or pontoon dev.
func (d *Dev) AgentPID() int { return d.procs[len(d.procs)-1].cmd.Process.Pid }

// exited reports why a process is no longer running, "" while all are.
func (d *Dev) exited() string {
	for _, p := range d.procs {
		select {
		case <-p.exited:
			return fmt.Sprintf("%s exited: %s", p.cmd.Args[3], d.LogTail(20))
		default:
		}
	}
	return ""
}

// Kubeconfig is the kubeconfig for the server.
func (d *Dev) Kubeconfig() string { return filepath.Join(d.DataDir, "kubeconfig") }

// Kubectl runs kubectl against the server, in the namespace.
func (d *Dev) Kubectl(stdin string, args ...string) (stdout, stderr string, code int) {
	return d.Netns.Kubectl(d.Kubeconfig(), stdin, args...)
}

// RESTConfig reaches the server through the namespace.
func (d *Dev) RESTConfig() *rest.Config {
	return &rest.Config{Host: "http://" + DevAPI, Dial: d.Netns.DialContext, QPS: -1}
}

// Clientset is a client of the server.
func (d *Dev) Clientset() *kubernetes.Clientset {
	return kubernetes.NewForConfigOrDie(d.RESTConfig())
}

// WaitReady waits until the node is Ready.
func (d *Dev) WaitReady(timeout time.Duration) {
	d.t.Helper()
	WaitNodeReady(d.t, d.Clientset(), "dev", timeout, d.exited)
}

// WaitNodeReady waits until the node named name is Ready; it gives up
// early when exited says why its agent is gone.
func WaitNodeReady(t TB, cs kubernetes.Interface, name string, timeout time.Duration, exited func() string) {
	t.Helper()
	Eventually(t, timeout, func() error {
		if why := exited(); why != "" {
			return errors.New(why)
		}
		n, err := cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !NodeReady(n) {
			return fmt.Errorf("node %s is not Ready", name)
		}
		return nil
	})
}

// NodeReady reports whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool { return NodeReadyStatus(n) == corev1.ConditionTrue }

// NodeReadyStatus is the status of the node's Ready condition, "" without
// one.
func NodeReadyStatus(n *corev1.Node) corev1.ConditionStatus {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status
		}
	}
	return ""
}

// LogTail is the last n lines of the process's output.
func (d *Dev) LogTail(n int) string { return logTail(d.logPath, n) }

// logTail is the last n lines of the file at path.
func logTail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// cleanup stops the process, removes its node's pods with `pontoon dev
// --cleanup`, and fails the test if anything of them is left.
func (d *Dev) cleanup() {
	d.Stop()
	if d.t.Failed() {
		d.t.Logf("pontoon dev's output, last lines:\n%s", d.LogTail(60))
	}
	if out, errOut, code := d.Netns.Run(d.bin, "dev", "--cleanup", "--data-dir", d.DataDir); code != 0 {
		d.t.Errorf("pontoon dev --cleanup: exit %d: %s%s", code, out, errOut)
	}
	if left := leftovers(d.Netns, d.DataDir, "dev"); left != "" {
		d.t.Errorf("left after cleanup: %s", left)
	}
}

// leftovers lists what is left of the node named node whose data dir was
// dir: its processes (containerd, shims, containers), mounts and pod
// cgroups.
func leftovers(ns *Netns, dir, node string) string {
	var left []string
	// The node's network namespace: the proxy's rules and routes, and
	// the pod bridge.
	if out, _, _ := ns.Run("iptables-save"); strings.Contains(out, "PONTOON") {
		left = append(left, "iptables rules of the proxy")
	}
	if out, _, _ := ns.Run("ip", "route", "show", "proto", "112"); strings.TrimSpace(out) != "" {
		left = append(left, "routes "+strings.TrimSpace(out))
	}
	if _, _, code := ns.Run("ip", "link", "show", "pontoon0"); code == 0 {
		left = append(left, "link pontoon0")
	}
	if out, _, _ := ns.Run("ip", "-4", "addr", "show", "dev", "lo", "label", "lo:pontoon"); strings.TrimSpace(out) != "" {
		left = append(left, "addresses on lo "+strings.TrimSpace(out))
	}
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), dir) {
			left = append(left, "process "+strings.ReplaceAll(string(b), "\x00", " "))
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mountinfo")
	for _, l := range strings.Split(string(mounts), "\n") {
		if strings.Contains(l, dir) {
			left = append(left, "mount "+l)
		}
	}
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/pontoon/" + node); len(cg) > 0 {
		left = append(left, "cgroups "+strings.Join(cg, " "))
	}
	return strings.Join(left, "; ")
}
