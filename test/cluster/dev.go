package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Dev is a `pontoon dev` process (a server and a node that runs pods) in
// a network namespace of its own, reached from the test through it.
type Dev struct {
	t       TB
	bin     string
	Netns   *Netns
	DataDir string
	Args    []string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{}
}

// DevAPI is where the dev server listens, inside its namespace.
const DevAPI = "127.0.0.1:6443"

// StartDev starts `pontoon dev` in a new network namespace named ns and
// waits until its node is Ready. When the test ends it is stopped and its
// node cleaned up (`pontoon dev --cleanup`), and the test fails if
// anything of it is left: a process, a mount, a cgroup.
func StartDev(t TB, bin, ns string, args ...string) *Dev {
	t.Helper()
	dir := t.TempDir()
	d := &Dev{t: t, bin: bin, Netns: NewNetns(t, ns), DataDir: filepath.Join(dir, "data"), Args: args, logPath: filepath.Join(dir, "dev.log")}
	t.Cleanup(d.cleanup)
	d.Start()
	d.WaitReady(60 * time.Second)
	return d
}

// Start starts the process (again).
func (d *Dev) Start() {
	d.t.Helper()
	log, err := os.OpenFile(d.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		d.t.Fatalf("%v", err)
	}
	defer log.Close()
	d.cmd = d.Netns.Command(d.bin, append([]string{"dev", "--data-dir", d.DataDir, "--log-level", "info"}, d.Args...)...)
	d.cmd.Stdout, d.cmd.Stderr = log, log
	if err := d.cmd.Start(); err != nil {
		d.t.Fatalf("%v", err)
	}
	d.exited = make(chan struct{})
	cmd, exited := d.cmd, d.exited
	go func() {
		cmd.Wait()
		close(exited)
	}()
}

// Stop stops the process as Ctrl-C does and waits for it.
func (d *Dev) Stop() {
	d.t.Helper()
	if d.cmd == nil {
		return
	}
	d.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-d.exited:
	case <-time.After(30 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("pontoon dev did not stop within 30 s of SIGINT")
	}
	d.cmd = nil
}

// Kubeconfig is the kubeconfig the process wrote.
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
	cs := d.Clientset()
	Eventually(d.t, timeout, func() error {
		select {
		case <-d.exited:
			return fmt.Errorf("pontoon dev exited: %s", d.LogTail(20))
		default:
		}
		n, err := cs.CoreV1().Nodes().Get(context.Background(), "dev", metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return nil
			}
		}
		return errors.New("node dev is not Ready")
	})
}

// LogTail is the last n lines of the process's output.
func (d *Dev) LogTail(n int) string {
	b, _ := os.ReadFile(d.logPath)
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
	if left := leftovers(d.DataDir); left != "" {
		d.t.Errorf("left after cleanup: %s", left)
	}
}

// leftovers lists what is left of a node whose data dir was dir: its
// processes (containerd, shims, containers), mounts and pod cgroups.
func leftovers(dir string) string {
	var left []string
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
	if cg, _ := filepath.Glob("/sys/fs/cgroup/*/pontoon/dev"); len(cg) > 0 {
		left = append(left, "cgroups "+strings.Join(cg, " "))
	}
	return strings.Join(left, "; ")
}
