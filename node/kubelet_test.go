package node

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
	"k8s.io/utils/ptr"
)

// fakeRuntime is a CRI runtime in memory: sandboxes get an address, and
// containers run until the test makes them exit.
type fakeRuntime struct {
	mu         sync.Mutex
	next       int
	images     map[string]bool
	sandboxes  map[string]*runtimeapi.PodSandboxStatus
	containers map[string]*runtimeapi.ContainerStatus
	sandboxOf  map[string]string
	// execExit is the exit code of each command ExecSync knows, by its
	// first word; execs and stops record the calls.
	execExit map[string]int32
	execs    []string
	stops    []int64
	// configs are the configs containers were created with, by name.
	configs map[string]*runtimeapi.ContainerConfig
}

func newFakeRuntime(images ...string) *fakeRuntime {
	f := &fakeRuntime{images: map[string]bool{}, sandboxes: map[string]*runtimeapi.PodSandboxStatus{},
		containers: map[string]*runtimeapi.ContainerStatus{}, sandboxOf: map[string]string{}, execExit: map[string]int32{},
		configs: map[string]*runtimeapi.ContainerConfig{}}
	for _, i := range images {
		f.images[i] = true
	}
	return f
}

func (f *fakeRuntime) id(prefix string) string {
	f.next++
	return fmt.Sprintf("%s%d", prefix, f.next)
}

func matches(labels, selector map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func (f *fakeRuntime) RunPodSandbox(_ context.Context, in *runtimeapi.RunPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.RunPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.id("sb")
	f.sandboxes[id] = &runtimeapi.PodSandboxStatus{Id: id, Metadata: in.Config.Metadata, State: runtimeapi.PodSandboxState_SANDBOX_READY,
		CreatedAt: time.Now().UnixNano() + int64(f.next), Labels: in.Config.Labels, Network: &runtimeapi.PodSandboxNetworkStatus{Ip: "10.244.0." + fmt.Sprint(f.next)}}
	return &runtimeapi.RunPodSandboxResponse{PodSandboxId: id}, nil
}

func (f *fakeRuntime) StopPodSandbox(_ context.Context, in *runtimeapi.StopPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.StopPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.sandboxes[in.PodSandboxId].State = runtimeapi.PodSandboxState_SANDBOX_NOTREADY
	for id, c := range f.containers {
		if f.sandboxOf[id] == in.PodSandboxId && c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			c.State, c.ExitCode, c.FinishedAt = runtimeapi.ContainerState_CONTAINER_EXITED, 137, time.Now().UnixNano()
		}
	}
	return &runtimeapi.StopPodSandboxResponse{}, nil
}

func (f *fakeRuntime) RemovePodSandbox(_ context.Context, in *runtimeapi.RemovePodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.RemovePodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.sandboxes, in.PodSandboxId)
	for id := range f.containers {
		if f.sandboxOf[id] == in.PodSandboxId {
			delete(f.containers, id)
		}
	}
	return &runtimeapi.RemovePodSandboxResponse{}, nil
}

func (f *fakeRuntime) PodSandboxStatus(_ context.Context, in *runtimeapi.PodSandboxStatusRequest, _ ...grpc.CallOption) (*runtimeapi.PodSandboxStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s, ok := f.sandboxes[in.PodSandboxId]
	if !ok {
		return nil, errors.New("no such sandbox")
	}
	return &runtimeapi.PodSandboxStatusResponse{Status: s}, nil
}

func (f *fakeRuntime) ListPodSandbox(_ context.Context, in *runtimeapi.ListPodSandboxRequest, _ ...grpc.CallOption) (*runtimeapi.ListPodSandboxResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &runtimeapi.ListPodSandboxResponse{}
	for _, s := range f.sandboxes {
		if matches(s.Labels, in.Filter.GetLabelSelector()) {
			out.Items = append(out.Items, &runtimeapi.PodSandbox{Id: s.Id, Metadata: s.Metadata, State: s.State, CreatedAt: s.CreatedAt, Labels: s.Labels})
		}
	}
	return out, nil
}

func (f *fakeRuntime) CreateContainer(_ context.Context, in *runtimeapi.CreateContainerRequest, _ ...grpc.CallOption) (*runtimeapi.CreateContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := f.id("c")
	f.containers[id] = &runtimeapi.ContainerStatus{Id: id, Metadata: in.Config.Metadata, State: runtimeapi.ContainerState_CONTAINER_CREATED,
		Labels: in.Config.Labels, Annotations: in.Config.Annotations, Image: in.Config.Image}
	f.sandboxOf[id] = in.PodSandboxId
	f.configs[in.Config.Metadata.Name] = in.Config
	return &runtimeapi.CreateContainerResponse{ContainerId: id}, nil
}

func (f *fakeRuntime) StartContainer(_ context.Context, in *runtimeapi.StartContainerRequest, _ ...grpc.CallOption) (*runtimeapi.StartContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.containers[in.ContainerId]
	c.State, c.StartedAt = runtimeapi.ContainerState_CONTAINER_RUNNING, time.Now().UnixNano()
	return &runtimeapi.StartContainerResponse{}, nil
}

func (f *fakeRuntime) StopContainer(_ context.Context, in *runtimeapi.StopContainerRequest, _ ...grpc.CallOption) (*runtimeapi.StopContainerResponse, error) {
	f.mu.Lock()
	f.stops = append(f.stops, in.Timeout)
	f.mu.Unlock()
	f.exit(in.ContainerId, 143)
	return &runtimeapi.StopContainerResponse{}, nil
}

// exit makes a running container exit with code.
func (f *fakeRuntime) exit(id string, code int32) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c := f.containers[id]; c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
		c.State, c.ExitCode, c.FinishedAt = runtimeapi.ContainerState_CONTAINER_EXITED, code, time.Now().UnixNano()
	}
}

func (f *fakeRuntime) RemoveContainer(_ context.Context, in *runtimeapi.RemoveContainerRequest, _ ...grpc.CallOption) (*runtimeapi.RemoveContainerResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.containers, in.ContainerId)
	return &runtimeapi.RemoveContainerResponse{}, nil
}

func (f *fakeRuntime) ListContainers(_ context.Context, in *runtimeapi.ListContainersRequest, _ ...grpc.CallOption) (*runtimeapi.ListContainersResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := &runtimeapi.ListContainersResponse{}
	for id, c := range f.containers {
		if (in.Filter.GetPodSandboxId() == "" || f.sandboxOf[id] == in.Filter.GetPodSandboxId()) && matches(c.Labels, in.Filter.GetLabelSelector()) {
			out.Containers = append(out.Containers, &runtimeapi.Container{Id: id, PodSandboxId: f.sandboxOf[id], Metadata: c.Metadata, State: c.State, Labels: c.Labels})
		}
	}
	return out, nil
}

func (f *fakeRuntime) ContainerStatus(_ context.Context, in *runtimeapi.ContainerStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ContainerStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[in.ContainerId]
	if !ok {
		return nil, errors.New("no such container")
	}
	cp := *c
	return &runtimeapi.ContainerStatusResponse{Status: &cp}, nil
}

func (f *fakeRuntime) ExecSync(_ context.Context, in *runtimeapi.ExecSyncRequest, _ ...grpc.CallOption) (*runtimeapi.ExecSyncResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	code, ok := f.execExit[in.Cmd[0]]
	if !ok {
		return nil, errors.New("not in the fake")
	}
	f.execs = append(f.execs, in.Cmd[0])
	return &runtimeapi.ExecSyncResponse{ExitCode: code}, nil
}

func (f *fakeRuntime) ListContainerStats(context.Context, *runtimeapi.ListContainerStatsRequest, ...grpc.CallOption) (*runtimeapi.ListContainerStatsResponse, error) {
	return &runtimeapi.ListContainerStatsResponse{}, nil
}

func (f *fakeRuntime) Exec(context.Context, *runtimeapi.ExecRequest, ...grpc.CallOption) (*runtimeapi.ExecResponse, error) {
	return nil, errors.New("not in the fake")
}

func (f *fakeRuntime) Attach(context.Context, *runtimeapi.AttachRequest, ...grpc.CallOption) (*runtimeapi.AttachResponse, error) {
	return nil, errors.New("not in the fake")
}

func (f *fakeRuntime) PortForward(context.Context, *runtimeapi.PortForwardRequest, ...grpc.CallOption) (*runtimeapi.PortForwardResponse, error) {
	return nil, errors.New("not in the fake")
}

func (f *fakeRuntime) Version(context.Context, *runtimeapi.VersionRequest, ...grpc.CallOption) (*runtimeapi.VersionResponse, error) {
	return &runtimeapi.VersionResponse{RuntimeName: "fake", RuntimeVersion: "1", RuntimeApiVersion: "v1"}, nil
}

func (f *fakeRuntime) ImageStatus(_ context.Context, in *runtimeapi.ImageStatusRequest, _ ...grpc.CallOption) (*runtimeapi.ImageStatusResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.images[in.Image.Image] {
		return &runtimeapi.ImageStatusResponse{}, nil
	}
	return &runtimeapi.ImageStatusResponse{Image: &runtimeapi.Image{Id: "sha256:" + in.Image.Image}}, nil
}

func (f *fakeRuntime) PullImage(context.Context, *runtimeapi.PullImageRequest, ...grpc.CallOption) (*runtimeapi.PullImageResponse, error) {
	return nil, errors.New("no registry")
}

// running returns the pod's running containers.
func (f *fakeRuntime) running() []*runtimeapi.ContainerStatus {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*runtimeapi.ContainerStatus
	for _, c := range f.containers {
		if c.State == runtimeapi.ContainerState_CONTAINER_RUNNING {
			out = append(out, c)
		}
	}
	return out
}

// testKubelet is a kubelet over a fake runtime and a fake API, synced by
// hand.
func testKubelet(t *testing.T, rt *fakeRuntime, pods ...*corev1.Pod) (*Kubelet, *fake.Clientset) {
	t.Helper()
	var objs []runtime.Object
	for _, p := range pods {
		objs = append(objs, p)
	}
	client := fake.NewClientset(objs...)
	k, err := New(Config{Client: client, Runtime: rt, NodeName: "n", NodeIPs: []string{"192.0.2.1"}, PodLogDir: t.TempDir(), VolumeDir: t.TempDir(),
		CgroupParent: "/pontoon-test", Recorder: record.NewFakeRecorder(1000)})
	if err != nil {
		t.Fatal(err)
	}
	k.runtime = "fake"
	k.pods = cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, p := range pods {
		k.pods.Add(p)
	}
	return k, client
}

func (k *Kubelet) syncTest(t *testing.T, key string) time.Duration {
	t.Helper()
	again, err := k.sync(context.Background(), key)
	if err != nil {
		t.Fatalf("sync %s: %v", key, err)
	}
	return again
}

func apiPod(t *testing.T, client *fake.Clientset) *corev1.Pod {
	t.Helper()
	p, err := client.CoreV1().Pods("ns").Get(context.Background(), "p", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestKubeletRunsRestartsAndDeletes(t *testing.T) {
	rt := newFakeRuntime("img")
	pod := testPod(corev1.RestartPolicyAlways, "a")
	k, client := testKubelet(t, rt, pod)

	k.syncTest(t, "ns/p")
	if n := len(rt.running()); n != 1 {
		t.Fatalf("%d containers running after the first sync", n)
	}
	st := apiPod(t, client).Status
	if st.Phase != corev1.PodRunning || st.PodIP == "" || st.ContainerStatuses[0].ContainerID == "" {
		t.Fatalf("status after the first sync: %+v", st)
	}

	// It exits: restarted at once the first time, then backs off.
	rt.exit(rt.running()[0].Id, 1)
	k.syncTest(t, "ns/p")
	if r := rt.running(); len(r) != 1 || r[0].Metadata.Attempt != 1 {
		t.Fatalf("after the first exit: %v", r)
	}
	rt.exit(rt.running()[0].Id, 1)
	k.pods.Update(apiPod(t, client))
	if again := k.syncTest(t, "ns/p"); again == 0 {
		t.Error("a pod in back-off is not looked at again")
	}
	if len(rt.running()) != 0 {
		t.Fatal("restarted during its back-off")
	}
	cs := apiPod(t, client).Status.ContainerStatuses[0]
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "CrashLoopBackOff" || cs.RestartCount != 1 || cs.LastTerminationState.Terminated.ExitCode != 1 {
		t.Fatalf("in back-off: %+v", cs)
	}

	// Deleted through the API: stopped, then removed, then the object goes.
	cur := apiPod(t, client)
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = &metav1.Time{Time: time.Now()}, new(int64)
	k.pods.Update(cur)
	client.CoreV1().Pods("ns").Update(context.Background(), cur, metav1.UpdateOptions{})
	k.syncTest(t, "ns/p")
	k.syncTest(t, "ns/p")
	if _, err := client.CoreV1().Pods("ns").Get(context.Background(), "p", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the pod object after its deletion finished: %v", err)
	}
	if len(rt.sandboxes) != 0 || len(rt.containers) != 0 {
		t.Fatalf("left in the runtime: %d sandboxes, %d containers", len(rt.sandboxes), len(rt.containers))
	}
}

func TestKubeletImageErrorsAndOrphans(t *testing.T) {
	rt := newFakeRuntime()
	pod := testPod(corev1.RestartPolicyAlways, "a")
	k, client := testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	cs := apiPod(t, client).Status.ContainerStatuses[0]
	if cs.State.Waiting == nil || cs.State.Waiting.Reason != "ErrImagePull" {
		t.Fatalf("a missing image: %+v", cs)
	}
	k.pods.Update(apiPod(t, client))
	k.syncTest(t, "ns/p")
	if cs := apiPod(t, client).Status.ContainerStatuses[0]; cs.State.Waiting.Reason != "ImagePullBackOff" {
		t.Fatalf("a missing image, again: %+v", cs)
	}

	// Gone from the API (a forced deletion): what the runtime holds goes.
	k.pods.Delete(pod)
	k.syncTest(t, "ns/p")
	if len(rt.sandboxes) != 0 {
		t.Fatalf("%d sandboxes left of a pod the API no longer has", len(rt.sandboxes))
	}
}

func TestKubeletLifecycleHooks(t *testing.T) {
	rt := newFakeRuntime("img")
	rt.execExit["post"], rt.execExit["pre"], rt.execExit["fail"] = 0, 0, 1
	pod := testPod(corev1.RestartPolicyAlways, "a")
	pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{
		PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"post"}}},
		PreStop:   &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"pre"}}},
	}
	k, client := testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	if len(rt.running()) != 1 || fmt.Sprint(rt.execs) != "[post]" {
		t.Fatalf("after the first sync: %d running, hooks run %v", len(rt.running()), rt.execs)
	}

	// Deleted with 30 s of grace: preStop, then the stop with what is left.
	cur := apiPod(t, client)
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = &metav1.Time{Time: time.Now()}, ptr.To[int64](30)
	k.pods.Update(cur)
	k.syncTest(t, "ns/p")
	if fmt.Sprint(rt.execs) != "[post pre]" || len(rt.stops) != 1 || rt.stops[0] < 28 || rt.stops[0] > 30 {
		t.Fatalf("deleted: hooks run %v, stops with %v s", rt.execs, rt.stops)
	}

	// A failed postStart hook kills the container, which waits.
	rt = newFakeRuntime("img")
	rt.execExit["fail"] = 1
	pod = testPod(corev1.RestartPolicyAlways, "a")
	pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PostStart: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"fail"}}}}
	k, _ = testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	if len(rt.running()) != 0 || len(rt.stops) != 1 {
		t.Fatalf("a failed postStart hook: %d running, %d stops", len(rt.running()), len(rt.stops))
	}
	events := k.cfg.Recorder.(*record.FakeRecorder).Events
	found := false
	for len(events) > 0 {
		if e := <-events; strings.Contains(e, "FailedPostStartHook") {
			found = true
		}
	}
	if !found {
		t.Fatal("no FailedPostStartHook event")
	}
}

func TestKubeletRunAsNonRoot(t *testing.T) {
	rt := newFakeRuntime("img")
	pod := testPod(corev1.RestartPolicyAlways, "a")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true)}
	k, client := testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	cs := apiPod(t, client).Status.ContainerStatuses[0]
	if len(rt.running()) != 0 || cs.State.Waiting == nil || cs.State.Waiting.Reason != "CreateContainerConfigError" ||
		!strings.Contains(cs.State.Waiting.Message, "image will run as root") {
		t.Fatalf("runAsNonRoot with an image that runs as root: %d running, %+v", len(rt.running()), cs.State)
	}

	rt = newFakeRuntime("img")
	pod.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{RunAsUser: ptr.To[int64](1000)}
	k, _ = testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	if len(rt.running()) != 1 {
		t.Fatal("runAsNonRoot with runAsUser 1000 does not run")
	}
}

func TestKubeletUpdatesVolumes(t *testing.T) {
	rt := newFakeRuntime("img")
	pod := testPod(corev1.RestartPolicyAlways, "a")
	pod.Spec.Volumes = []corev1.Volume{{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: "cm"}}}}}
	pod.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{{Name: "cfg", MountPath: "/cfg"}}
	k, client := testKubelet(t, rt, pod)
	// The fake's watch misses what changes between its list and its
	// watch: the update waits for the watch.
	watching := make(chan struct{})
	var once sync.Once
	client.PrependWatchReactor("configmaps", func(a k8stesting.Action) (bool, watch.Interface, error) {
		w, err := client.Tracker().Watch(a.GetResource(), a.GetNamespace())
		once.Do(func() { close(watching) })
		return true, w, err
	})
	ctx := context.Background()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cm", Namespace: "ns"}, Data: map[string]string{"k": "v1"}}
	if _, err := client.CoreV1().ConfigMaps("ns").Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	k.syncTest(t, "ns/p")
	file := filepath.Join(k.podVolumeDir(pod), "cfg", "k")
	if b, err := os.ReadFile(file); err != nil || string(b) != "v1" {
		t.Fatalf("the volume after the start: %q %v", b, err)
	}
	// The watch's first list enqueues the pod once; then the update must
	// enqueue it again.
	enqueued := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for k.queue.Len() == 0 {
			if time.Now().After(deadline) {
				t.Fatalf("the pod is not synced after %s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
		key, _ := k.queue.Get()
		k.queue.Done(key)
	}
	enqueued("its ConfigMap is first listed")
	select {
	case <-watching:
	case <-time.After(10 * time.Second):
		t.Fatal("the ConfigMap is never watched")
	}
	cm.Data["k"] = "v2"
	if _, err := client.CoreV1().ConfigMaps("ns").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	enqueued("its ConfigMap changed")
	k.pods.Update(apiPod(t, client))
	k.syncTest(t, "ns/p")
	if b, err := os.ReadFile(file); err != nil || string(b) != "v2" {
		t.Fatalf("the volume after the update: %q %v", b, err)
	}
	// The pod's syncs read the ConfigMap from its watch, not the API.
	gets := func() int {
		n := 0
		for _, a := range client.Actions() {
			if a.Matches("get", "configmaps") {
				n++
			}
		}
		return n
	}
	before := gets()
	k.syncTest(t, "ns/p")
	k.syncTest(t, "ns/p")
	if n := gets() - before; n != 0 {
		t.Fatalf("two syncs of a running pod read its ConfigMap from the API %d times", n)
	}
	if len(rt.running()) != 1 {
		t.Fatal("the update restarted the container")
	}
}

func TestKubeletEphemeralContainers(t *testing.T) {
	rt := newFakeRuntime("img")
	pod := testPod(corev1.RestartPolicyAlways, "a")
	k, client := testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	cur := apiPod(t, client)
	cur.Spec.EphemeralContainers = []corev1.EphemeralContainer{{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: "debug", Image: "img"}, TargetContainerName: "a"}}
	k.pods.Update(cur)
	k.syncTest(t, "ns/p")
	if n := len(rt.running()); n != 2 {
		t.Fatalf("%d containers running after an ephemeral container was added", n)
	}
	if ns := rt.configs["debug"].Linux.SecurityContext.NamespaceOptions; ns.Pid != runtimeapi.NamespaceMode_TARGET || ns.TargetId == "" {
		t.Fatalf("an ephemeral container aimed at a: %+v", ns)
	}
	st := apiPod(t, client).Status
	if len(st.EphemeralContainerStatuses) != 1 || st.EphemeralContainerStatuses[0].State.Running == nil {
		t.Fatalf("ephemeral container statuses: %+v", st.EphemeralContainerStatuses)
	}
	for _, c := range rt.running() {
		if c.Metadata.Name == "debug" {
			rt.exit(c.Id, 0)
		}
	}
	k.pods.Update(apiPod(t, client))
	k.syncTest(t, "ns/p")
	if n := len(rt.running()); n != 1 {
		t.Fatalf("an ephemeral container that exited was restarted: %d running", n)
	}
}

func TestKubeletNoPreStopWithoutGrace(t *testing.T) {
	rt := newFakeRuntime("img")
	rt.execExit["pre"] = 0
	pod := testPod(corev1.RestartPolicyAlways, "a")
	pod.Spec.Containers[0].Lifecycle = &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{Command: []string{"pre"}}}}
	k, client := testKubelet(t, rt, pod)
	k.syncTest(t, "ns/p")
	cur := apiPod(t, client)
	cur.DeletionTimestamp, cur.DeletionGracePeriodSeconds = &metav1.Time{Time: time.Now()}, new(int64)
	k.pods.Update(cur)
	k.syncTest(t, "ns/p")
	if len(rt.execs) != 0 || len(rt.running()) != 0 {
		t.Fatalf("deleted without grace: hooks run %v, %d running", rt.execs, len(rt.running()))
	}
}
