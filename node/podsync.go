package node

import (
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The labels and annotations the kubelet puts on what it makes in the
// runtime (Kubernetes' own names, which containerd also reads): a restarted
// agent finds its pods again by them.
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"
	// labelManagedBy marks what this kubelet made, among what other
	// clients of the same runtime made.
	labelManagedBy = "io.pontoon.managed-by"
	managedBy      = "pontoon-kubelet"

	annotationImage         = "io.pontoon.container.image"
	annotationInit          = "io.pontoon.container.init"
	annotationTermMsgPath   = "io.kubernetes.container.terminationMessagePath"
	annotationTermMsgPolicy = "io.pontoon.container.terminationMessagePolicy"
)

// observed is what the runtime holds for one pod, as of one relist.
type observed struct {
	// sandboxes, newest first.
	sandboxes []*runtimeapi.PodSandbox
	// sandbox is the status of the newest sandbox, nil when there is none.
	sandbox *runtimeapi.PodSandboxStatus
	// containers are the statuses of the containers of the newest sandbox,
	// newest attempt first for each name.
	containers []*runtimeapi.ContainerStatus
}

// latest returns the newest attempt of the container named name, and the
// one before it.
func (o *observed) latest(name string) (cur, prev *runtimeapi.ContainerStatus) {
	for _, c := range o.containers {
		if c.Metadata.Name != name {
			continue
		}
		if cur == nil {
			cur = c
		} else if prev == nil {
			prev = c
		}
	}
	return cur, prev
}

// sandboxReady reports whether the newest sandbox is ready.
func (o *observed) sandboxReady() bool {
	return o.sandbox != nil && o.sandbox.State == runtimeapi.PodSandboxState_SANDBOX_READY
}

// sortObserved puts sandboxes and containers newest first.
func sortObserved(o *observed) {
	sort.SliceStable(o.sandboxes, func(i, j int) bool { return o.sandboxes[i].CreatedAt > o.sandboxes[j].CreatedAt })
	sort.SliceStable(o.containers, func(i, j int) bool {
		a, b := o.containers[i], o.containers[j]
		if a.Metadata.Name != b.Metadata.Name {
			return a.Metadata.Name < b.Metadata.Name
		}
		return a.Metadata.Attempt > b.Metadata.Attempt
	})
}

// containerStart is a container to create and start.
type containerStart struct {
	container *corev1.Container
	init      bool
	attempt   uint32
	// target is the running container whose process namespace an
	// ephemeral container joins (its targetContainerName).
	target string
}

// actions is what one sync of a pod does, in this order: kill what runs
// (the whole pod, or some containers), make a new sandbox, start
// containers.
type actions struct {
	// killPod stops every container and the sandbox.
	killPod bool
	// createSandbox makes a new sandbox; its attempt follows the newest.
	createSandbox  bool
	sandboxAttempt uint32
	// kill are running containers to stop (their spec changed).
	kill []*runtimeapi.ContainerStatus
	// start are the containers to create and start now.
	start []containerStart
	// backingOff are containers that should restart but wait for their
	// back-off, by name.
	backingOff map[string]bool
	// initFailed is set when an init container failed and the pod may
	// not restart it: the pod has failed.
	initFailed bool
}

// backoffFunc reports whether the container named name of the pod, which
// exited at finishedAt, must still wait before it restarts.
type backoffFunc func(name string, finishedAt time.Time) bool

// computeActions decides what a sync does to bring the runtime to the
// pod's spec, as the kubelet's computePodActions does: a pod without a
// ready sandbox gets a new one (and everything of the old is killed), init
// containers run one at a time in order until each has succeeded, then
// every container runs, restarted by the pod's restart policy once its
// back-off has passed. A pod being deleted, or finished, is only killed.
func computeActions(pod *corev1.Pod, o *observed, inBackoff backoffFunc) actions {
	var a actions
	if pod.DeletionTimestamp != nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		a.killPod = anythingRunning(o)
		return a
	}
	if !o.sandboxReady() {
		// The first sandbox, or one that died (the machine rebooted, its
		// pause process was killed): everything starts again in a new one,
		// except a pod that ran to completion.
		if o.sandbox != nil && pod.Spec.RestartPolicy != corev1.RestartPolicyAlways && allRegularExited(pod, o) {
			a.killPod = anythingRunning(o)
			return a
		}
		a.killPod = anythingRunning(o)
		a.createSandbox = true
		if len(o.sandboxes) > 0 {
			a.sandboxAttempt = o.sandboxes[0].Metadata.Attempt + 1
		}
		// In the new sandbox, the first init container or every container.
		fresh := &observed{}
		b := computeContainers(pod, fresh, inBackoff)
		a.start, a.initFailed = b.start, b.initFailed
		// Attempts go on from the old sandbox's, so restart counts do.
		for i := range a.start {
			if cur, _ := o.latest(a.start[i].container.Name); cur != nil {
				a.start[i].attempt = cur.Metadata.Attempt + 1
			}
		}
		return a
	}
	b := computeContainers(pod, o, inBackoff)
	b.killPod = false
	// Ephemeral containers start once, even while the pod initializes,
	// and are never restarted.
	for i, c := range ephemeralContainers(pod) {
		if cur, _ := o.latest(c.Name); cur != nil {
			continue
		}
		s := containerStart{container: c}
		if t, _ := o.latest(pod.Spec.EphemeralContainers[i].TargetContainerName); t != nil && t.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			s.target = t.Id
		}
		b.start = append(b.start, s)
	}
	return b
}

// ephemeralContainers are the pod's ephemeral containers as containers
// (the kubelet runs them as such, in the pod's sandbox).
func ephemeralContainers(pod *corev1.Pod) []*corev1.Container {
	out := make([]*corev1.Container, len(pod.Spec.EphemeralContainers))
	for i := range pod.Spec.EphemeralContainers {
		out[i] = (*corev1.Container)(&pod.Spec.EphemeralContainers[i].EphemeralContainerCommon)
	}
	return out
}

// computeContainers decides which containers of a pod with a ready
// sandbox start or stop.
func computeContainers(pod *corev1.Pod, o *observed, inBackoff backoffFunc) actions {
	a := actions{backingOff: map[string]bool{}}
	// Init containers, in order: the first that has not succeeded is the
	// one to run (restartable ones, sidecars, run on and let the next
	// start once they have started).
	for i := range pod.Spec.InitContainers {
		c := &pod.Spec.InitContainers[i]
		cur, _ := o.latest(c.Name)
		sidecar := c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		switch {
		case cur == nil:
			a.start = append(a.start, containerStart{container: c, init: true})
			if !sidecar {
				return a
			}
			continue
		case cur.State == runtimeapi.ContainerState_CONTAINER_RUNNING:
			if imageChanged(c, cur) {
				a.kill = append(a.kill, cur)
			}
			if sidecar {
				continue
			}
			return a
		case cur.State == runtimeapi.ContainerState_CONTAINER_EXITED && cur.ExitCode == 0 && !sidecar:
			continue
		}
		// Created but not started, unknown, or exited: restart it if the
		// policy allows (an init container restarts unless the pod's policy
		// is Never; a sidecar always does).
		if !sidecar && pod.Spec.RestartPolicy == corev1.RestartPolicyNever {
			a.initFailed = true
			return a
		}
		if inBackoff(c.Name, time.Unix(0, cur.FinishedAt)) {
			a.backingOff[c.Name] = true
		} else {
			a.start = append(a.start, containerStart{container: c, init: true, attempt: cur.Metadata.Attempt + 1})
		}
		if !sidecar {
			return a
		}
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		cur, _ := o.latest(c.Name)
		if cur == nil {
			a.start = append(a.start, containerStart{container: c})
			continue
		}
		if cur.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			if imageChanged(c, cur) {
				a.kill = append(a.kill, cur)
			}
			continue
		}
		if !shouldRestart(pod.Spec.RestartPolicy, cur) {
			continue
		}
		if inBackoff(c.Name, time.Unix(0, cur.FinishedAt)) {
			a.backingOff[c.Name] = true
			continue
		}
		a.start = append(a.start, containerStart{container: c, attempt: cur.Metadata.Attempt + 1})
	}
	return a
}

// shouldRestart reports whether a container that is not running starts
// again under the pod's restart policy.
func shouldRestart(policy corev1.RestartPolicy, c *runtimeapi.ContainerStatus) bool {
	if c.State != runtimeapi.ContainerState_CONTAINER_EXITED {
		return true // created and never started, or unknown
	}
	switch policy {
	case corev1.RestartPolicyNever:
		return false
	case corev1.RestartPolicyOnFailure:
		return c.ExitCode != 0
	}
	return true
}

// imageChanged reports whether a container's image was changed in the
// spec (the one field of a pod's containers that may change) since the
// running container was made from it.
func imageChanged(c *corev1.Container, cur *runtimeapi.ContainerStatus) bool {
	return cur.Annotations[annotationImage] != "" && cur.Annotations[annotationImage] != c.Image
}

func anythingRunning(o *observed) bool {
	for _, c := range o.containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING || c.State == runtimeapi.ContainerState_CONTAINER_CREATED {
			return true
		}
	}
	for _, s := range o.sandboxes {
		if s.State == runtimeapi.PodSandboxState_SANDBOX_READY {
			return true
		}
	}
	return false
}

// allRegularExited reports whether every container of the pod ran and
// exited.
func allRegularExited(pod *corev1.Pod, o *observed) bool {
	for i := range pod.Spec.Containers {
		cur, _ := o.latest(pod.Spec.Containers[i].Name)
		if cur == nil || cur.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			return false
		}
	}
	return true
}
