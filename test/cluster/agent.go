package cluster

import (
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/kubernetes"
)

// Agent is a `pontoon agent` in a node namespace of a NodeNet, with a
// containerd of its own. When the test ends it is stopped, its node
// cleaned up (`pontoon agent cleanup`), and the test fails if anything of
// it is left: a process, a mount, a cgroup.
type Agent struct {
	t       TB
	bin     string
	Name    string
	IP      string
	Netns   *Netns
	DataDir string
	args    []string
	logPath string
	proc    *Process
}

// StartAgent starts an agent named name at Prefix+host that joins c
// through the gossip addresses join, and waits until its node is Ready
// as cs sees it.
func (n *NodeNet) StartAgent(bin, name string, host int, c *Cluster, join []string, cs kubernetes.Interface, args ...string) *Agent {
	n.t.Helper()
	ns, ip := n.AddNode("pontoon-"+name, host)
	dir := n.t.TempDir()
	a := &Agent{t: n.t, bin: bin, Name: name, IP: ip, Netns: ns, DataDir: filepath.Join(dir, "data"),
		logPath: filepath.Join(dir, "agent.log")}
	a.args = []string{"agent", "--name", name, "--data-dir", a.DataDir, "--node-ip", ip, "--token-file", c.TokenFile()}
	for _, j := range join {
		a.args = append(a.args, "--join", j)
	}
	a.args = append(a.args, args...)
	n.t.Cleanup(a.cleanup)
	a.Start()
	a.WaitReady(cs, 60*time.Second)
	return a
}

// Start starts the agent (again).
func (a *Agent) Start() {
	a.t.Helper()
	a.proc = StartProcess(a.t, a.Netns, a.logPath, a.bin, a.args...)
}

// WaitReady waits until the agent's node is Ready.
func (a *Agent) WaitReady(cs kubernetes.Interface, timeout time.Duration) {
	a.t.Helper()
	WaitNodeReady(a.t, cs, a.Name, timeout, a.exited)
}

// Stop stops the agent as Ctrl-C does.
func (a *Agent) Stop() { a.halt(syscall.SIGINT) }

// Kill kills the agent with SIGKILL, as a crash does: its containerd and
// its pods live on.
func (a *Agent) Kill() { a.halt(syscall.SIGKILL) }

func (a *Agent) halt(sig syscall.Signal) {
	a.t.Helper()
	if a.proc != nil {
		a.proc.Stop(a.t, sig)
		a.proc = nil
	}
}

// exited says why the agent is not running, "" while it is.
func (a *Agent) exited() string {
	if a.proc == nil {
		return a.Name + " is stopped"
	}
	select {
	case <-a.proc.exited:
		return fmt.Sprintf("agent %s exited: %s", a.Name, logTail(a.logPath, 20))
	default:
		return ""
	}
}

func (a *Agent) cleanup() {
	a.Stop()
	if a.t.Failed() {
		a.t.Logf("agent %s's output, last lines:\n%s", a.Name, logTail(a.logPath, 60))
	}
	// Twice: a cleanup that finds nothing left succeeds too.
	for range 2 {
		if out, errOut, code := a.Netns.Run(a.bin, "agent", "cleanup", "--name", a.Name, "--data-dir", a.DataDir); code != 0 {
			a.t.Errorf("pontoon agent cleanup: exit %d: %s%s", code, out, errOut)
		}
	}
	if left := leftovers(a.Netns, a.DataDir, a.Name); left != "" {
		a.t.Errorf("left after cleanup of %s: %s", a.Name, strings.TrimSpace(left))
	}
}
