// Package node is the kubelet: it registers its Node, renews its Lease,
// and drives the pods bound to it through a CRI runtime (sandbox, init
// containers, containers, restart policy with back-off, graceful
// termination), posting their status as Kubernetes' kubelet does.
//
// Its shape is the kubelet's: an informer on the node's pods and a relist
// of the runtime (the generic PLEG: containerd 1.6 sends no container
// events over CRI) feed one work queue keyed by pod; sync(key) is
// idempotent. What a sync does is decided by computeActions and the
// status it posts by computeStatus, both pure functions of the pod and of
// what the runtime holds, tested in memory; the Runtime interface is the
// edge, served by CRI's gRPC client in the agent and by a fake in tests.
package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/flowcontrol"
	"k8s.io/client-go/util/workqueue"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// Config is what a kubelet is made from.
type Config struct {
	Client   kubernetes.Interface
	Runtime  Runtime
	NodeName string
	// NodeIPs are the node's addresses, the first its InternalIP.
	NodeIPs []string
	// PodLogDir holds the pods' log directories (the kubelet's
	// /var/log/pods), VolumeDir their volumes.
	PodLogDir, VolumeDir string
	// CgroupParent is the cgroup (cgroupfs path) the pods' cgroups go
	// under.
	CgroupParent string
	// ClusterDNS and ClusterDomain go into pods' resolv.conf.
	ClusterDNS []string
	// ResolvConf is the node's resolv.conf, which pods with dnsPolicy
	// Default get (and ClusterFirst ones without ClusterDNS).
	ResolvConf    string
	ClusterDomain string
	// LocalImages tells which images exist only on this node (imported
	// from archives): they are never pulled. Nil: none do.
	LocalImages LocalImages
	Recorder    record.EventRecorder
	Logger      *slog.Logger
	// RelistPeriod is how often the runtime is listed (1 s by default, as
	// the kubelet's generic PLEG).
	RelistPeriod time.Duration
	// Workers is how many pods sync at once (16 by default).
	Workers int
}

// LocalImages tells the images that exist only on the node.
type LocalImages interface {
	IsLocal(ctx context.Context, image string) bool
}

// Kubelet drives the pods bound to one node.
type Kubelet struct {
	cfg      Config
	log      *slog.Logger
	pods     cache.Indexer
	services corelisters.ServiceLister
	queue    workqueue.TypedRateLimitingInterface[string]
	backoff  *flowcontrol.Backoff
	probes   *probes
	sources  *sourceWatches
	runtime  string
	// allocatable is the node's, for containers without limits.
	allocatable corev1.ResourceList

	mu sync.Mutex
	// waiting is why each container of a pod that is not running waits,
	// by pod UID and container name, from its last sync.
	waiting map[types.UID]map[string]waitingReason
	// relisted is a summary of what the runtime held for each pod at the
	// last relist, to enqueue the pods whose containers changed.
	relisted map[types.UID]string
	// seenIn maps the pod UIDs found in the runtime to their keys.
	seenIn map[types.UID]string
	// volumeSums is the digest of the files each configMap, secret,
	// downwardAPI and projected volume was last written with, by pod UID
	// and volume name: a sync of a running pod rewrites only what changed
	// without reading the volumes back.
	volumeSums map[types.UID]map[string][sha256.Size]byte
}

// New makes a kubelet; Run starts it.
func New(cfg Config) (*Kubelet, error) {
	if cfg.Client == nil || cfg.Runtime == nil || cfg.NodeName == "" || cfg.PodLogDir == "" || cfg.VolumeDir == "" {
		return nil, errors.New("kubelet: client, runtime, node name, pod log and volume dirs are required")
	}
	if cfg.RelistPeriod == 0 {
		cfg.RelistPeriod = time.Second
	}
	if cfg.Workers == 0 {
		cfg.Workers = 16
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	k := &Kubelet{
		cfg: cfg, log: cfg.Logger,
		queue:      workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]()),
		backoff:    flowcontrol.NewBackOff(10*time.Second, 300*time.Second),
		waiting:    map[types.UID]map[string]waitingReason{},
		relisted:   map[types.UID]string{},
		seenIn:     map[types.UID]string{},
		volumeSums: map[types.UID]map[string][sha256.Size]byte{},
	}
	k.probes = newProbes(k)
	k.sources = newSourceWatches(cfg.Client, k.queue.Add)
	k.allocatable = machineCapacity(cfg.VolumeDir)
	return k, nil
}

// Run syncs pods until ctx ends. Containers keep running after it
// returns: they are the runtime's.
func (k *Kubelet) Run(ctx context.Context) error {
	v, err := k.cfg.Runtime.Version(ctx, &runtimeapi.VersionRequest{})
	if err != nil {
		return fmt.Errorf("container runtime: %w", err)
	}
	k.runtime = v.RuntimeName
	if err := os.MkdirAll(k.cfg.PodLogDir, 0o755); err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactoryWithOptions(k.cfg.Client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", k.cfg.NodeName).String()
		}))
	inf := factory.Core().V1().Pods().Informer()
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    k.enqueue,
		UpdateFunc: func(_, obj any) { k.enqueue(obj) },
		DeleteFunc: k.enqueue,
	})
	k.pods = inf.GetIndexer()
	// Services, for the environment variables of the pods' containers.
	svcFactory := informers.NewSharedInformerFactory(k.cfg.Client, 0)
	svcInf := svcFactory.Core().V1().Services()
	k.services = svcInf.Lister()
	svcInf.Informer()
	factory.Start(ctx.Done())
	svcFactory.Start(ctx.Done())
	defer factory.Shutdown()
	defer svcFactory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced, svcInf.Informer().HasSynced) {
		return ctx.Err()
	}
	defer k.queue.ShutDown()
	var wg sync.WaitGroup
	for range k.cfg.Workers {
		wg.Go(func() {
			for k.processNext(ctx) {
			}
		})
	}
	wg.Go(func() { k.relistLoop(ctx) })
	<-ctx.Done()
	k.queue.ShutDown()
	wg.Wait()
	return nil
}

func (k *Kubelet) enqueue(obj any) {
	key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj)
	if err == nil {
		k.queue.Add(key)
	}
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	key, quit := k.queue.Get()
	if quit {
		return false
	}
	defer k.queue.Done(key)
	requeue, err := k.sync(ctx, key)
	switch {
	case err != nil && ctx.Err() == nil:
		k.log.Warn("pod sync failed; retrying", "pod", key, "err", err)
		k.queue.AddRateLimited(key)
	case requeue > 0:
		k.queue.Forget(key)
		k.queue.AddAfter(key, requeue)
	default:
		k.queue.Forget(key)
	}
	return true
}

// relistLoop lists the runtime every RelistPeriod and enqueues the pods
// whose containers changed, and those the runtime holds that the API no
// longer has on this node.
func (k *Kubelet) relistLoop(ctx context.Context) {
	t := time.NewTicker(k.cfg.RelistPeriod)
	defer t.Stop()
	for {
		if err := k.relist(ctx); err != nil && ctx.Err() == nil {
			k.log.Warn("runtime relist failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func (k *Kubelet) relist(ctx context.Context) error {
	sbs, err := k.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{labelManagedBy: managedBy}}})
	if err != nil {
		return err
	}
	cs, err := k.cfg.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{LabelSelector: map[string]string{labelManagedBy: managedBy}}})
	if err != nil {
		return err
	}
	summary := map[types.UID]string{}
	keys := map[types.UID]string{}
	for _, s := range sbs.Items {
		uid := types.UID(s.Labels[labelPodUID])
		keys[uid] = s.Labels[labelPodNamespace] + "/" + s.Labels[labelPodName]
		summary[uid] += fmt.Sprintf("s%s:%d;", s.Id, s.State)
	}
	for _, c := range cs.Containers {
		uid := types.UID(c.Labels[labelPodUID])
		summary[uid] += fmt.Sprintf("c%s:%d;", c.Id, c.State)
	}
	k.mu.Lock()
	changed := map[string]bool{}
	for uid, s := range summary {
		if k.relisted[uid] != s {
			changed[keys[uid]] = true
		}
	}
	for uid := range k.relisted {
		if _, ok := summary[uid]; !ok {
			changed[k.seenIn[uid]] = true
		}
	}
	k.relisted, k.seenIn = summary, keys
	k.mu.Unlock()
	for key := range changed {
		if key != "" && key != "/" {
			k.queue.Add(key)
		}
	}
	// Pods the runtime holds whose object is gone or is another pod of
	// the same name: their sync removes them.
	for uid, key := range keys {
		obj, ok, _ := k.pods.GetByKey(key)
		if !ok || obj.(*corev1.Pod).UID != uid {
			k.queue.Add(key)
		}
	}
	return nil
}

// sync brings the runtime to the pod of key and posts its status. It
// returns when to look again when something waits on time (a back-off, a
// grace period).
func (k *Kubelet) sync(ctx context.Context, key string) (time.Duration, error) {
	obj, exists, err := k.pods.GetByKey(key)
	if err != nil {
		return 0, err
	}
	var pod *corev1.Pod
	if exists {
		pod = obj.(*corev1.Pod)
	}
	// One listing by name serves both: what the runtime holds under this
	// name for other pods (deleted, or replaced by a pod of the same name)
	// goes first, and the rest is this pod's.
	mine, others, err := k.sandboxesNamed(ctx, key, pod)
	if err != nil {
		return 0, err
	}
	if err := k.removeOthers(ctx, key, others); err != nil {
		return 0, err
	}
	if pod == nil || pod.DeletionTimestamp != nil || isTerminal(pod.Status.Phase) {
		k.sources.track(ctx, key, nil)
	} else {
		k.sources.track(ctx, key, volumeSources(pod))
	}
	if pod == nil {
		return 0, nil
	}
	o, err := k.observeSandboxes(ctx, mine)
	if err != nil {
		return 0, err
	}
	// A container whose liveness or startup probe failed is killed; its
	// restart policy then decides.
	if k.killUnhealthy(ctx, pod, o) {
		if o, err = k.observe(ctx, pod.UID); err != nil {
			return 0, err
		}
	}
	// A pod past its activeDeadlineSeconds fails, and is killed as a
	// finished pod is.
	orig := pod
	exceeded, untilDeadline := activeDeadline(pod, time.Now())
	if exceeded && !isTerminal(pod.Status.Phase) {
		k.cfg.Recorder.Event(pod, corev1.EventTypeNormal, "DeadlineExceeded", deadlineMessage)
		pod = pod.DeepCopy()
		pod.Status.Phase, pod.Status.Reason, pod.Status.Message = corev1.PodFailed, "DeadlineExceeded", deadlineMessage
	}
	a := computeActions(pod, o, func(name string, finishedAt time.Time) bool {
		return k.backoff.IsInBackOffSince(backoffKey(pod, name), finishedAt)
	})
	waiting := map[string]waitingReason{}
	for name := range a.backingOff {
		cur, _ := o.latest(name)
		waiting[name] = waitingReason{Reason: "CrashLoopBackOff",
			Message: fmt.Sprintf("back-off %s restarting failed container=%s pod=%s_%s(%s)", k.backoff.Get(backoffKey(pod, name)), name, pod.Name, pod.Namespace, pod.UID)}
		if cur != nil && cur.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			delete(waiting, name)
		}
	}
	acted, err := k.execute(ctx, pod, o, a, waiting)
	if err != nil {
		// The pod's status says where it stands meanwhile (waiting in
		// ContainerCreating when its sandbox could not be made), as the
		// kubelet posts it whatever its sync did.
		if err := k.postStatus(ctx, orig, pod, o, waiting, a.initFailed); err != nil {
			k.log.Warn("posting a pod's status", "pod", key, "err", err)
		}
		return 0, err
	}
	if acted {
		if o, err = k.observe(ctx, pod.UID); err != nil {
			return 0, err
		}
	} else if pod.DeletionTimestamp == nil && !isTerminal(pod.Status.Phase) && o.sandbox.GetState() == runtimeapi.PodSandboxState_SANDBOX_READY {
		k.refreshVolumes(ctx, pod, o.sandbox.GetNetwork().GetIp())
	}
	k.mu.Lock()
	if prev := k.waiting[pod.UID]; prev != nil {
		// A pull or create failure stays the reason until the container
		// runs or fails otherwise.
		for name, w := range prev {
			if _, ok := waiting[name]; !ok && w.Reason == "ImagePullBackOff" {
				if cur, _ := o.latest(name); cur == nil {
					waiting[name] = w
				}
			}
		}
	}
	k.waiting[pod.UID] = waiting
	k.mu.Unlock()

	k.probes.sync(ctx, key, pod, o)
	if pod.DeletionTimestamp != nil && !anythingRunning(o) {
		return 0, k.finishDeletion(ctx, pod, o)
	}
	if err := k.postStatus(ctx, orig, pod, o, waiting, a.initFailed); err != nil {
		return 0, err
	}
	if len(a.backingOff) > 0 || len(waiting) > 0 {
		return time.Second, nil
	}
	return untilDeadline, nil
}

const deadlineMessage = "Pod was active on the node longer than the specified deadline"

// activeDeadline reports whether the pod has run past its
// activeDeadlineSeconds, and otherwise how long it has left (0 when it
// has no deadline or has not started).
func activeDeadline(pod *corev1.Pod, now time.Time) (bool, time.Duration) {
	if pod.Spec.ActiveDeadlineSeconds == nil || pod.Status.StartTime == nil {
		return false, 0
	}
	left := pod.Status.StartTime.Add(time.Duration(*pod.Spec.ActiveDeadlineSeconds) * time.Second).Sub(now)
	return left <= 0, max(left, 0)
}

func backoffKey(pod *corev1.Pod, container string) string {
	return string(pod.UID) + "/" + container
}

// observe lists what the runtime holds for the pod with uid.
func (k *Kubelet) observe(ctx context.Context, uid types.UID) (*observed, error) {
	sbs, err := k.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{LabelSelector: map[string]string{labelPodUID: string(uid), labelManagedBy: managedBy}}})
	if err != nil {
		return nil, err
	}
	return k.observeSandboxes(ctx, sbs.Items)
}

// observeSandboxes reads the state of a pod's sandboxes and of the
// containers of its newest one.
func (k *Kubelet) observeSandboxes(ctx context.Context, sbs []*runtimeapi.PodSandbox) (*observed, error) {
	o := &observed{sandboxes: sbs}
	sortObserved(o)
	if len(o.sandboxes) == 0 {
		return o, nil
	}
	st, err := k.cfg.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: o.sandboxes[0].Id})
	if err != nil {
		return nil, err
	}
	o.sandbox = st.Status
	cs, err := k.cfg.Runtime.ListContainers(ctx, &runtimeapi.ListContainersRequest{Filter: &runtimeapi.ContainerFilter{PodSandboxId: o.sandboxes[0].Id}})
	if err != nil {
		return nil, err
	}
	for _, c := range cs.Containers {
		s, err := k.cfg.Runtime.ContainerStatus(ctx, &runtimeapi.ContainerStatusRequest{ContainerId: c.Id})
		if err != nil {
			return nil, err
		}
		o.containers = append(o.containers, s.Status)
	}
	sortObserved(o)
	return o, nil
}

// execute carries out a sync's actions. It reports whether it changed
// anything in the runtime; waiting gets the reason of each container that
// could not start.
func (k *Kubelet) execute(ctx context.Context, pod *corev1.Pod, o *observed, a actions, waiting map[string]waitingReason) (bool, error) {
	acted := false
	if a.killPod {
		acted = true
		if err := k.killPod(ctx, pod, o); err != nil {
			return acted, err
		}
	}
	for _, c := range a.kill {
		acted = true
		if err := k.stopContainer(ctx, pod, c); err != nil {
			return acted, err
		}
	}
	sandboxID := ""
	var sandboxConfig *runtimeapi.PodSandboxConfig
	if len(o.sandboxes) > 0 {
		sandboxID = o.sandboxes[0].Id
	}
	if a.createSandbox {
		acted = true
		cfg, err := k.sandboxConfig(pod, a.sandboxAttempt)
		if err != nil {
			return acted, err
		}
		if err := os.MkdirAll(cfg.LogDirectory, 0o755); err != nil {
			return acted, err
		}
		resp, err := k.cfg.Runtime.RunPodSandbox(ctx, &runtimeapi.RunPodSandboxRequest{Config: cfg})
		if err != nil {
			k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedCreatePodSandBox", "Failed to create pod sandbox: %v", err)
			return acted, fmt.Errorf("run sandbox: %w", err)
		}
		sandboxID, sandboxConfig = resp.PodSandboxId, cfg
		if a.sandboxAttempt > 0 {
			k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "SandboxChanged", "Pod sandbox changed, it will be killed and re-created.")
		}
	}
	if len(a.start) == 0 {
		return acted, nil
	}
	if sandboxConfig == nil {
		cfg, err := k.sandboxConfig(pod, o.sandboxes[0].Metadata.Attempt)
		if err != nil {
			return acted, err
		}
		sandboxConfig = cfg
	}
	podIP := ""
	if st, err := k.cfg.Runtime.PodSandboxStatus(ctx, &runtimeapi.PodSandboxStatusRequest{PodSandboxId: sandboxID}); err == nil && st.Status.Network != nil {
		podIP = st.Status.Network.Ip
	}
	vols, err := k.setUpVolumes(ctx, pod, podIP)
	if err != nil {
		// The pod waits for its volumes; it never runs without them.
		k.cfg.Recorder.Event(pod, corev1.EventTypeWarning, "FailedMount", err.Error())
		for _, s := range a.start {
			waiting[s.container.Name] = waitingReason{Reason: "ContainerCreating"}
		}
		return acted, nil
	}
	for _, s := range a.start {
		acted = true
		if s.attempt > 0 {
			k.backoff.Next(backoffKey(pod, s.container.Name), time.Now())
		}
		if w, err := k.startContainer(ctx, pod, sandboxID, sandboxConfig, s, podIP, vols); err != nil {
			waiting[s.container.Name] = w
			k.log.Info("container did not start", "pod", pod.Namespace+"/"+pod.Name, "container", s.container.Name, "reason", w.Reason, "err", err)
			if s.init {
				// The next init container waits for this one.
				break
			}
		}
	}
	return acted, nil
}

// killPod stops every container of the pod within its grace period, then
// its sandboxes.
func (k *Kubelet) killPod(ctx context.Context, pod *corev1.Pod, o *observed) error {
	var wg sync.WaitGroup
	errs := make([]error, len(o.containers))
	for i, c := range o.containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING && c.State != runtimeapi.ContainerState_CONTAINER_CREATED {
			continue
		}
		wg.Go(func() { errs[i] = k.stopContainer(ctx, pod, c) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, s := range o.sandboxes {
		if s.State != runtimeapi.PodSandboxState_SANDBOX_READY {
			continue
		}
		if _, err := k.cfg.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			return fmt.Errorf("stop sandbox: %w", err)
		}
	}
	return nil
}

// stopContainer stops a container within the pod's grace period: its
// preStop hook, SIGTERM, then SIGKILL when the period has passed.
func (k *Kubelet) stopContainer(ctx context.Context, pod *corev1.Pod, c *runtimeapi.ContainerStatus) error {
	k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Stopping container %s", c.Metadata.Name)
	grace := k.preStop(ctx, pod, c, gracePeriod(pod))
	_, err := k.cfg.Runtime.StopContainer(ctx, &runtimeapi.StopContainerRequest{ContainerId: c.Id, Timeout: grace})
	if err != nil {
		return fmt.Errorf("stop container %s: %w", c.Metadata.Name, err)
	}
	return nil
}

// gracePeriod is how long the pod's containers get between SIGTERM and
// SIGKILL: what its deletion says, else its spec's (30 s by default).
func gracePeriod(pod *corev1.Pod) int64 {
	if pod.DeletionGracePeriodSeconds != nil {
		return *pod.DeletionGracePeriodSeconds
	}
	if pod.Spec.TerminationGracePeriodSeconds != nil {
		return *pod.Spec.TerminationGracePeriodSeconds
	}
	return 30
}

// finishDeletion removes what the runtime holds of a deleted pod whose
// containers have stopped, then the pod object itself, as the kubelet
// does once a graceful deletion is done.
func (k *Kubelet) finishDeletion(ctx context.Context, pod *corev1.Pod, o *observed) error {
	if err := k.removeSandboxes(ctx, o.sandboxes); err != nil {
		return err
	}
	k.forget(pod)
	err := k.cfg.Client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: new(int64), Preconditions: metav1.NewUIDPreconditions(string(pod.UID))})
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil
	}
	return err
}

// sandboxesNamed lists the sandboxes the runtime holds under key, split
// into those of pod (nil when the API has no pod of that name here) and
// those of other pods.
func (k *Kubelet) sandboxesNamed(ctx context.Context, key string, pod *corev1.Pod) (mine, others []*runtimeapi.PodSandbox, err error) {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return nil, nil, err
	}
	sbs, err := k.cfg.Runtime.ListPodSandbox(ctx, &runtimeapi.ListPodSandboxRequest{Filter: &runtimeapi.PodSandboxFilter{
		LabelSelector: map[string]string{labelPodNamespace: ns, labelPodName: name, labelManagedBy: managedBy}}})
	if err != nil {
		return nil, nil, err
	}
	for _, s := range sbs.Items {
		if pod != nil && types.UID(s.Labels[labelPodUID]) == pod.UID {
			mine = append(mine, s)
		} else {
			others = append(others, s)
		}
	}
	return mine, others, nil
}

// removeOthers stops and removes the sandboxes of pods the API no longer
// has under key.
func (k *Kubelet) removeOthers(ctx context.Context, key string, others []*runtimeapi.PodSandbox) error {
	if len(others) == 0 {
		return nil
	}
	for _, s := range others {
		// A pod deleted without grace (or whose object is gone): its
		// containers get the grace they were made with, at most 2 s here
		// as the API no longer waits for them.
		if _, err := k.cfg.Runtime.StopPodSandbox(ctx, &runtimeapi.StopPodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			return err
		}
		k.log.Info("removing a pod the API no longer has", "pod", key, "uid", s.Labels[labelPodUID])
	}
	if err := k.removeSandboxes(ctx, others); err != nil {
		return err
	}
	for _, s := range others {
		k.forgetUID(types.UID(s.Labels[labelPodUID]))
	}
	return nil
}

// removeSandboxes removes sandboxes (and with them their containers), the
// pods' logs and their cgroups.
func (k *Kubelet) removeSandboxes(ctx context.Context, sbs []*runtimeapi.PodSandbox) error {
	for _, s := range sbs {
		if _, err := k.cfg.Runtime.RemovePodSandbox(ctx, &runtimeapi.RemovePodSandboxRequest{PodSandboxId: s.Id}); err != nil {
			return fmt.Errorf("remove sandbox: %w", err)
		}
		uid := types.UID(s.Labels[labelPodUID])
		if err := os.RemoveAll(podLogDir(k.cfg.PodLogDir, s.Metadata.Namespace, s.Metadata.Name, uid)); err != nil {
			return err
		}
		if err := k.tearDownVolumes(string(uid)); err != nil {
			return err
		}
		if err := removeCgroup(podCgroup(k.cfg.CgroupParent, uid)); err != nil {
			k.log.Warn("removing a pod's cgroup", "uid", uid, "err", err)
		}
	}
	return nil
}

func (k *Kubelet) forget(pod *corev1.Pod) { k.forgetUID(pod.UID) }

func (k *Kubelet) forgetUID(uid types.UID) {
	k.mu.Lock()
	delete(k.waiting, uid)
	k.mu.Unlock()
	k.probes.stopPod(uid)
}

// killUnhealthy stops the running containers whose liveness or startup
// probe failed, and reports whether it stopped any.
func (k *Kubelet) killUnhealthy(ctx context.Context, pod *corev1.Pod, o *observed) bool {
	killed := false
	for _, c := range o.containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_RUNNING {
			continue
		}
		for _, kind := range []probeKind{startup, liveness} {
			if r, ok := k.probes.result(c.Id, kind); ok && r.failed {
				k.cfg.Recorder.Eventf(pod, corev1.EventTypeNormal, "Killing", "Container %s failed %s probe, will be restarted", c.Metadata.Name, strings.ToLower(string(kind)))
				if err := k.stopContainer(ctx, pod, c); err != nil {
					k.log.Warn("stopping an unhealthy container", "pod", pod.Name, "container", c.Metadata.Name, "err", err)
				}
				killed = true
				break
			}
		}
	}
	return killed
}

// postStatus posts the status computed from pod (the pod as the sync saw
// it, failed past its deadline) unless it is what stored, the pod from the
// API, holds.
func (k *Kubelet) postStatus(ctx context.Context, stored, pod *corev1.Pod, o *observed, waiting map[string]waitingReason, initFailed bool) error {
	st := computeStatus(statusInput{pod: pod, observed: o, waiting: waiting, initFailed: initFailed,
		hostIPs: k.cfg.NodeIPs, runtime: k.runtime, probes: k.probes.result, messages: k.terminationMessages(pod, o), now: time.Now()})
	if reflect.DeepEqual(normalized(st), normalized(stored.Status)) {
		return nil
	}
	updated := stored.DeepCopy()
	updated.Status = st
	_, err := k.cfg.Client.CoreV1().Pods(pod.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{})
	if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
		// The informer brings the newer pod, and a sync with it.
		return nil
	}
	return err
}

// normalized drops what a round trip through the API changes (time is
// kept to the second), so equal statuses compare equal.
func normalized(st corev1.PodStatus) corev1.PodStatus {
	st = *st.DeepCopy()
	trunc := func(t *metav1.Time) {
		if t != nil {
			*t = metav1.NewTime(t.Time.Truncate(time.Second).UTC())
		}
	}
	trunc(st.StartTime)
	for i := range st.Conditions {
		trunc(&st.Conditions[i].LastTransitionTime)
		trunc(&st.Conditions[i].LastProbeTime)
	}
	for _, list := range [][]corev1.ContainerStatus{st.InitContainerStatuses, st.ContainerStatuses, st.EphemeralContainerStatuses} {
		for i := range list {
			for _, s := range []*corev1.ContainerState{&list[i].State, &list[i].LastTerminationState} {
				if s.Running != nil {
					trunc(&s.Running.StartedAt)
				}
				if s.Terminated != nil {
					trunc(&s.Terminated.StartedAt)
					trunc(&s.Terminated.FinishedAt)
				}
			}
		}
	}
	return st
}

// podLogDir is a pod's log directory, named as the kubelet names it.
func podLogDir(root, ns, name string, uid types.UID) string {
	return filepath.Join(root, ns+"_"+name+"_"+string(uid))
}

// copyLabels returns a copy of m with extra added.
func copyLabels(m map[string]string, extra map[string]string) map[string]string {
	out := maps.Clone(m)
	if out == nil {
		out = map[string]string{}
	}
	maps.Copy(out, extra)
	return out
}
