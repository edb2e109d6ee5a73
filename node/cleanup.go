package node

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Cleanup stops and removes every sandbox (and so every container) of a
// runtime that is the agent's own, which also releases their network
// allocations through CNI, then removes the pods' cgroups under
// cgroupParent.
func Cleanup(ctx context.Context, rt Runtime, cgroupParent string) (int, error) {
	sbs, err := rt.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{})
	if err != nil {
		return 0, err
	}
	var errs []error
	for _, s := range sbs.Items {
		if _, err := rt.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("stop sandbox of %s/%s: %w", s.Metadata.Namespace, s.Metadata.Name, err))
			continue
		}
		if _, err := rt.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			errs = append(errs, fmt.Errorf("remove sandbox of %s/%s: %w", s.Metadata.Namespace, s.Metadata.Name, err))
		}
	}
	if err := removeCgroup(cgroupParent); err != nil {
		errs = append(errs, fmt.Errorf("cgroups: %w", err))
	}
	// Parents that held only this node's pods go too; one that holds
	// another node's stays (removing a cgroup that is not empty fails).
	for dir := filepath.Dir(cgroupParent); dir != "/" && dir != "."; dir = filepath.Dir(dir) {
		removeEmptyCgroup(dir)
	}
	return len(sbs.Items), errors.Join(errs...)
}
