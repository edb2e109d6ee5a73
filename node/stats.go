package node

import (
	"encoding/json"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	statsapi "k8s.io/kubelet/pkg/apis/stats/v1alpha1"
)

// serveSummary serves /stats/summary as the kubelet's CRI stats provider
// does: the node's CPU, memory and filesystem from the kernel, and each
// pod's containers from the runtime's ListContainerStats, summed per pod.
func (k *Kubelet) serveSummary(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	managed := map[string]string{labelManagedBy: managedBy}
	sbs, err := k.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: managed,
		State: &runtimeapi.PodSandboxStateValue{State: runtimeapi.PodSandboxState_SANDBOX_READY}}})
	if err != nil {
		http.Error(w, "list pod sandboxes: "+grpcMessage(err), http.StatusInternalServerError)
		return
	}
	cs, err := k.cfg.Runtime.ListContainerStats(ctx, &runtimeapi.ListContainerStatsRequest{Filter: &runtimeapi.ContainerStatsFilter{LabelSelector: managed}})
	if err != nil {
		http.Error(w, "list container stats: "+grpcMessage(err), http.StatusInternalServerError)
		return
	}
	now := time.Now()
	node := nodeStats(k.cfg.NodeName, k.cfg.VolumeDir, now)
	s := statsapi.Summary{Node: node, Pods: podStats(sbs.Items, cs.Stats, now)}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(s)
}

// podStats are the pods' stats from their ready sandboxes and their
// containers' stats (the newest attempt of each container).
func podStats(sbs []*runtimeapi.PodSandbox, stats []*runtimeapi.ContainerStats, now time.Time) []statsapi.PodStats {
	byPod := map[string][]*runtimeapi.ContainerStats{}
	for _, s := range stats {
		byPod[s.GetAttributes().GetLabels()[labelPodUID]] = append(byPod[s.GetAttributes().GetLabels()[labelPodUID]], s)
	}
	out := []statsapi.PodStats{}
	for _, sb := range sbs {
		uid := sb.Labels[labelPodUID]
		p := statsapi.PodStats{
			PodRef:     statsapi.PodReference{Name: sb.Metadata.Name, Namespace: sb.Metadata.Namespace, UID: uid},
			StartTime:  metav1.NewTime(time.Unix(0, sb.CreatedAt)),
			Containers: []statsapi.ContainerStats{},
			CPU:        &statsapi.CPUStats{Time: metav1.NewTime(now), UsageCoreNanoSeconds: new(uint64), UsageNanoCores: new(uint64)},
			Memory:     &statsapi.MemoryStats{Time: metav1.NewTime(now), WorkingSetBytes: new(uint64), UsageBytes: new(uint64)},
		}
		newest := map[string]*runtimeapi.ContainerStats{}
		for _, s := range byPod[uid] {
			name := s.GetAttributes().GetMetadata().GetName()
			if cur, ok := newest[name]; !ok || s.GetAttributes().GetMetadata().GetAttempt() > cur.GetAttributes().GetMetadata().GetAttempt() {
				newest[name] = s
			}
		}
		for name, s := range newest {
			c := statsapi.ContainerStats{Name: name, StartTime: p.StartTime}
			if cpu := s.GetCpu(); cpu != nil {
				c.CPU = &statsapi.CPUStats{Time: metav1.NewTime(time.Unix(0, cpu.Timestamp)),
					UsageCoreNanoSeconds: uint64p(cpu.GetUsageCoreNanoSeconds()), UsageNanoCores: uint64p(cpu.GetUsageNanoCores())}
				*p.CPU.UsageCoreNanoSeconds += cpu.GetUsageCoreNanoSeconds().GetValue()
				*p.CPU.UsageNanoCores += cpu.GetUsageNanoCores().GetValue()
			}
			if mem := s.GetMemory(); mem != nil {
				c.Memory = &statsapi.MemoryStats{Time: metav1.NewTime(time.Unix(0, mem.Timestamp)),
					WorkingSetBytes: uint64p(mem.GetWorkingSetBytes()), UsageBytes: uint64p(mem.GetUsageBytes()),
					RSSBytes: uint64p(mem.GetRssBytes()), AvailableBytes: uint64p(mem.GetAvailableBytes())}
				*p.Memory.WorkingSetBytes += mem.GetWorkingSetBytes().GetValue()
				*p.Memory.UsageBytes += mem.GetUsageBytes().GetValue()
			}
			if fs := s.GetWritableLayer(); fs != nil {
				c.Rootfs = &statsapi.FsStats{Time: metav1.NewTime(time.Unix(0, fs.Timestamp)),
					UsedBytes: uint64p(fs.GetUsedBytes()), InodesUsed: uint64p(fs.GetInodesUsed())}
			}
			p.Containers = append(p.Containers, c)
		}
		out = append(out, p)
	}
	return out
}

// uint64p is a CRI value as the stats API's pointer, nil when unset.
func uint64p(v *runtimeapi.UInt64Value) *uint64 {
	if v == nil {
		return nil
	}
	return &v.Value
}

// nodeStats are the node's CPU and memory from /proc and the filesystem
// that holds dir.
func nodeStats(name, dir string, now time.Time) statsapi.NodeStats {
	t := metav1.NewTime(now)
	n := statsapi.NodeStats{NodeName: name, StartTime: metav1.NewTime(bootTime())}
	if used, ok := cpuUsed(); ok {
		n.CPU = &statsapi.CPUStats{Time: t, UsageCoreNanoSeconds: &used}
	}
	total, avail := uint64(memInfo("MemTotal:")), uint64(memInfo("MemAvailable:"))
	if total > 0 {
		ws := total - avail
		n.Memory = &statsapi.MemoryStats{Time: t, AvailableBytes: &avail, WorkingSetBytes: &ws, UsageBytes: &ws}
	}
	var fs syscall.Statfs_t
	if err := syscall.Statfs(dir, &fs); err == nil {
		capacity, available := fs.Blocks*uint64(fs.Bsize), fs.Bavail*uint64(fs.Bsize)
		used := capacity - fs.Bfree*uint64(fs.Bsize)
		inodes, free := fs.Files, fs.Ffree
		inodesUsed := inodes - free
		n.Fs = &statsapi.FsStats{Time: t, CapacityBytes: &capacity, AvailableBytes: &available, UsedBytes: &used,
			Inodes: &inodes, InodesFree: &free, InodesUsed: &inodesUsed}
		n.Runtime = &statsapi.RuntimeStats{ImageFs: n.Fs}
	}
	return n
}

// cpuUsed is the CPU time the machine has spent not idle, from the cpu
// line of /proc/stat (user, nice, system, irq, softirq, steal).
func cpuUsed() (uint64, bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, false
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, false
	}
	var ticks uint64
	for _, i := range []int{1, 2, 3, 6, 7, 8} {
		v, err := strconv.ParseUint(f[i], 10, 64)
		if err != nil {
			return 0, false
		}
		ticks += v
	}
	// USER_HZ is 100 on Linux.
	return ticks * uint64(10*time.Millisecond), true
}

// bootTime is when the machine booted, from the btime line of /proc/stat.
func bootTime() time.Time {
	b, _ := os.ReadFile("/proc/stat")
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "btime "); ok {
			s, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			return time.Unix(s, 0)
		}
	}
	return time.Time{}
}
