package node

import (
	"context"
	"errors"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// minGraceAfterPreStop is what a container is left of its grace period
// after its preStop hook, however long the hook took (the kubelet's
// minimum grace period).
const minGraceAfterPreStop = 2 * time.Second

// runHook runs a container's lifecycle handler as the kubelet does: exec
// in the container, an HTTP GET (to the pod's IP unless it names a host),
// or a sleep. timeout bounds it; zero means it runs until ctx ends.
func (k *Kubelet) runHook(ctx context.Context, pod *corev1.Pod, containerID string, h *corev1.LifecycleHandler, timeout time.Duration) error {
	switch {
	case h.Sleep != nil:
		t := time.NewTimer(time.Duration(h.Sleep.Seconds) * time.Second)
		defer t.Stop()
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
			return nil
		}
	case h.Exec != nil || h.HTTPGet != nil:
		// A hook that could not run has failed.
		return k.probe(ctx, pod, containerID, &corev1.Probe{ProbeHandler: corev1.ProbeHandler{Exec: h.Exec, HTTPGet: h.HTTPGet}}, timeout)
	default:
		return errors.New("the handler has no action the kubelet runs (tcpSocket is not supported in lifecycle hooks)")
	}
}

// postStart runs the container's postStart hook, if it has one, once the
// container has started; the container's next containers wait for it.
// A failed hook kills the container, whose restart policy then decides.
func (k *Kubelet) postStart(ctx context.Context, pod *corev1.Pod, c *corev1.Container, containerID string) (waitingReason, error) {
	if c.Lifecycle == nil || c.Lifecycle.PostStart == nil {
		return waitingReason{}, nil
	}
	err := k.runHook(ctx, pod, containerID, c.Lifecycle.PostStart, 0)
	if err == nil {
		return waitingReason{}, nil
	}
	msg := fmt.Sprintf("PostStartHook failed: %v", err)
	k.cfg.Recorder.Event(pod, corev1.EventTypeWarning, "FailedPostStartHook", msg)
	k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "FailedPostStartHook: stopping container %s", c.Name)
	if _, stopErr := k.cfg.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: containerID, Timeout: gracePeriod(pod)}); stopErr != nil {
		return waitingReason{}, fmt.Errorf("stop container %s after its postStart hook failed: %w", c.Name, stopErr)
	}
	return waitingReason{Reason: "PostStartHookError", Message: msg}, errors.New(msg)
}

// preStop runs the preStop hook of the running container c, if its spec
// has one, within grace seconds, and returns what is left of them. With
// no grace (a forced deletion) there is no hook, as on the kubelet.
func (k *Kubelet) preStop(ctx context.Context, pod *corev1.Pod, c *runtimeapi.ContainerStatus, grace int64) int64 {
	spec := containerNamed(pod, c.Metadata.Name)
	if grace <= 0 || spec == nil || spec.Lifecycle == nil || spec.Lifecycle.PreStop == nil || c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
		return grace
	}
	start := time.Now()
	if err := k.runHook(ctx, pod, c.Id, spec.Lifecycle.PreStop, time.Duration(grace)*time.Second); err != nil {
		k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedPreStopHook", "PreStopHook failed: %v", err)
	}
	left := time.Duration(grace)*time.Second - time.Since(start)
	return int64(max(left, minGraceAfterPreStop) / time.Second)
}
