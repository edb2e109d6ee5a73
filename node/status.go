package node

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// waitingReason is why a container that is not running waits, as the
// kubelet says it (ContainerCreating, ErrImagePull, ImagePullBackOff,
// CrashLoopBackOff, CreateContainerError…).
type waitingReason struct {
	Reason, Message string
}

// statusInput is what a pod's status is computed from.
type statusInput struct {
	pod      *corev1.Pod
	observed *observed
	// waiting holds the reason each container that is not running waits,
	// from the last sync, by name.
	waiting map[string]waitingReason
	// initFailed: an init container failed and may not restart.
	initFailed bool
	hostIPs    []string
	// runtime is the runtime's name, the scheme of container IDs.
	runtime string
	// probes returns a container's probe result, if it has one yet (nil:
	// none has).
	probes func(containerID string, kind probeKind) (probeResult, bool)
	// messages are the termination messages of exited containers, by ID.
	messages map[string]string
	now      time.Time
}

// computeStatus returns the pod's status as the kubelet would post it
// (generatePodStatus): phase, conditions, container statuses, IPs. What
// the kubelet does not own (conditions others set, the QoS class,
// nominated node) is kept from the pod's current status.
func computeStatus(in statusInput) corev1.PodStatus {
	pod := in.pod
	old := pod.Status
	st := corev1.PodStatus{
		QOSClass:          old.QOSClass,
		NominatedNodeName: old.NominatedNodeName,
		StartTime:         old.StartTime,
		Reason:            old.Reason,
		Message:           old.Message,
	}
	now := metav1.NewTime(in.now)
	if st.StartTime == nil {
		st.StartTime = &now
	}
	for _, ip := range in.hostIPs {
		st.HostIPs = append(st.HostIPs, corev1.HostIP{IP: ip})
	}
	if len(in.hostIPs) > 0 {
		st.HostIP = in.hostIPs[0]
	}
	if sb := in.observed.sandbox; sb != nil && sb.State == runtimeapi.PodSandboxState_SANDBOX_READY {
		if pod.Spec.HostNetwork {
			for _, ip := range in.hostIPs {
				st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip})
			}
		} else if sb.Network != nil && sb.Network.Ip != "" {
			st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: sb.Network.Ip})
			for _, ip := range sb.Network.AdditionalIps {
				st.PodIPs = append(st.PodIPs, corev1.PodIP{IP: ip.Ip})
			}
		}
	} else if old.PodIP != "" && isTerminal(old.Phase) {
		st.PodIPs = old.PodIPs
	}
	if len(st.PodIPs) > 0 {
		st.PodIP = st.PodIPs[0].IP
	}

	st.InitContainerStatuses = containerStatuses(pod.Spec.InitContainers, old.InitContainerStatuses, in)
	st.ContainerStatuses = containerStatuses(pod.Spec.Containers, old.ContainerStatuses, in)
	var ephemeral []corev1.Container
	for _, c := range ephemeralContainers(pod) {
		ephemeral = append(ephemeral, *c)
	}
	st.EphemeralContainerStatuses = containerStatuses(ephemeral, old.EphemeralContainerStatuses, in)
	for i := range st.EphemeralContainerStatuses {
		// Nothing waits on an ephemeral container: it is never ready.
		st.EphemeralContainerStatuses[i].Ready = false
	}

	initialized := !in.initFailed && initDone(pod, in.observed)
	st.Phase = phase(pod, st, initialized, in.initFailed)
	if isTerminal(old.Phase) {
		// A finished pod stays finished.
		st.Phase = old.Phase
	}

	ready := st.Phase == corev1.PodRunning && allReady(st.ContainerStatuses) && len(st.ContainerStatuses) > 0
	containersReady := ready
	var gateMessages []string
	for _, g := range pod.Spec.ReadinessGates {
		switch c := findCondition(old.Conditions, g.ConditionType); {
		case c == nil:
			gateMessages = append(gateMessages, fmt.Sprintf("corresponding condition of pod readiness gate %q does not exist.", g.ConditionType))
		case c.Status != corev1.ConditionTrue:
			gateMessages = append(gateMessages, fmt.Sprintf("the status of pod readiness gate %q is not \"True\", but %v", g.ConditionType, c.Status))
		}
	}
	ready = ready && len(gateMessages) == 0
	sandboxReady := in.observed.sandboxReady()
	kubeletConds := map[corev1.PodConditionType]bool{}
	set := func(t corev1.PodConditionType, ok bool, reason, message string) {
		kubeletConds[t] = true
		status := corev1.ConditionFalse
		if ok {
			status = corev1.ConditionTrue
			reason, message = "", ""
		}
		c := corev1.PodCondition{Type: t, Status: status, Reason: reason, Message: message, LastTransitionTime: now}
		if prev := findCondition(old.Conditions, t); prev != nil && prev.Status == status {
			c.LastTransitionTime = prev.LastTransitionTime
			c.LastProbeTime = prev.LastProbeTime
		}
		st.Conditions = append(st.Conditions, c)
	}
	// The kubelet's conditions come in its order, after the ones it does
	// not own (PodScheduled first, as on Kubernetes).
	for _, c := range old.Conditions {
		switch c.Type {
		case corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady:
		default:
			st.Conditions = append(st.Conditions, c)
		}
	}
	// Reasons and messages as the kubelet's condition generators write
	// them.
	set(corev1.PodReadyToStartContainers, sandboxReady, "", "")
	var incomplete []string
	for _, c := range pod.Spec.InitContainers {
		if cs := findStatus(st.InitContainerStatuses, c.Name); cs == nil || !initSucceeded(&c, cs) {
			incomplete = append(incomplete, c.Name)
		}
	}
	set(corev1.PodInitialized, initialized || isTerminal(st.Phase) && initDone(pod, in.observed),
		"ContainersNotInitialized", fmt.Sprintf("containers with incomplete status: %s", incomplete))
	var unready []string
	for _, cs := range st.ContainerStatuses {
		if !cs.Ready {
			unready = append(unready, cs.Name)
		}
	}
	notReady, notReadyMsg := "ContainersNotReady", fmt.Sprintf("containers with unready status: %s", unready)
	if st.Phase == corev1.PodSucceeded {
		notReady, notReadyMsg = "PodCompleted", ""
	}
	set(corev1.ContainersReady, containersReady, notReady, notReadyMsg)
	if containersReady && !ready {
		notReady, notReadyMsg = "ReadinessGatesNotReady", strings.Join(gateMessages, ", ")
	}
	set(corev1.PodReady, ready, notReady, notReadyMsg)
	return st
}

// initSucceeded reports whether an init container has done its part: it
// exited 0, or, a sidecar, it has started.
func initSucceeded(c *corev1.Container, cs *corev1.ContainerStatus) bool {
	if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
		return cs.Started != nil && *cs.Started
	}
	return cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0
}

func isTerminal(p corev1.PodPhase) bool {
	return p == corev1.PodSucceeded || p == corev1.PodFailed
}

// initDone reports whether every init container has succeeded (or, for a
// sidecar, started).
func initDone(pod *corev1.Pod, o *observed) bool {
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cur, _ := o.latest(c.Name)
		if cur == nil {
			return false
		}
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			if cur.StartedAt == 0 {
				return false
			}
			continue
		}
		if cur.State != runtimeapi.ContainerState_CONTAINER_EXITED || cur.ExitCode != 0 {
			return false
		}
	}
	return true
}

// phase is the pod's phase from its containers' statuses, as the
// kubelet's getPhase decides it.
func phase(pod *corev1.Pod, st corev1.PodStatus, initialized, initFailed bool) corev1.PodPhase {
	if initFailed {
		return corev1.PodFailed
	}
	if !initialized {
		return corev1.PodPending
	}
	var running, waiting, stopped, succeeded, unknown int
	for _, cs := range st.ContainerStatuses {
		switch {
		case cs.State.Running != nil:
			running++
		case cs.State.Terminated != nil:
			stopped++
			if cs.State.Terminated.ExitCode == 0 {
				succeeded++
			}
		case cs.State.Waiting != nil && cs.LastTerminationState.Terminated != nil:
			stopped++
		case cs.State.Waiting != nil:
			waiting++
		default:
			unknown++
		}
	}
	switch {
	case waiting > 0:
		return corev1.PodPending
	case running > 0 && unknown == 0:
		return corev1.PodRunning
	case running == 0 && stopped > 0 && unknown == 0:
		switch {
		case pod.Spec.RestartPolicy == corev1.RestartPolicyAlways:
			return corev1.PodRunning
		case stopped == succeeded:
			return corev1.PodSucceeded
		case pod.Spec.RestartPolicy == corev1.RestartPolicyNever:
			return corev1.PodFailed
		}
		return corev1.PodRunning
	}
	return corev1.PodPending
}

// containerStatuses returns the statuses of specs, from their newest
// attempt (state) and the one before it (lastState).
func containerStatuses(specs []corev1.Container, old []corev1.ContainerStatus, in statusInput) []corev1.ContainerStatus {
	if len(specs) == 0 {
		return nil
	}
	out := make([]corev1.ContainerStatus, 0, len(specs))
	for i := range specs {
		c := &specs[i]
		cur, prev := in.observed.latest(c.Name)
		cs := corev1.ContainerStatus{Name: c.Name, Image: c.Image}
		if cur == nil {
			w := in.waiting[c.Name]
			if w.Reason == "" {
				// As the kubelet's default waiting state: every container
				// of a pod with init containers is PodInitializing.
				w.Reason = "ContainerCreating"
				if len(in.pod.Spec.InitContainers) > 0 {
					w.Reason = "PodInitializing"
				}
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
			// Keep what was known of an earlier run (a new sandbox after a
			// reboot starts the count again from the API's figure).
			if o := findStatus(old, c.Name); o != nil {
				cs.RestartCount = o.RestartCount
				cs.LastTerminationState = o.LastTerminationState
			}
			out = append(out, cs)
			continue
		}
		cs.ContainerID = in.runtime + "://" + cur.Id
		cs.ImageID = cur.ImageRef
		cs.RestartCount = int32(cur.Metadata.Attempt)
		started := false
		switch cur.State {
		case runtimeapi.ContainerState_CONTAINER_RUNNING:
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(time.Unix(0, cur.StartedAt))}
			// Started once its startup probe succeeded, ready once its
			// readiness probe did (at once for a probe it does not have).
			probeOK := func(p *corev1.Probe, kind probeKind) bool {
				if p == nil {
					return true
				}
				if in.probes == nil {
					return false
				}
				r, ok := in.probes(cur.Id, kind)
				return ok && r.ok
			}
			started = probeOK(c.StartupProbe, startup)
			cs.Ready = started && probeOK(c.ReadinessProbe, readiness)
		case runtimeapi.ContainerState_CONTAINER_EXITED:
			term := terminated(cur, in.runtime, in.messages)
			if w, ok := in.waiting[c.Name]; ok {
				cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
				cs.LastTerminationState.Terminated = term
			} else {
				cs.State.Terminated = term
				// An init container that succeeded counts as ready, as
				// the kubelet reports it.
				cs.Ready = slices.ContainsFunc(in.pod.Spec.InitContainers, func(i corev1.Container) bool { return i.Name == c.Name }) && term.ExitCode == 0
			}
		default:
			w := in.waiting[c.Name]
			if w.Reason == "" {
				w.Reason = "ContainerCreating"
			}
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: w.Reason, Message: w.Message}
		}
		if cs.LastTerminationState.Terminated == nil && prev != nil && prev.State == runtimeapi.ContainerState_CONTAINER_EXITED {
			cs.LastTerminationState.Terminated = terminated(prev, in.runtime, in.messages)
		}
		cs.Started = &started
		out = append(out, cs)
	}
	return out
}

// terminated is the terminated state of an exited container, with the
// reason the kubelet gives: Completed, Error, OOMKilled.
func terminated(c *runtimeapi.ContainerStatus, runtime string, messages map[string]string) *corev1.ContainerStateTerminated {
	reason, message := c.Reason, c.Message
	if m, ok := messages[c.Id]; ok {
		message = m
	}
	switch {
	case reason == "OOMKilled":
	case c.ExitCode == 0:
		reason = "Completed"
	default:
		reason = "Error"
	}
	return &corev1.ContainerStateTerminated{
		ExitCode:    c.ExitCode,
		Reason:      reason,
		Message:     message,
		StartedAt:   metav1.NewTime(time.Unix(0, c.StartedAt)),
		FinishedAt:  metav1.NewTime(time.Unix(0, c.FinishedAt)),
		ContainerID: runtime + "://" + c.Id,
	}
}

func allReady(cs []corev1.ContainerStatus) bool {
	for _, c := range cs {
		if !c.Ready {
			return false
		}
	}
	return true
}

func findCondition(cs []corev1.PodCondition, t corev1.PodConditionType) *corev1.PodCondition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}

func findStatus(cs []corev1.ContainerStatus, name string) *corev1.ContainerStatus {
	for i := range cs {
		if cs[i].Name == name {
			return &cs[i]
		}
	}
	return nil
}
