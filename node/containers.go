package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// sandboxConfig is the CRI sandbox config of a pod.
func (k *Kubelet) sandboxConfig(pod *corev1.Pod, attempt uint32) (*runtimeapi.PodSandboxConfig, error) {
	cfg := &runtimeapi.PodSandboxConfig{
		Metadata: &runtimeapi.PodSandboxMetadata{Name: pod.Name, Namespace: pod.Namespace, Uid: string(pod.UID), Attempt: attempt},
		Labels: copyLabels(pod.Labels, map[string]string{
			labelPodName: pod.Name, labelPodNamespace: pod.Namespace, labelPodUID: string(pod.UID), labelManagedBy: managedBy,
		}),
		Annotations:  copyLabels(pod.Annotations, nil),
		LogDirectory: podLogDir(k.cfg.PodLogDir, pod.Namespace, pod.Name, pod.UID),
		Linux: &runtimeapi.LinuxPodSandboxConfig{
			CgroupParent: podCgroup(k.cfg.CgroupParent, pod.UID),
			SecurityContext: &runtimeapi.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaceOptions(pod),
			},
		},
	}
	if !pod.Spec.HostNetwork {
		// A host-network pod keeps the node's host name (containerd
		// refuses to set one in the node's namespace).
		cfg.Hostname = podHostname(pod)
	}
	if sc := pod.Spec.SecurityContext; sc != nil && len(sc.Sysctls) > 0 {
		cfg.Linux.Sysctls = map[string]string{}
		for _, sysctl := range sc.Sysctls {
			cfg.Linux.Sysctls[sysctl.Name] = sysctl.Value
		}
	}
	cfg.DnsConfig = k.dnsConfig(pod)
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		for _, p := range c.Ports {
			if p.HostPort == 0 {
				continue
			}
			cfg.PortMappings = append(cfg.PortMappings, &runtimeapi.PortMapping{
				Protocol: protocol(p.Protocol), ContainerPort: p.ContainerPort, HostPort: p.HostPort, HostIp: p.HostIP})
		}
	}
	if sc := pod.Spec.SecurityContext; sc != nil {
		lsc := cfg.Linux.SecurityContext
		if sc.RunAsUser != nil {
			lsc.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
		}
		if sc.RunAsGroup != nil {
			lsc.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
		}
		lsc.SupplementalGroups = sc.SupplementalGroups
	}
	return cfg, nil
}

func namespaceOptions(pod *corev1.Pod) *runtimeapi.NamespaceOption {
	o := &runtimeapi.NamespaceOption{Pid: runtimeapi.NamespaceMode_CONTAINER}
	if pod.Spec.HostNetwork {
		o.Network = runtimeapi.NamespaceMode_NODE
	}
	if pod.Spec.HostPID {
		o.Pid = runtimeapi.NamespaceMode_NODE
	} else if pod.Spec.ShareProcessNamespace != nil && *pod.Spec.ShareProcessNamespace {
		o.Pid = runtimeapi.NamespaceMode_POD
	}
	if pod.Spec.HostIPC {
		o.Ipc = runtimeapi.NamespaceMode_NODE
	}
	return o
}

func protocol(p corev1.Protocol) runtimeapi.Protocol {
	switch p {
	case corev1.ProtocolUDP:
		return runtimeapi.Protocol_UDP
	case corev1.ProtocolSCTP:
		return runtimeapi.Protocol_SCTP
	}
	return runtimeapi.Protocol_TCP
}

// dnsConfig is the pod's resolv.conf, as the kubelet makes it for its DNS
// policy. Without cluster DNS, ClusterFirst falls back to the node's
// resolv.conf, as the kubelet does.
func (k *Kubelet) dnsConfig(pod *corev1.Pod) *runtimeapi.DNSConfig {
	policy := pod.Spec.DNSPolicy
	if policy == corev1.DNSClusterFirstWithHostNet {
		policy = corev1.DNSClusterFirst
	} else if policy == corev1.DNSClusterFirst && pod.Spec.HostNetwork {
		policy = corev1.DNSDefault
	}
	cfg := &runtimeapi.DNSConfig{}
	switch {
	case policy == corev1.DNSNone:
	case policy == corev1.DNSClusterFirst && len(k.cfg.ClusterDNS) > 0:
		cfg.Servers = k.cfg.ClusterDNS
		d := k.cfg.ClusterDomain
		cfg.Searches = []string{pod.Namespace + ".svc." + d, "svc." + d, d}
		cfg.Options = []string{"ndots:5"}
	default:
		cfg.Servers, cfg.Searches, cfg.Options = hostResolvConf(k.cfg.ResolvConf)
	}
	if dc := pod.Spec.DNSConfig; dc != nil {
		// As the kubelet merges them: servers and searches added once
		// each, an option of the same name replaced.
		for _, n := range dc.Nameservers {
			if !slices.Contains(cfg.Servers, n) {
				cfg.Servers = append(cfg.Servers, n)
			}
		}
		for _, d := range dc.Searches {
			if !slices.Contains(cfg.Searches, d) {
				cfg.Searches = append(cfg.Searches, d)
			}
		}
		for _, o := range dc.Options {
			opt := o.Name
			if o.Value != nil {
				opt += ":" + *o.Value
			}
			if i := slices.IndexFunc(cfg.Options, func(cur string) bool { name, _, _ := strings.Cut(cur, ":"); return name == o.Name }); i >= 0 {
				cfg.Options[i] = opt
			} else {
				cfg.Options = append(cfg.Options, opt)
			}
		}
	}
	return cfg
}

// hostResolvConf reads the node's resolv.conf.
func hostResolvConf(path string) (servers, searches, options []string) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, nil
	}
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "nameserver":
			servers = append(servers, f[1])
		case "search":
			searches = f[1:]
		case "options":
			options = f[1:]
		}
	}
	return servers, searches, options
}

// startContainer pulls the container's image if it must, then creates and
// starts the container. When it cannot, it returns why the container
// waits, as the kubelet reports it.
func (k *Kubelet) startContainer(ctx context.Context, pod *corev1.Pod, sandboxID string, sandbox *runtimeapi.PodSandboxConfig, s containerStart, podIP string, vols map[string]volume) (waitingReason, error) {
	c := s.container
	imageRef, w, err := k.ensureImage(ctx, pod, c)
	if err != nil {
		return w, err
	}
	cfg, err := k.containerConfig(ctx, pod, c, s, podIP, vols)
	if err != nil {
		k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", err)
		return waitingReason{Reason: "CreateContainerConfigError", Message: err.Error()}, err
	}
	cfg.Image = &runtimeapi.ImageSpec{Image: imageRef, UserSpecifiedImage: c.Image}
	if err := os.MkdirAll(filepath.Join(sandbox.LogDirectory, c.Name), 0o755); err != nil {
		return waitingReason{Reason: "CreateContainerError", Message: err.Error()}, err
	}
	created, err := k.cfg.Runtime.CreateContainer(ctx, &runtimeapi.CreateContainerRequest{PodSandboxId: sandboxID, Config: cfg, SandboxConfig: sandbox})
	if err != nil {
		k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", grpcMessage(err))
		return waitingReason{Reason: "CreateContainerError", Message: grpcMessage(err)}, err
	}
	k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Created", "Created container: %s", c.Name)
	if _, err := k.cfg.Runtime.StartContainer(ctx, &runtimeapi.StartContainerRequest{ContainerId: created.ContainerId}); err != nil {
		k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "Failed", "Error: %v", grpcMessage(err))
		return waitingReason{Reason: "RunContainerError", Message: grpcMessage(err)}, err
	}
	k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Started", "Started container %s", c.Name)
	return k.postStart(ctx, pod, c, created.ContainerId)
}

// ensureImage makes sure the container's image is present, pulling it as
// its pull policy says. An image present only on the node is never pulled
// unless the policy is Always (a pull would ask a registry for it).
func (k *Kubelet) ensureImage(ctx context.Context, pod *corev1.Pod, c *corev1.Container) (string, waitingReason, error) {
	st, err := k.cfg.Runtime.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: c.Image}})
	if err != nil {
		return "", waitingReason{Reason: "ErrImageInspect", Message: grpcMessage(err)}, err
	}
	present := st.Image != nil
	policy := c.ImagePullPolicy
	if policy == "" {
		policy = corev1.PullIfNotPresent
	}
	// An image that exists only here is not pulled whatever the policy: no
	// registry has it.
	if present && (policy != corev1.PullAlways || k.cfg.LocalImages != nil && k.cfg.LocalImages.IsLocal(ctx, c.Image)) {
		k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Pulled", "Container image %q already present on machine", c.Image)
		return st.Image.Id, waitingReason{}, nil
	}
	if policy == corev1.PullNever {
		msg := fmt.Sprintf("Container image %q is not present with pull policy of Never", c.Image)
		k.cfg.Recorder.Event(pod, corev1.EventTypeWarning, "ErrImageNeverPull", msg)
		return "", waitingReason{Reason: "ErrImageNeverPull", Message: msg}, errors.New(msg)
	}
	key := "pull/" + string(pod.UID) + "/" + c.Image
	if k.backoff.IsInBackOffSinceUpdate(key, k.backoff.Clock.Now()) {
		msg := fmt.Sprintf("Back-off pulling image %q", c.Image)
		k.cfg.Recorder.Event(pod, corev1.EventTypeNormal, "BackOff", msg)
		return "", waitingReason{Reason: "ImagePullBackOff", Message: msg}, errors.New(msg)
	}
	auths, missing := k.pullCredentials(ctx, pod, c.Image)
	if len(missing) > 0 {
		k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedToRetrieveImagePullSecret",
			"Unable to retrieve some image pull secrets (%s); attempting to pull the image may not succeed.", strings.Join(missing, ", "))
	}
	k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Pulling", "Pulling image %q", c.Image)
	resp, err := k.pull(ctx, c.Image, auths)
	if err != nil {
		k.backoff.Next(key, k.backoff.Clock.Now())
		msg := fmt.Sprintf("Failed to pull image %q: %s", c.Image, grpcMessage(err))
		k.cfg.Recorder.Event(pod, corev1.EventTypeWarning, "Failed", msg)
		k.cfg.Recorder.Event(pod, corev1.EventTypeWarning, "Failed", "Error: ErrImagePull")
		return "", waitingReason{Reason: "ErrImagePull", Message: msg}, err
	}
	k.backoff.Reset(key)
	k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Pulled", "Successfully pulled image %q", c.Image)
	return resp.ImageRef, waitingReason{}, nil
}

// pull pulls image with each credential in turn until one serves, as
// the kubelet does, or without any when none matches it.
func (k *Kubelet) pull(ctx context.Context, image string, auths []*runtimeapi.AuthConfig) (*runtimeapi.PullImageResponse, error) {
	if len(auths) == 0 {
		auths = []*runtimeapi.AuthConfig{nil}
	}
	var err error
	for _, auth := range auths {
		var resp *runtimeapi.PullImageResponse
		if resp, err = k.cfg.Runtime.PullImage(ctx, &runtimeapi.PullImageRequest{Image: &runtimeapi.ImageSpec{Image: image}, Auth: auth}); err == nil {
			return resp, nil
		}
	}
	return nil, err
}

// grpcMessage is the message of a gRPC error, without its code.
func grpcMessage(err error) string {
	if s, ok := status.FromError(err); ok && s.Code() != codes.OK {
		return s.Message()
	}
	return err.Error()
}

// containerConfig is the CRI config of one container of the pod.
func (k *Kubelet) containerConfig(ctx context.Context, pod *corev1.Pod, c *corev1.Container, s containerStart, podIP string, vols map[string]volume) (*runtimeapi.ContainerConfig, error) {
	env, err := k.containerEnv(ctx, pod, c, podIP)
	if err != nil {
		return nil, err
	}
	vars := map[string]string{}
	for _, e := range env {
		vars[e.Key] = e.Value
	}
	lookup := func(name string) (string, bool) { v, ok := vars[name]; return v, ok }
	mounts, err := containerMounts(c, vols, lookup)
	if err != nil {
		return nil, err
	}
	if m, err := k.terminationMount(pod, c, s.attempt); err != nil {
		return nil, err
	} else if m != nil {
		mounts = append(mounts, m)
	}
	if m, err := k.hostsMount(pod, c, podIP); err != nil {
		return nil, err
	} else if m != nil {
		mounts = append(mounts, m)
	}
	cfg := &runtimeapi.ContainerConfig{
		Metadata:   &runtimeapi.ContainerMetadata{Name: c.Name, Attempt: s.attempt},
		Command:    expandAll(c.Command, lookup),
		Args:       expandAll(c.Args, lookup),
		WorkingDir: c.WorkingDir,
		Envs:       env,
		Mounts:     mounts,
		Labels: map[string]string{
			labelPodName: pod.Name, labelPodNamespace: pod.Namespace, labelPodUID: string(pod.UID),
			labelContainerName: c.Name, labelManagedBy: managedBy,
		},
		Annotations: map[string]string{
			annotationImage:                        c.Image,
			annotationTermMsgPath:                  c.TerminationMessagePath,
			annotationTermMsgPolicy:                string(c.TerminationMessagePolicy),
			"io.kubernetes.container.restartCount": strconv.Itoa(int(s.attempt)),
		},
		LogPath:   filepath.Join(c.Name, strconv.Itoa(int(s.attempt))+".log"),
		Stdin:     c.Stdin,
		StdinOnce: c.StdinOnce,
		Tty:       c.TTY,
		Linux:     &runtimeapi.LinuxContainerConfig{Resources: resources(c), SecurityContext: securityContext(pod, c)},
	}
	if s.init {
		cfg.Annotations[annotationInit] = "true"
	}
	if ns := cfg.Linux.SecurityContext.NamespaceOptions; s.target != "" && ns.Pid == runtimeapi.NamespaceMode_CONTAINER {
		ns.Pid, ns.TargetId = runtimeapi.NamespaceMode_TARGET, s.target
	}
	if err := k.verifyRunAsNonRoot(ctx, pod, c, cfg.Linux.SecurityContext); err != nil {
		return nil, err
	}
	return cfg, nil
}

// verifyRunAsNonRoot refuses, as the kubelet does before it creates the
// container, a container whose runAsNonRoot (its own, else the pod's) is
// set and that would run as root: by its runAsUser, or, without one, by
// its image's user (an image without a user runs as root; a user name
// cannot be checked).
func (k *Kubelet) verifyRunAsNonRoot(ctx context.Context, pod *corev1.Pod, c *corev1.Container, sc *runtimeapi.LinuxContainerSecurityContext) error {
	var nonRoot *bool
	if pod.Spec.SecurityContext != nil {
		nonRoot = pod.Spec.SecurityContext.RunAsNonRoot
	}
	if c.SecurityContext != nil && c.SecurityContext.RunAsNonRoot != nil {
		nonRoot = c.SecurityContext.RunAsNonRoot
	}
	if nonRoot == nil || !*nonRoot {
		return nil
	}
	who := fmt.Sprintf("(pod: %q, container: %s)", fmt.Sprintf("%s_%s(%s)", pod.Name, pod.Namespace, pod.UID), c.Name)
	if sc.RunAsUser != nil {
		if sc.RunAsUser.Value == 0 {
			return fmt.Errorf("container's runAsUser breaks non-root policy %s", who)
		}
		return nil
	}
	st, err := k.cfg.Runtime.ImageStatus(ctx, &runtimeapi.ImageStatusRequest{Image: &runtimeapi.ImageSpec{Image: c.Image}})
	if err != nil {
		return fmt.Errorf("image status of %s: %s", c.Image, grpcMessage(err))
	}
	switch img := st.GetImage(); {
	case img.GetUid() != nil && img.GetUid().Value != 0:
		return nil
	case img.GetUid() == nil && img.GetUsername() != "":
		return fmt.Errorf("container has runAsNonRoot and image has non-numeric user (%s), cannot verify user is non-root %s", img.GetUsername(), who)
	default:
		return fmt.Errorf("container has runAsNonRoot and image will run as root %s", who)
	}
}

// resources are the container's CPU and memory limits as cgroup settings,
// as the kubelet computes them.
func resources(c *corev1.Container) *runtimeapi.LinuxContainerResources {
	r := &runtimeapi.LinuxContainerResources{CpuShares: 2, CpuPeriod: 100000}
	if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
		r.CpuShares = max(2, q.MilliValue()*1024/1000)
	} else if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		r.CpuShares = max(2, q.MilliValue()*1024/1000)
	}
	if q, ok := c.Resources.Limits[corev1.ResourceCPU]; ok {
		r.CpuQuota = max(1000, q.MilliValue()*r.CpuPeriod/1000)
	}
	if q, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		r.MemoryLimitInBytes = q.Value()
	}
	return r
}

// securityContext is the container's Linux security context, the
// container's settings over the pod's.
func securityContext(pod *corev1.Pod, c *corev1.Container) *runtimeapi.LinuxContainerSecurityContext {
	out := &runtimeapi.LinuxContainerSecurityContext{NamespaceOptions: namespaceOptions(pod)}
	if psc := pod.Spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			out.RunAsUser = &runtimeapi.Int64Value{Value: *psc.RunAsUser}
		}
		if psc.RunAsGroup != nil {
			out.RunAsGroup = &runtimeapi.Int64Value{Value: *psc.RunAsGroup}
		}
		out.SupplementalGroups = psc.SupplementalGroups
	}
	sc := c.SecurityContext
	if sc == nil {
		return out
	}
	if sc.RunAsUser != nil {
		out.RunAsUser = &runtimeapi.Int64Value{Value: *sc.RunAsUser}
	}
	if sc.RunAsGroup != nil {
		out.RunAsGroup = &runtimeapi.Int64Value{Value: *sc.RunAsGroup}
	}
	if sc.Privileged != nil {
		out.Privileged = *sc.Privileged
	}
	if sc.ReadOnlyRootFilesystem != nil {
		out.ReadonlyRootfs = *sc.ReadOnlyRootFilesystem
	}
	if sc.AllowPrivilegeEscalation != nil {
		out.NoNewPrivs = !*sc.AllowPrivilegeEscalation
	}
	if caps := sc.Capabilities; caps != nil {
		out.Capabilities = &runtimeapi.Capability{}
		for _, a := range caps.Add {
			out.Capabilities.AddCapabilities = append(out.Capabilities.AddCapabilities, string(a))
		}
		for _, d := range caps.Drop {
			out.Capabilities.DropCapabilities = append(out.Capabilities.DropCapabilities, string(d))
		}
	}
	return out
}

// podCgroup is the pod's cgroup under parent.
func podCgroup(parent string, uid types.UID) string {
	return filepath.Join(parent, "pod"+string(uid))
}

// removeEmptyCgroup removes a cgroup from every hierarchy where it has
// no child.
func removeEmptyCgroup(path string) {
	roots, _ := filepath.Glob("/sys/fs/cgroup/*")
	for _, r := range append(roots, "/sys/fs/cgroup") {
		os.Remove(filepath.Join(r, path))
	}
}

// removeCgroup removes a cgroup (cgroupfs path) and those under it from
// every hierarchy: containerd leaves pod cgroups behind.
func removeCgroup(path string) error {
	roots, err := filepath.Glob("/sys/fs/cgroup/*")
	if err != nil {
		return err
	}
	roots = append(roots, "/sys/fs/cgroup")
	var errs []error
	for _, r := range roots {
		dir := filepath.Join(r, path)
		if _, err := os.Stat(dir); err != nil {
			continue
		}
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			if err := os.Remove(dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}
