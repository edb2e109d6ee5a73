package node

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

func testPod(policy corev1.RestartPolicy, containers ...string) *corev1.Pod {
	p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "ns", UID: "uid"}, Spec: corev1.PodSpec{RestartPolicy: policy}}
	for _, c := range containers {
		p.Spec.Containers = append(p.Spec.Containers, corev1.Container{Name: c, Image: "img"})
	}
	return p
}

func readySandbox() *observed {
	return &observed{
		sandboxes: []*runtimeapi.PodSandbox{{Id: "sb", Metadata: &runtimeapi.PodSandboxMetadata{}, State: runtimeapi.PodSandboxState_SANDBOX_READY}},
		sandbox:   &runtimeapi.PodSandboxStatus{Id: "sb", State: runtimeapi.PodSandboxState_SANDBOX_READY, Network: &runtimeapi.PodSandboxNetworkStatus{Ip: "10.244.0.5"}},
	}
}

func container(name string, attempt uint32, state runtimeapi.ContainerState, exit int32) *runtimeapi.ContainerStatus {
	c := &runtimeapi.ContainerStatus{Id: name + "-" + string(rune('0'+attempt)), Metadata: &runtimeapi.ContainerMetadata{Name: name, Attempt: attempt},
		State: state, ExitCode: exit, Annotations: map[string]string{annotationImage: "img"}}
	if state != runtimeapi.ContainerState_CONTAINER_CREATED {
		c.StartedAt = time.Unix(100, 0).UnixNano()
	}
	if state == runtimeapi.ContainerState_CONTAINER_EXITED {
		c.FinishedAt = time.Unix(200, 0).UnixNano()
	}
	return c
}

func noBackoff(string, time.Time) bool  { return false }
func backingOff(string, time.Time) bool { return true }

func names(starts []containerStart) []string {
	var out []string
	for _, s := range starts {
		out = append(out, s.container.Name)
	}
	return out
}

func TestComputeActions(t *testing.T) {
	exited := func(exit int32) *observed {
		o := readySandbox()
		o.containers = []*runtimeapi.ContainerStatus{container("a", 0, runtimeapi.ContainerState_CONTAINER_EXITED, exit)}
		return o
	}
	withInit := testPod(corev1.RestartPolicyAlways, "a")
	withInit.Spec.InitContainers = []corev1.Container{{Name: "i1", Image: "img"}, {Name: "i2", Image: "img"}}
	neverInit := withInit.DeepCopy()
	neverInit.Spec.RestartPolicy = corev1.RestartPolicyNever
	deleted := testPod(corev1.RestartPolicyAlways, "a")
	deleted.DeletionTimestamp = &metav1.Time{Time: time.Now()}
	newImage := testPod(corev1.RestartPolicyAlways, "a")
	newImage.Spec.Containers[0].Image = "img2"
	deadSandbox := readySandbox()
	deadSandbox.sandboxes[0].State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	deadSandbox.sandboxes[0].Metadata.Attempt = 2
	deadSandbox.sandbox.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	deadSandbox.containers = []*runtimeapi.ContainerStatus{container("a", 0, runtimeapi.ContainerState_CONTAINER_RUNNING, 0)}
	stopped := exited(0)
	stopped.sandboxes[0].State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	stopped.sandbox.State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	running := readySandbox()
	running.containers = []*runtimeapi.ContainerStatus{container("a", 0, runtimeapi.ContainerState_CONTAINER_RUNNING, 0)}
	initOneDone := readySandbox()
	initOneDone.containers = []*runtimeapi.ContainerStatus{container("i1", 0, runtimeapi.ContainerState_CONTAINER_EXITED, 0)}
	initFailed := readySandbox()
	initFailed.containers = []*runtimeapi.ContainerStatus{container("i1", 0, runtimeapi.ContainerState_CONTAINER_EXITED, 1)}

	for _, tc := range []struct {
		name          string
		pod           *corev1.Pod
		o             *observed
		backoff       backoffFunc
		killPod       bool
		createSandbox bool
		attempt       uint32
		start         []string
		kill          int
		backingOff    bool
		initFailed    bool
	}{
		{name: "new pod", pod: testPod(corev1.RestartPolicyAlways, "a", "b"), o: &observed{}, createSandbox: true, start: []string{"a", "b"}},
		{name: "new pod with init containers starts the first alone", pod: withInit, o: &observed{}, createSandbox: true, start: []string{"i1"}},
		{name: "next init container once one succeeded", pod: withInit, o: initOneDone, start: []string{"i2"}},
		{name: "failed init container restarts", pod: withInit, o: initFailed, start: []string{"i1"}},
		{name: "failed init container with Never fails the pod", pod: neverInit, o: initFailed, initFailed: true},
		{name: "running: nothing to do", pod: testPod(corev1.RestartPolicyAlways, "a"), o: running},
		{name: "Always restarts a success", pod: testPod(corev1.RestartPolicyAlways, "a"), o: exited(0), backoff: noBackoff, start: []string{"a"}},
		{name: "in back-off: waits", pod: testPod(corev1.RestartPolicyAlways, "a"), o: exited(1), backoff: backingOff, backingOff: true},
		{name: "OnFailure leaves a success", pod: testPod(corev1.RestartPolicyOnFailure, "a"), o: exited(0)},
		{name: "OnFailure restarts a failure", pod: testPod(corev1.RestartPolicyOnFailure, "a"), o: exited(1), start: []string{"a"}},
		{name: "Never leaves a failure", pod: testPod(corev1.RestartPolicyNever, "a"), o: exited(1)},
		{name: "deleted: killed", pod: deleted, o: running, killPod: true},
		{name: "deleted, containers stopped: the sandbox is stopped", pod: deleted, o: exited(0), killPod: true},
		{name: "deleted and stopped: nothing", pod: deleted, o: stopped},
		{name: "image changed: container killed", pod: newImage, o: running, kill: 1},
		{name: "sandbox died: a new one", pod: testPod(corev1.RestartPolicyAlways, "a"), o: deadSandbox, killPod: true, createSandbox: true, attempt: 3, start: []string{"a"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.backoff == nil {
				tc.backoff = noBackoff
			}
			a := computeActions(tc.pod, tc.o, tc.backoff)
			if a.killPod != tc.killPod || a.createSandbox != tc.createSandbox || a.sandboxAttempt != tc.attempt || a.initFailed != tc.initFailed {
				t.Errorf("killPod %v createSandbox %v attempt %d initFailed %v", a.killPod, a.createSandbox, a.sandboxAttempt, a.initFailed)
			}
			if got := names(a.start); len(got) != len(tc.start) || (len(got) > 0 && got[0] != tc.start[0]) || (len(got) > 1 && got[1] != tc.start[1]) {
				t.Errorf("start %v, want %v", got, tc.start)
			}
			if len(a.kill) != tc.kill || (len(a.backingOff) > 0) != tc.backingOff {
				t.Errorf("kill %d backingOff %v", len(a.kill), a.backingOff)
			}
			if tc.o != nil && len(tc.o.containers) > 0 && len(a.start) == 1 && a.start[0].container.Name == tc.o.containers[0].Metadata.Name && a.start[0].attempt != tc.o.containers[0].Metadata.Attempt+1 {
				t.Errorf("a restart's attempt is %d", a.start[0].attempt)
			}
		})
	}
}

func TestComputeStatus(t *testing.T) {
	now := time.Unix(1000, 0)
	scheduled := corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue}
	status := func(pod *corev1.Pod, o *observed, waiting map[string]waitingReason) corev1.PodStatus {
		pod.Status.Conditions = []corev1.PodCondition{scheduled}
		return computeStatus(statusInput{pod: pod, observed: o, waiting: waiting, hostIPs: []string{"192.0.2.1"}, runtime: "containerd", now: now})
	}
	cond := func(st corev1.PodStatus, t corev1.PodConditionType) corev1.ConditionStatus {
		if c := findCondition(st.Conditions, t); c != nil {
			return c.Status
		}
		return ""
	}

	st := status(testPod(corev1.RestartPolicyAlways, "a"), &observed{}, nil)
	if st.Phase != corev1.PodPending || st.ContainerStatuses[0].State.Waiting.Reason != "ContainerCreating" || st.PodIP != "" || st.StartTime == nil {
		t.Errorf("a new pod: %+v", st)
	}
	if st.Conditions[0].Type != corev1.PodScheduled || cond(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Errorf("a new pod's conditions: %+v", st.Conditions)
	}
	if rc := findCondition(st.Conditions, corev1.PodReady); rc.Reason != "ContainersNotReady" || rc.Message != "containers with unready status: [a]" {
		t.Errorf("a new pod's Ready condition: %+v", rc)
	}
	initPod := testPod(corev1.RestartPolicyNever, "a")
	initPod.Spec.InitContainers = []corev1.Container{{Name: "i1", Image: "img"}, {Name: "i2", Image: "img"}}
	o0 := readySandbox()
	o0.containers = []*runtimeapi.ContainerStatus{container("i1", 0, runtimeapi.ContainerState_CONTAINER_EXITED, 0)}
	st = status(initPod, o0, nil)
	if c := findCondition(st.Conditions, corev1.PodInitialized); c.Status != corev1.ConditionFalse || c.Reason != "ContainersNotInitialized" ||
		c.Message != "containers with incomplete status: [i2]" || st.InitContainerStatuses[1].State.Waiting.Reason != "PodInitializing" {
		t.Errorf("a pod with its second init container waiting: %+v %+v", c, st.InitContainerStatuses)
	}

	o := readySandbox()
	o.containers = []*runtimeapi.ContainerStatus{container("a", 0, runtimeapi.ContainerState_CONTAINER_RUNNING, 0)}
	st = status(testPod(corev1.RestartPolicyAlways, "a"), o, nil)
	cs := st.ContainerStatuses[0]
	if st.Phase != corev1.PodRunning || st.PodIP != "10.244.0.5" || st.HostIP != "192.0.2.1" || !cs.Ready || cs.State.Running == nil || cs.ContainerID != "containerd://a-0" {
		t.Errorf("a running pod: %+v", st)
	}
	for _, c := range []corev1.PodConditionType{corev1.PodReadyToStartContainers, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		if cond(st, c) != corev1.ConditionTrue {
			t.Errorf("a running pod's %s is %s", c, cond(st, c))
		}
	}

	o = readySandbox()
	o.containers = []*runtimeapi.ContainerStatus{container("a", 2, runtimeapi.ContainerState_CONTAINER_EXITED, 2), container("a", 1, runtimeapi.ContainerState_CONTAINER_EXITED, 2)}
	st = status(testPod(corev1.RestartPolicyAlways, "a"), o, map[string]waitingReason{"a": {Reason: "CrashLoopBackOff", Message: "back-off"}})
	cs = st.ContainerStatuses[0]
	if st.Phase != corev1.PodRunning || cs.RestartCount != 2 || cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" ||
		cs.LastTerminationState.Terminated == nil || cs.LastTerminationState.Terminated.ExitCode != 2 || cs.LastTerminationState.Terminated.Reason != "Error" {
		t.Errorf("a crash-looping pod: %+v", st)
	}

	o = readySandbox()
	o.containers = []*runtimeapi.ContainerStatus{container("a", 0, runtimeapi.ContainerState_CONTAINER_EXITED, 0), container("b", 0, runtimeapi.ContainerState_CONTAINER_EXITED, 1)}
	if st = status(testPod(corev1.RestartPolicyNever, "a", "b"), o, nil); st.Phase != corev1.PodFailed {
		t.Errorf("Never with a failure: %s", st.Phase)
	}
	o.containers[1].ExitCode = 0
	st = status(testPod(corev1.RestartPolicyOnFailure, "a", "b"), o, nil)
	if st.Phase != corev1.PodSucceeded || st.ContainerStatuses[0].State.Terminated.Reason != "Completed" || cond(st, corev1.PodReady) != corev1.ConditionFalse {
		t.Errorf("OnFailure, all succeeded: %+v", st)
	}
	if r := findCondition(st.Conditions, corev1.PodReady).Reason; r != "PodCompleted" {
		t.Errorf("a finished pod's Ready reason: %s", r)
	}

	// A finished pod stays finished, whatever the runtime says later.
	done := testPod(corev1.RestartPolicyNever, "a")
	done.Status.Phase = corev1.PodFailed
	if st = computeStatus(statusInput{pod: done, observed: &observed{}, now: now}); st.Phase != corev1.PodFailed {
		t.Errorf("a failed pod became %s", st.Phase)
	}

	// A readiness probe holds Ready until it succeeded.
	probed := testPod(corev1.RestartPolicyAlways, "a")
	probed.Spec.Containers[0].ReadinessProbe = &corev1.Probe{}
	o = readySandbox()
	o.containers = []*runtimeapi.ContainerStatus{container("a", 0, runtimeapi.ContainerState_CONTAINER_RUNNING, 0)}
	for _, ready := range []bool{false, true} {
		probed.Status = corev1.PodStatus{}
		st = computeStatus(statusInput{pod: probed, observed: o, now: now, probes: func(string, probeKind) (probeResult, bool) {
			return probeResult{ok: ready}, true
		}})
		if st.ContainerStatuses[0].Ready != ready || (cond(st, corev1.PodReady) == corev1.ConditionTrue) != ready || st.Phase != corev1.PodRunning {
			t.Errorf("readiness probe ok=%v: %+v", ready, st)
		}
	}

	withInit := testPod(corev1.RestartPolicyAlways, "a")
	withInit.Spec.InitContainers = []corev1.Container{{Name: "i", Image: "img"}, {Name: "side", Image: "img", RestartPolicy: ptr.To(corev1.ContainerRestartPolicyAlways)}}
	o = readySandbox()
	o.containers = []*runtimeapi.ContainerStatus{container("i", 0, runtimeapi.ContainerState_CONTAINER_RUNNING, 0)}
	st = status(withInit, o, nil)
	if st.Phase != corev1.PodPending || cond(st, corev1.PodInitialized) != corev1.ConditionFalse || st.ContainerStatuses[0].State.Waiting.Reason != "PodInitializing" {
		t.Errorf("a pod initializing: %+v", st)
	}
}

func TestExpand(t *testing.T) {
	vars := map[string]string{"A": "x", "B": "y"}
	for in, want := range map[string]string{
		"plain":        "plain",
		"$(A)-$(B)":    "x-y",
		"$$(A)":        "$(A)",
		"$(C)":         "$(C)",
		"a$b$":         "a$b$",
		"$(A":          "$(A",
		"$(A)$(A)$$$$": "xx$$",
	} {
		if got := expand(in, func(n string) (string, bool) { v, ok := vars[n]; return v, ok }); got != want {
			t.Errorf("expand(%q) = %q, want %q", in, got, want)
		}
	}
}
