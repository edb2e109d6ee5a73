// Package containerd runs containerd as a child of the agent, as k3s does:
// its config, root, state, sockets, runc root and CNI config all live
// under one directory of the agent's data dir, so several agents run side
// by side on one machine and a cleanup knows what is theirs. It also
// imports image archives into it with containerd's Go client.
//
// Containers outlive the daemon (each has its shim), so stopping the agent
// leaves its pods running, and the next start takes them up again.
package containerd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"text/template"
	"time"

	containerdclient "github.com/containerd/containerd"
	"github.com/containerd/containerd/namespaces"
	"github.com/distribution/reference"
)

// Namespace is the containerd namespace CRI keeps Kubernetes' images and
// containers in.
const Namespace = "k8s.io"

// snapshotter is the snapshotter CRI unpacks images to.
const snapshotter = "overlayfs"

// Options say where the daemon keeps its state and what its CRI plugin uses.
type Options struct {
	// Dir holds everything of the daemon's: config, root, state, sockets,
	// runc's root, its log and pid file.
	Dir string
	// CNIBinDir holds the CNI plugins (Debian installs them in
	// /usr/lib/cni); CNIConfDir the network config the agent writes.
	CNIBinDir, CNIConfDir string
	// SandboxImage is the pause image, made by the agent.
	SandboxImage string
	// StreamAddress is the address containerd's streaming server (exec,
	// attach, port-forward) listens on; the kubelet proxies to it.
	StreamAddress string
	Logger        *slog.Logger
}

// Daemon is a containerd the agent runs, kept running as systemd keeps a
// node's containerd (Restart=always in containerd's own unit): one that
// exits is started again after a back-off, and the pods outlive it, as
// their shims do not depend on the daemon. Meanwhile CRI calls fail, and
// the kubelet retries them.
type Daemon struct {
	opts Options
	mu   sync.Mutex
	// cmd is the current process; exited is closed when it has exited.
	cmd    *exec.Cmd
	exited chan struct{}
	// stop is closed by Stop; done when the keeper has given up the
	// daemon to it.
	stop, done chan struct{}
}

// Restart back-off: the first restart is after minRestartDelay, doubling
// to maxRestartDelay while the daemon keeps exiting within stableRun.
const (
	minRestartDelay = time.Second
	maxRestartDelay = 30 * time.Second
	stableRun       = time.Minute
)

// Socket is the daemon's gRPC socket under dir, the CRI endpoint.
func Socket(dir string) string { return filepath.Join(dir, "containerd.sock") }

// Start writes the daemon's config, stops a daemon a previous agent left
// running on the same directory, starts containerd and waits until it
// answers.
func Start(ctx context.Context, o Options) (*Daemon, error) {
	if _, err := exec.LookPath("containerd"); err != nil {
		return nil, fmt.Errorf("containerd is not installed (Debian: apt install containerd runc containernetworking-plugins): %w", err)
	}
	for _, d := range []string{o.Dir, o.CNIConfDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	if err := stopLeftover(ctx, o.Dir); err != nil {
		return nil, err
	}
	var cfg bytes.Buffer
	if err := configTemplate.Execute(&cfg, o); err != nil {
		return nil, err
	}
	cfgPath := filepath.Join(o.Dir, "config.toml")
	if err := os.WriteFile(cfgPath, cfg.Bytes(), 0o600); err != nil {
		return nil, err
	}
	d := &Daemon{opts: o, stop: make(chan struct{}), done: make(chan struct{})}
	if err := d.spawn(); err != nil {
		return nil, err
	}
	if err := d.waitReady(ctx); err != nil {
		close(d.done)
		d.Stop(context.Background())
		return nil, err
	}
	go d.keep()
	return d, nil
}

// spawn starts a containerd process with the config written by Start.
func (d *Daemon) spawn() error {
	logPath := filepath.Join(d.opts.Dir, "containerd.log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	defer logFile.Close()
	cmd := exec.Command("containerd", "--config", filepath.Join(d.opts.Dir, "config.toml"))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group: a Ctrl-C in the agent's terminal reaches the
	// agent, which stops containerd in its turn.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start containerd: %w", err)
	}
	if err := os.WriteFile(pidFile(d.opts.Dir), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		cmd.Process.Kill()
		cmd.Wait()
		return err
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	d.mu.Lock()
	d.cmd, d.exited = cmd, exited
	d.mu.Unlock()
	d.opts.Logger.Info("containerd started", "pid", cmd.Process.Pid, "socket", Socket(d.opts.Dir), "log", logPath)
	return nil
}

// current is the current process and its exit.
func (d *Daemon) current() (*exec.Cmd, <-chan struct{}) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cmd, d.exited
}

// keep starts the daemon again each time it exits, until Stop.
func (d *Daemon) keep() {
	defer close(d.done)
	delay := minRestartDelay
	for {
		cmd, exited := d.current()
		started := time.Now()
		select {
		case <-d.stop:
			return
		case <-exited:
		}
		if time.Since(started) > stableRun {
			delay = minRestartDelay
		}
		d.opts.Logger.Error("containerd exited; starting it again", "state", cmd.ProcessState.String(), "in", delay,
			"log", filepath.Join(d.opts.Dir, "containerd.log"))
		select {
		case <-d.stop:
			return
		case <-time.After(delay):
		}
		delay = min(2*delay, maxRestartDelay)
		for err := d.spawn(); err != nil; err = d.spawn() {
			d.opts.Logger.Error("containerd not started", "err", err, "retry_in", delay)
			select {
			case <-d.stop:
				return
			case <-time.After(delay):
			}
		}
	}
}

// Endpoint is the CRI endpoint of the daemon.
func (d *Daemon) Endpoint() string { return "unix://" + Socket(d.opts.Dir) }

func (d *Daemon) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	cmd, exited := d.current()
	for {
		c, err := containerdclient.New(Socket(d.opts.Dir), containerdclient.WithTimeout(time.Second))
		if err == nil {
			_, err = c.Version(ctx)
			c.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("containerd exited at start (%v); see %s", cmd.ProcessState, filepath.Join(d.opts.Dir, "containerd.log"))
		case <-ctx.Done():
			return fmt.Errorf("containerd did not answer on %s: %w", Socket(d.opts.Dir), err)
		case <-tick.C:
		}
	}
}

// Stop stops the daemon with SIGTERM, and SIGKILL if it has not exited
// when ctx ends; it is not started again. The containers keep running.
func (d *Daemon) Stop(ctx context.Context) error {
	close(d.stop)
	<-d.done
	cmd, exited := d.current()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-ctx.Done():
		cmd.Process.Kill()
		<-exited
	}
	return os.Remove(pidFile(d.opts.Dir))
}

func pidFile(dir string) string { return filepath.Join(dir, "containerd.pid") }

// stopLeftover stops a containerd that an agent killed with SIGKILL left
// running on dir, so that the new one can take its sockets.
func stopLeftover(ctx context.Context, dir string) error {
	b, err := os.ReadFile(pidFile(dir))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || !isContainerd(pid, dir) {
		return os.Remove(pidFile(dir))
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(10 * time.Second)
	for isContainerd(pid, dir) {
		if time.Now().After(deadline) {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return os.Remove(pidFile(dir))
}

// isContainerd reports whether pid is a live containerd started with the
// config under dir (a pid file outlives its process, and pids are reused).
func isContainerd(pid int, dir string) bool {
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err == nil {
		if f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:])); len(f) > 0 && f[0] == "Z" {
			return false
		}
	}
	return bytes.Contains(cmdline, []byte(filepath.Join(dir, "config.toml")))
}

// localLabel marks the images imported from an archive: no registry has
// them, so the kubelet never pulls them, whatever their pull policy.
const localLabel = "io.pontoon.image.local"

// LocalImages tells the images imported from archives from the others.
type LocalImages struct {
	c *containerdclient.Client
}

// OpenLocalImages connects to the daemon on socket.
func OpenLocalImages(socket string) (*LocalImages, error) {
	c, err := containerdclient.New(socket, containerdclient.WithDefaultNamespace(Namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd on %s: %w", socket, err)
	}
	return &LocalImages{c: c}, nil
}

// IsLocal reports whether the image ref (as a pod names it) was imported
// from an archive.
func (l *LocalImages) IsLocal(ctx context.Context, ref string) bool {
	named, err := reference.ParseDockerRef(ref)
	if err != nil {
		return false
	}
	im, err := l.c.ImageService().Get(namespaces.WithNamespace(ctx, Namespace), named.String())
	return err == nil && im.Labels[localLabel] == "true"
}

// Close closes the connection.
func (l *LocalImages) Close() error { return l.c.Close() }

// Import imports the image archive r (an OCI image layout or `docker
// save` tar) and unpacks its images for CRI. It returns their names.
func Import(ctx context.Context, socket string, r io.Reader) ([]string, error) {
	c, err := containerdclient.New(socket, containerdclient.WithDefaultNamespace(Namespace))
	if err != nil {
		return nil, fmt.Errorf("containerd on %s: %w", socket, err)
	}
	defer c.Close()
	ctx = namespaces.WithNamespace(ctx, Namespace)
	imgs, err := c.Import(ctx, r)
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var names []string
	for _, im := range imgs {
		if err := containerdclient.NewImage(c, im).Unpack(ctx, snapshotter); err != nil {
			return names, fmt.Errorf("unpack %s: %w", im.Name, err)
		}
		if im.Labels == nil {
			im.Labels = map[string]string{}
		}
		im.Labels[localLabel] = "true"
		if _, err := c.ImageService().Update(ctx, im, "labels."+localLabel); err != nil {
			return names, fmt.Errorf("label %s: %w", im.Name, err)
		}
		names = append(names, im.Name)
	}
	if len(names) == 0 {
		return nil, errors.New("the archive names no image")
	}
	return names, nil
}

// configTemplate is containerd 1.6's config (version 2). What each
// setting is for:
//   - restrict_oom_score_adj: without CAP_SYS_RESOURCE (a container, a VM
//     like the CI's), runc cannot set the sandbox's negative
//     oom_score_adj and every sandbox fails;
//   - SystemdCgroup false: cgroupfs, as on machines without systemd; the
//     kubelet makes and removes the pod cgroups;
//   - netns_mounts_under_state_dir: pod network namespaces under the
//     state dir, so a cleanup finds them;
//   - the streaming server on the node's address, where the kubelet
//     reaches it;
//   - the opt plugin's path and runc's root under the daemon's directory,
//     so two agents on one machine do not meet.
var configTemplate = template.Must(template.New("config").Parse(`version = 2
root = "{{.Dir}}/root"
state = "{{.Dir}}/state"
[grpc]
  address = "{{.Dir}}/containerd.sock"
[ttrpc]
  address = "{{.Dir}}/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{{.Dir}}/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{{.SandboxImage}}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "{{.StreamAddress}}"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{{.CNIBinDir}}"
    conf_dir = "{{.CNIConfDir}}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{{.Dir}}/runc"
`))
