package node

import (
	"testing"
	"time"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

func TestPodStats(t *testing.T) {
	sb := &runtimeapi.PodSandbox{Id: "sb", Metadata: &runtimeapi.PodSandboxMetadata{Name: "p", Namespace: "ns"}, Labels: map[string]string{labelPodUID: "u"}}
	stat := func(name string, attempt uint32, cpu, mem uint64) *runtimeapi.ContainerStats {
		return &runtimeapi.ContainerStats{
			Attributes: &runtimeapi.ContainerAttributes{Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt}, Labels: map[string]string{labelPodUID: "u"}},
			Cpu:        &runtimeapi.CpuUsage{UsageCoreNanoSeconds: &runtimeapi.UInt64Value{Value: cpu}},
			Memory:     &runtimeapi.MemoryUsage{WorkingSetBytes: &runtimeapi.UInt64Value{Value: mem}},
		}
	}
	pods := podStats([]*runtimeapi.PodSandbox{sb}, []*runtimeapi.ContainerStats{stat("a", 0, 5, 50), stat("a", 1, 7, 70), stat("b", 0, 1, 10)}, time.Now())
	if len(pods) != 1 || pods[0].PodRef.UID != "u" || len(pods[0].Containers) != 2 {
		t.Fatalf("pods: %+v", pods)
	}
	if *pods[0].CPU.UsageCoreNanoSeconds != 8 || *pods[0].Memory.WorkingSetBytes != 80 {
		t.Fatalf("the pod's sums, of the newest attempts: cpu %d, memory %d", *pods[0].CPU.UsageCoreNanoSeconds, *pods[0].Memory.WorkingSetBytes)
	}
}
