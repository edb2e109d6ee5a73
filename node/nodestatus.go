package node

import (
	"context"
	"fmt"
	"os"
	"reflect"
	goruntime "runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

// PodNetwork is told the node's pod CIDR once the controllers have given
// it one (the agent writes the CNI config from it); until then pods
// cannot get an address and the node is not Ready.
type PodNetwork interface {
	SetPodCIDR(cidr string) error
}

// Registration is what the node registers itself with.
type Registration struct {
	Client   kubernetes.Interface
	Runtime  Runtime
	NodeName string
	NodeIPs  []string
	Labels   map[string]string
	Taints   []corev1.Taint
	MaxPods  int
	// KubeletPort is the port of the kubelet's endpoint on the node IP.
	KubeletPort int
	// DataDir is measured for the node's ephemeral storage.
	DataDir string
	// KubeletVersion is the Kubernetes release the node says it runs.
	KubeletVersion string
	Network        PodNetwork
	// StatusPeriod is how often the node's status is looked at (10 s, the
	// kubelet's nodeStatusUpdateFrequency); it is posted when it changed,
	// and at least every ReportPeriod (5 min, nodeStatusReportFrequency).
	StatusPeriod, ReportPeriod time.Duration
	// LeasePeriod is how often the Lease is renewed (10 s); its duration
	// is four times that.
	LeasePeriod time.Duration
}

// RunNodeStatus registers the node, renews its Lease and posts its status
// until ctx ends.
func RunNodeStatus(ctx context.Context, r Registration) error {
	if r.StatusPeriod == 0 {
		r.StatusPeriod = 10 * time.Second
	}
	if r.ReportPeriod == 0 {
		r.ReportPeriod = 5 * time.Minute
	}
	if r.LeasePeriod == 0 {
		r.LeasePeriod = 10 * time.Second
	}
	node, err := register(ctx, r)
	for err != nil {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Second):
		}
		node, err = register(ctx, r)
	}
	go renewLease(ctx, r, node)
	var lastPost time.Time
	t := time.NewTicker(r.StatusPeriod)
	defer t.Stop()
	// Until the pod CIDR comes, look every second.
	fast := time.NewTicker(time.Second)
	defer fast.Stop()
	networkReady := false
	for {
		cur, err := r.Client.CoreV1().Nodes().Get(ctx, r.NodeName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			// Deleted through the API: register again, as the kubelet does.
			cur, err = register(ctx, r)
		}
		if err == nil {
			if !networkReady && cur.Spec.PodCIDR != "" {
				if err := r.Network.SetPodCIDR(cur.Spec.PodCIDR); err == nil {
					networkReady = true
				}
			}
			st := nodeStatus(ctx, r, cur, networkReady)
			if !reflect.DeepEqual(withoutHeartbeats(st), withoutHeartbeats(cur.Status)) || time.Since(lastPost) >= r.ReportPeriod {
				cur.Status = st
				if _, err := r.Client.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err == nil {
					lastPost = time.Now()
				}
			}
		}
		tick := t.C
		if !networkReady {
			tick = fast.C
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
		}
	}
}

// register creates the node, or takes the one of its name that exists
// (an agent that restarted), and returns it.
func register(ctx context.Context, r Registration) (*corev1.Node, error) {
	labels := map[string]string{
		corev1.LabelHostname: r.NodeName, corev1.LabelOSStable: goruntime.GOOS, corev1.LabelArchStable: goruntime.GOARCH,
	}
	for k, v := range r.Labels {
		labels[k] = v
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: r.NodeName, Labels: labels}, Spec: corev1.NodeSpec{Taints: r.Taints}}
	created, err := r.Client.CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{})
	if err == nil {
		return created, nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("register node %s: %w", r.NodeName, err)
	}
	cur, err := r.Client.CoreV1().Nodes().Get(ctx, r.NodeName, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	// The labels the kubelet owns are brought up to date.
	changed := false
	for k, v := range labels {
		if cur.Labels[k] != v {
			if cur.Labels == nil {
				cur.Labels = map[string]string{}
			}
			cur.Labels[k], changed = v, true
		}
	}
	if changed {
		return r.Client.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
	}
	return cur, nil
}

// renewLease renews the node's Lease in kube-node-lease every
// LeasePeriod, owned by the node so it goes with it.
func renewLease(ctx context.Context, r Registration, node *corev1.Node) {
	leases := r.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	for {
		now := metav1.NewMicroTime(time.Now())
		l, err := leases.Get(ctx, r.NodeName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			l = &coordinationv1.Lease{
				ObjectMeta: metav1.ObjectMeta{Name: r.NodeName, Namespace: corev1.NamespaceNodeLease,
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID}}},
				Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(r.NodeName),
					LeaseDurationSeconds: ptr.To(int32(4 * r.LeasePeriod / time.Second)), RenewTime: &now},
			}
			_, err = leases.Create(ctx, l, metav1.CreateOptions{})
		case err == nil:
			l.Spec.RenewTime = &now
			l.Spec.HolderIdentity = ptr.To(r.NodeName)
			_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
		}
		wait := r.LeasePeriod
		if err != nil && ctx.Err() == nil {
			// Try again sooner, as the kubelet's lease controller backs
			// off from 200 ms.
			wait = time.Second
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// nodeStatus is the node's status as the kubelet posts it.
func nodeStatus(ctx context.Context, r Registration, cur *corev1.Node, networkReady bool) corev1.NodeStatus {
	// One question to the runtime a look: whether it answers, and what
	// it is.
	version, versionErr := r.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
	capacity := machineCapacity(r.DataDir)
	capacity[corev1.ResourcePods] = *resource.NewQuantity(int64(r.MaxPods), resource.DecimalSI)
	var fs syscall.Statfs_t
	fsErr := syscall.Statfs(r.DataDir, &fs)
	avail := memInfo("MemAvailable:")
	memPressure := avail > 0 && avail < memoryAvailableMin
	diskPressure := fsErr == nil && diskPressed(fs)
	st := corev1.NodeStatus{
		Capacity:        capacity,
		Allocatable:     capacity.DeepCopy(),
		Phase:           corev1.NodeRunning,
		DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: int32(r.KubeletPort)}},
		NodeInfo:        nodeInfo(r, version),
		Images:          cur.Status.Images,
		VolumesInUse:    cur.Status.VolumesInUse,
		VolumesAttached: cur.Status.VolumesAttached,
	}
	for _, ip := range r.NodeIPs {
		st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip})
	}
	st.Addresses = append(st.Addresses, corev1.NodeAddress{Type: corev1.NodeHostName, Address: r.NodeName})

	now := metav1.Now()
	ready, reason, msg := true, "KubeletReady", "kubelet is posting ready status"
	switch {
	case versionErr != nil:
		ready, reason, msg = false, "KubeletNotReady", "container runtime is down: "+versionErr.Error()
	case !networkReady:
		ready, reason, msg = false, "KubeletNotReady", "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: no pod CIDR assigned yet"
	}
	cond := func(t corev1.NodeConditionType, status corev1.ConditionStatus, reason, msg string) corev1.NodeCondition {
		c := corev1.NodeCondition{Type: t, Status: status, Reason: reason, Message: msg, LastHeartbeatTime: now, LastTransitionTime: now}
		for _, old := range cur.Status.Conditions {
			if old.Type == t && old.Status == status {
				c.LastTransitionTime = old.LastTransitionTime
			}
		}
		return c
	}
	readyStatus := corev1.ConditionFalse
	if ready {
		readyStatus = corev1.ConditionTrue
	}
	memCond := cond(corev1.NodeMemoryPressure, corev1.ConditionFalse, "KubeletHasSufficientMemory", "kubelet has sufficient memory available")
	if memPressure {
		memCond = cond(corev1.NodeMemoryPressure, corev1.ConditionTrue, "KubeletHasInsufficientMemory", "kubelet has insufficient memory available")
	}
	diskCond := cond(corev1.NodeDiskPressure, corev1.ConditionFalse, "KubeletHasNoDiskPressure", "kubelet has no disk pressure")
	if diskPressure {
		diskCond = cond(corev1.NodeDiskPressure, corev1.ConditionTrue, "KubeletHasDiskPressure", "kubelet has disk pressure")
	}
	st.Conditions = []corev1.NodeCondition{
		memCond,
		diskCond,
		cond(corev1.NodePIDPressure, corev1.ConditionFalse, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
		cond(corev1.NodeReady, readyStatus, reason, msg),
	}
	// Conditions others set (NetworkUnavailable, …) are kept.
	for _, c := range cur.Status.Conditions {
		switch c.Type {
		case corev1.NodeMemoryPressure, corev1.NodeDiskPressure, corev1.NodePIDPressure, corev1.NodeReady:
		default:
			st.Conditions = append(st.Conditions, c)
		}
	}
	return st
}

// withoutHeartbeats drops what changes on every post, to tell whether the
// status changed.
func withoutHeartbeats(st corev1.NodeStatus) corev1.NodeStatus {
	st = *st.DeepCopy()
	for i := range st.Conditions {
		st.Conditions[i].LastHeartbeatTime = metav1.Time{}
		st.Conditions[i].LastTransitionTime = metav1.NewTime(st.Conditions[i].LastTransitionTime.Truncate(time.Second).UTC())
	}
	return st
}

// nodeInfo is the node's system info; version is the runtime's answer to
// Version, nil when it did not answer.
func nodeInfo(r Registration, version *runtimeapi.VersionResponse) corev1.NodeSystemInfo {
	info := corev1.NodeSystemInfo{
		MachineID:       readTrimmed("/etc/machine-id"),
		BootID:          readTrimmed("/proc/sys/kernel/random/boot_id"),
		KernelVersion:   readTrimmed("/proc/sys/kernel/osrelease"),
		OSImage:         osImage(),
		OperatingSystem: goruntime.GOOS,
		Architecture:    goruntime.GOARCH,
		KubeletVersion:  r.KubeletVersion,
	}
	if v := version; v != nil {
		info.ContainerRuntimeVersion = v.RuntimeName + "://" + v.RuntimeVersion
	}
	return info
}

func readTrimmed(path string) string {
	b, _ := os.ReadFile(path)
	return strings.TrimSpace(string(b))
}

// osImage is the PRETTY_NAME of /etc/os-release.
func osImage() string {
	b, _ := os.ReadFile("/etc/os-release")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
			if u, err := strconv.Unquote(v); err == nil {
				return u
			}
			return v
		}
	}
	return "Linux"
}

// machineCapacity is the machine's CPU, memory and the ephemeral storage
// of the filesystem that holds dir: the node's capacity and allocatable
// (nothing is reserved), and the limits of a container that sets none.
func machineCapacity(dir string) corev1.ResourceList {
	c := corev1.ResourceList{
		corev1.ResourceCPU:    *resource.NewQuantity(int64(goruntime.NumCPU()), resource.DecimalSI),
		corev1.ResourceMemory: *resource.NewQuantity(memInfo("MemTotal:"), resource.BinarySI),
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil {
		c[corev1.ResourceEphemeralStorage] = *resource.NewQuantity(int64(fs.Blocks)*fs.Bsize, resource.BinarySI)
	}
	return c
}

// The kubelet's default hard eviction thresholds: below them the node
// reports memory or disk pressure (it does not evict pods for it).
const (
	memoryAvailableMin = 100 << 20
	// nodefs.available and nodefs.inodesFree, in percent of the data
	// dir's filesystem.
	nodefsAvailableMin  = 10
	nodefsInodesFreeMin = 5
)

// diskPressed reports whether a filesystem is below the kubelet's nodefs
// thresholds.
func diskPressed(fs syscall.Statfs_t) bool {
	return fs.Blocks > 0 && fs.Bavail*100 < fs.Blocks*nodefsAvailableMin ||
		fs.Files > 0 && fs.Ffree*100 < fs.Files*nodefsInodesFreeMin
}

// memInfo is a field of /proc/meminfo in bytes (0 when it has none).
func memInfo(field string) int64 {
	b, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
