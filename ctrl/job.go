package ctrl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// Pod failure backoff, as Kubernetes' Job controller: a failed pod is
// replaced after 10 s, doubling per failure, at most 6 min.
const (
	jobBackoffBase = 10 * time.Second
	jobBackoffMax  = 6 * time.Minute
)

var jobKind = batchv1.SchemeGroupVersion.WithKind("Job")

// jobController runs Jobs to completion as Kubernetes' does: up to
// parallelism pods at once until completions have succeeded (or, without
// completions, until one has and the rest are done), failed pods replaced
// with backoff until backoffLimit, a pod failure policy that fails the
// Job (or an index) at once or ignores a failure by exit code or pod
// condition, activeDeadlineSeconds, suspend, the Indexed completion mode
// (counted by index, jobindex.go) with its success policy,
// backoffLimitPerIndex and maxFailedIndexes, and
// ttlSecondsAfterFinished. Pods carry the
// job-tracking finalizer, so every finished pod is counted exactly once
// even if it is deleted before the controller sees it finish, and even
// across a failover: a UID goes to status.uncountedTerminatedPods, then
// the finalizer comes off, then the UID moves to the counters.
type jobController struct {
	*controller
	client       kubernetes.Interface
	jobs         batchlisters.JobLister
	pods         corelisters.PodLister
	expectations *expectations
}

func newJobController(cfg Config) *controller {
	c := &jobController{client: cfg.Client, expectations: newExpectations()}
	c.controller = newController("job", cfg, c.sync)
	jobInf, podInf := cfg.Informers.Batch().V1().Jobs(), cfg.Informers.Core().V1().Pods()
	jobInf.Informer().AddEventHandler(c.handler())
	podInf.Informer().AddEventHandler(c.observePods(c.expectations, jobKind))
	c.jobs, c.pods = jobInf.Lister(), podInf.Lister()
	c.synced = append(c.synced, jobInf.Informer().HasSynced, podInf.Informer().HasSynced)
	return c.controller
}

func finishedCondition(j *batchv1.Job) *batchv1.JobCondition {
	for i := range j.Status.Conditions {
		c := &j.Status.Conditions[i]
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c
		}
	}
	return nil
}

func (c *jobController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	job, err := c.jobs.Jobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.expectations.forget(key)
		return c.releaseOrphans(ctx, key)
	}
	if err != nil {
		return err
	}
	satisfied := c.expectations.satisfied(key) // before the pods are listed (expectations)
	pods, err := ownedPods(c.pods, job, job.Spec.Selector)
	if err != nil {
		return err
	}
	j := job.DeepCopy()
	now := time.Now()
	if j.Status.StartTime == nil && !ptr.Deref(j.Spec.Suspend, false) {
		j.Status.StartTime = &metav1.Time{Time: now}
	}
	// Count the finished pods: first into uncountedTerminatedPods, which
	// is written before any finalizer comes off.
	if changed := c.collectFinished(j, pods); changed {
		return c.writeStatus(ctx, job, j)
	}
	if err := c.releaseCounted(ctx, j, pods); err != nil {
		return err
	}
	c.moveCounted(j, pods)

	var active []*corev1.Pod
	for _, p := range pods {
		if p.DeletionTimestamp == nil && p.Status.Phase != corev1.PodSucceeded && p.Status.Phase != corev1.PodFailed {
			active = append(active, p)
		}
	}
	j.Status.Active = int32(len(active))
	var requeue time.Duration
	switch t, reason, message, stop := verdict(j, pods, now); {
	case finishedCondition(j) != nil:
		if err := c.deleteAll(ctx, key, active); err != nil {
			return err
		}
		active = nil
		requeue, err = c.expire(ctx, j, now)
		if err != nil {
			return err
		}
	case t != "":
		if stop {
			if err := c.deleteAll(ctx, key, active); err != nil {
				return err
			}
			active = nil
		}
		c.finishCounted(j, t, reason, message, now)
	case ptr.Deref(j.Spec.Suspend, false):
		if err := c.deleteAll(ctx, key, active); err != nil {
			return err
		}
		active = nil
	case satisfied:
		wait, err := c.manage(ctx, key, j, pods, active, now)
		if err != nil {
			return err
		}
		requeue = wait
	}
	if j.Spec.ActiveDeadlineSeconds != nil && j.Status.StartTime != nil && finishedCondition(j) == nil {
		left := j.Status.StartTime.Add(time.Duration(*j.Spec.ActiveDeadlineSeconds) * time.Second).Sub(now)
		if requeue == 0 || left < requeue {
			requeue = max(left, time.Millisecond)
		}
	}
	j.Status.Active = int32(len(active))
	j.Status.Ready = ptr.To(int32(0))
	for _, p := range active {
		if podReady(p) {
			*j.Status.Ready++
		}
	}
	if err := c.writeStatus(ctx, job, j); err != nil {
		return err
	}
	if requeue > 0 {
		return requeueAfter(requeue)
	}
	return nil
}

// verdict says whether the Job ends now, as what and why, in the order
// Kubernetes' Job controller decides it, and whether its running pods
// must be stopped.
func verdict(j *batchv1.Job, pods []*corev1.Pod, now time.Time) (t batchv1.JobConditionType, reason, message string, stop bool) {
	for _, p := range pods {
		if action, msg := failurePolicyAction(j, p); action == batchv1.PodFailurePolicyActionFailJob {
			return batchv1.JobFailed, batchv1.JobReasonPodFailurePolicy, msg, true
		}
	}
	switch {
	case maxFailedIndexesExceeded(j):
		return batchv1.JobFailed, batchv1.JobReasonMaxFailedIndexesExceeded, "Job has exceeded the specified maximal number of failed indexes", true
	case indexesFailed(j):
		return batchv1.JobFailed, batchv1.JobReasonFailedIndexes, "Job has failed indexes", false
	case failedCount(j) > ptr.Deref(j.Spec.BackoffLimit, 6):
		return batchv1.JobFailed, "BackoffLimitExceeded", "Job has reached the specified backoff limit", false
	case j.Spec.ActiveDeadlineSeconds != nil && j.Status.StartTime != nil &&
		now.Sub(j.Status.StartTime.Time) >= time.Duration(*j.Spec.ActiveDeadlineSeconds)*time.Second:
		return batchv1.JobFailed, "DeadlineExceeded", "Job was active longer than specified deadline", true
	}
	if rule := successPolicyRule(j); rule >= 0 {
		return batchv1.JobComplete, batchv1.JobReasonSuccessPolicy, fmt.Sprintf("Matched rules at index %d", rule), true
	}
	if complete(j) {
		return batchv1.JobComplete, batchv1.JobReasonCompletionsReached, "Reached expected number of succeeded pods", false
	}
	return "", "", "", false
}

// releaseOrphans removes the tracking finalizer from the pods of a Job
// that is gone, which no one will count.
func (c *jobController) releaseOrphans(ctx context.Context, key string) error {
	ns, _, _ := cache.SplitMetaNamespaceKey(key)
	pods, err := c.pods.Pods(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var orphans []*corev1.Pod
	var uids []types.UID
	for _, p := range pods {
		if k, ok := ownerKey(p, jobKind); ok && k == key && slices.Contains(p.Finalizers, batchv1.JobTrackingFinalizer) {
			orphans = append(orphans, p)
			uids = append(uids, p.UID)
		}
	}
	gone := &batchv1.Job{Status: batchv1.JobStatus{UncountedTerminatedPods: &batchv1.UncountedTerminatedPods{Failed: uids}}}
	return c.releaseCounted(ctx, gone, orphans)
}

// collectFinished adds the finished pods that still hold the tracking
// finalizer to uncountedTerminatedPods, or, for an Indexed Job's
// succeeded pods, their indexes to completedIndexes; a pod deleted before
// it finished counts as failed.
func (c *jobController) collectFinished(j *batchv1.Job, pods []*corev1.Pod) bool {
	if j.Status.UncountedTerminatedPods == nil {
		j.Status.UncountedTerminatedPods = &batchv1.UncountedTerminatedPods{}
	}
	u := j.Status.UncountedTerminatedPods
	completed := parseIndexes(j.Status.CompletedIndexes)
	changed := false
	for _, p := range pods {
		if !slices.Contains(p.Finalizers, batchv1.JobTrackingFinalizer) || slices.Contains(u.Succeeded, p.UID) || slices.Contains(u.Failed, p.UID) {
			continue
		}
		action, _ := failurePolicyAction(j, p)
		switch {
		case p.Status.Phase == corev1.PodSucceeded && indexed(j):
			if i, ok := completionIndex(j, p); ok && !completed.Has(i) {
				completed.Insert(i)
				j.Status.CompletedIndexes, j.Status.Succeeded = formatIndexes(completed), int32(completed.Len())
				changed = true
			}
			continue // released by releaseCounted
		case p.Status.Phase == corev1.PodSucceeded:
			u.Succeeded = append(u.Succeeded, p.UID)
		case action == batchv1.PodFailurePolicyActionIgnore:
			continue // released uncounted by releaseCounted
		case p.Status.Phase == corev1.PodFailed || p.DeletionTimestamp != nil:
			u.Failed = append(u.Failed, p.UID)
			if i, ok := completionIndex(j, p); ok && j.Spec.BackoffLimitPerIndex != nil && indexFailed(j, p) {
				failed := parseIndexes(ptr.Deref(j.Status.FailedIndexes, "")).Insert(i)
				j.Status.FailedIndexes = ptr.To(formatIndexes(failed))
			}
		default:
			continue
		}
		changed = true
	}
	return changed
}

// releaseCounted removes the tracking finalizer from the pods recorded
// in uncountedTerminatedPods, from an Indexed Job's succeeded pods (their
// indexes are in completedIndexes by now), and from the failed pods the
// pod failure policy ignores, which are never counted.
func (c *jobController) releaseCounted(ctx context.Context, j *batchv1.Job, pods []*corev1.Pod) error {
	u := sets.New(j.Status.UncountedTerminatedPods.Succeeded...).Insert(j.Status.UncountedTerminatedPods.Failed...)
	var errs []error
	for _, p := range pods {
		i := slices.Index(p.Finalizers, batchv1.JobTrackingFinalizer)
		action, _ := failurePolicyAction(j, p)
		if i < 0 || !(u.Has(p.UID) || action == batchv1.PodFailurePolicyActionIgnore || (indexed(j) && p.Status.Phase == corev1.PodSucceeded)) {
			continue
		}
		patch, err := json.Marshal([]map[string]any{
			{"op": "test", "path": fmt.Sprintf("/metadata/finalizers/%d", i), "value": batchv1.JobTrackingFinalizer},
			{"op": "remove", "path": fmt.Sprintf("/metadata/finalizers/%d", i)},
		})
		if err != nil {
			return err
		}
		_, err = c.client.CoreV1().Pods(p.Namespace).Patch(ctx, p.Name, types.JSONPatchType, patch, metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("release pod %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// moveCounted moves the UIDs whose pods no longer hold the finalizer
// from uncountedTerminatedPods to the counters.
func (c *jobController) moveCounted(j *batchv1.Job, pods []*corev1.Pod) {
	holding := sets.New[types.UID]()
	for _, p := range pods {
		if slices.Contains(p.Finalizers, batchv1.JobTrackingFinalizer) {
			holding.Insert(p.UID)
		}
	}
	u := j.Status.UncountedTerminatedPods
	keep := func(uids []types.UID, counter *int32) []types.UID {
		var out []types.UID
		for _, uid := range uids {
			if holding.Has(uid) {
				out = append(out, uid)
				continue
			}
			*counter++
		}
		return out
	}
	u.Succeeded = keep(u.Succeeded, &j.Status.Succeeded)
	u.Failed = keep(u.Failed, &j.Status.Failed)
}

// failurePolicyAction is the action of the first rule of the Job's pod
// failure policy that a failed pod matches, as Kubernetes' Job controller
// reads it, with the message it writes when that rule fails the Job; ""
// when the pod has not failed or no rule matches (its failure counts).
// A pod being deleted before it succeeded has failed (it may bear the
// DisruptionTarget condition of whoever deleted it). Exit codes are those
// of the containers that ended other than with 0.
func failurePolicyAction(j *batchv1.Job, p *corev1.Pod) (batchv1.PodFailurePolicyAction, string) {
	if j.Spec.PodFailurePolicy == nil || !podFailed(p) {
		return "", ""
	}
	for i, rule := range j.Spec.PodFailurePolicy.Rules {
		var msg string
		if r := rule.OnExitCodes; r != nil {
			for _, s := range append(slices.Clone(p.Status.InitContainerStatuses), p.Status.ContainerStatuses...) {
				t := s.State.Terminated
				if t == nil || t.ExitCode == 0 || (r.ContainerName != nil && *r.ContainerName != s.Name) {
					continue
				}
				if slices.Contains(r.Values, t.ExitCode) == (r.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn) {
					msg = fmt.Sprintf("Container %s for pod %s/%s failed with exit code %d matching %s rule at index %d", s.Name, p.Namespace, p.Name, t.ExitCode, rule.Action, i)
					break
				}
			}
		}
		for _, want := range rule.OnPodConditions {
			for _, c := range p.Status.Conditions {
				if msg == "" && c.Type == want.Type && c.Status == want.Status {
					msg = fmt.Sprintf("Pod %s/%s has condition %s matching %s rule at index %d", p.Namespace, p.Name, c.Type, rule.Action, i)
				}
			}
		}
		if msg != "" {
			return rule.Action, msg
		}
	}
	return "", ""
}

// succeededCount and failedCount are the Job's finished pods, counted
// or about to be: a pod in uncountedTerminatedPods has finished.
func succeededCount(j *batchv1.Job) int32 {
	return j.Status.Succeeded + int32(len(j.Status.UncountedTerminatedPods.Succeeded))
}

func failedCount(j *batchv1.Job) int32 {
	return j.Status.Failed + int32(len(j.Status.UncountedTerminatedPods.Failed))
}

func complete(j *batchv1.Job) bool {
	if j.Spec.Completions != nil {
		return succeededCount(j) >= *j.Spec.Completions
	}
	return succeededCount(j) > 0 && j.Status.Active == 0
}

// finishCounted finishes the Job once every finished pod is in its
// counters, so a finished Job's status is final.
func (c *jobController) finishCounted(j *batchv1.Job, t batchv1.JobConditionType, reason, message string, now time.Time) {
	if u := j.Status.UncountedTerminatedPods; len(u.Succeeded)+len(u.Failed) == 0 {
		c.finish(j, t, reason, message, now)
	}
}

// finish sets the Job's final condition.
func (c *jobController) finish(j *batchv1.Job, t batchv1.JobConditionType, reason, message string, now time.Time) {
	at := metav1.NewTime(now)
	if t == batchv1.JobComplete {
		j.Status.CompletionTime = &at
		j.Status.Conditions = append(j.Status.Conditions,
			batchv1.JobCondition{Type: batchv1.JobSuccessCriteriaMet, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastProbeTime: at, LastTransitionTime: at})
		c.recorder.Event(j, corev1.EventTypeNormal, "Completed", "Job completed")
	} else {
		j.Status.Conditions = append(j.Status.Conditions,
			batchv1.JobCondition{Type: batchv1.JobFailureTarget, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastProbeTime: at, LastTransitionTime: at})
		c.recorder.Event(j, corev1.EventTypeWarning, reason, message)
	}
	j.Status.Conditions = append(j.Status.Conditions,
		batchv1.JobCondition{Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastProbeTime: at, LastTransitionTime: at})
}

// manage creates the pods the Job lacks, after the failure backoff, and
// returns how long until the backoff allows more.
func (c *jobController) manage(ctx context.Context, key string, j *batchv1.Job, pods, active []*corev1.Pod, now time.Time) (time.Duration, error) {
	want := ptr.Deref(j.Spec.Parallelism, 1)
	if j.Spec.Completions != nil {
		want = min(want, *j.Spec.Completions-succeededCount(j))
	} else if succeededCount(j) > 0 {
		want = 0
	}
	n := int(want) - len(active)
	if n < 0 {
		rankForDeletion(active)
		return 0, c.deleteAll(ctx, key, active[:-n])
	}
	if n == 0 {
		return 0, nil
	}
	var indexes []int
	var failures map[int]indexFailures
	var wait time.Duration
	if j.Spec.BackoffLimitPerIndex != nil {
		failures = failuresByIndex(j, pods)
		indexes, wait = backedOffIndexes(j, pods, failures, n, now)
	} else {
		var last time.Time
		for _, p := range pods {
			if t := finishedAt(p); p.Status.Phase == corev1.PodFailed && t.After(last) {
				last = t
			}
		}
		if w := last.Add(backoff(int(failedCount(j)))).Sub(now); !last.IsZero() && w > 0 {
			return w, nil
		}
		if indexed(j) {
			indexes = freeIndexes(j, pods, n)
		}
	}
	if indexed(j) {
		n = len(indexes)
	}
	if n == 0 {
		return wait, nil
	}
	c.expectations.expect(key, n, nil)
	return wait, c.createPods(ctx, c.client, c.expectations, key, j, n, func(i int) *corev1.Pod {
		pod := podFromTemplate(&j.Spec.Template, j, jobKind)
		pod.Finalizers = append(pod.Finalizers, batchv1.JobTrackingFinalizer)
		if indexes != nil {
			idx := strconv.Itoa(indexes[i])
			pod.GenerateName = j.Name + "-" + idx + "-"
			pod.Annotations = withEntry(pod.Annotations, batchv1.JobCompletionIndexAnnotation, idx)
			if failures != nil {
				pod.Annotations[batchv1.JobIndexFailureCountAnnotation] = strconv.Itoa(failures[indexes[i]].count)
			}
			pod.Labels = withEntry(pod.Labels, batchv1.JobCompletionIndexAnnotation, idx)
			pod.Spec.Hostname = j.Name + "-" + idx
			for i := range pod.Spec.Containers {
				pod.Spec.Containers[i].Env = append(pod.Spec.Containers[i].Env, corev1.EnvVar{Name: "JOB_COMPLETION_INDEX", Value: idx})
			}
		}
		return pod
	})
}

// backoff is the wait before a pod replaces one after this many
// failures: none, then 10 s, doubling, at most 6 min.
func backoff(failures int) time.Duration {
	if failures <= 0 {
		return 0
	}
	return min(jobBackoffBase<<min(failures-1, 10), jobBackoffMax)
}

// backedOffIndexes returns up to n free indexes of a Job with
// backoffLimitPerIndex whose own backoff has passed, and how long until
// the next of the others' does.
func backedOffIndexes(j *batchv1.Job, pods []*corev1.Pod, failures map[int]indexFailures, n int, now time.Time) ([]int, time.Duration) {
	var ready []int
	var wait time.Duration
	for _, i := range freeIndexes(j, pods, int(ptr.Deref(j.Spec.Completions, 0))) {
		f := failures[i]
		if w := f.last.Add(backoff(f.count)).Sub(now); f.count > 0 && w > 0 {
			if wait == 0 || w < wait {
				wait = w
			}
			continue
		}
		if len(ready) < n {
			ready = append(ready, i)
		}
	}
	return ready, wait
}

// podFailed says a pod has failed, or is going before it succeeded.
func podFailed(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodFailed || (p.DeletionTimestamp != nil && p.Status.Phase != corev1.PodSucceeded)
}

// finishedAt is when a pod's last container ended.
func finishedAt(p *corev1.Pod) time.Time {
	var last time.Time
	for _, s := range p.Status.ContainerStatuses {
		if s.State.Terminated != nil && s.State.Terminated.FinishedAt.After(last) {
			last = s.State.Terminated.FinishedAt.Time
		}
	}
	return last
}

func withEntry(m map[string]string, k, v string) map[string]string {
	if m == nil {
		m = map[string]string{}
	}
	m[k] = v
	return m
}

// freeIndexes returns up to n completion indexes that have neither
// succeeded nor an active pod.
func freeIndexes(j *batchv1.Job, pods []*corev1.Pod, n int) []int {
	taken := parseIndexes(j.Status.CompletedIndexes).Union(parseIndexes(ptr.Deref(j.Status.FailedIndexes, "")))
	for _, p := range pods {
		if podFailed(p) {
			continue
		}
		if i, err := strconv.Atoi(p.Annotations[batchv1.JobCompletionIndexAnnotation]); err == nil {
			taken.Insert(i)
		}
	}
	var out []int
	for i := 0; i < int(ptr.Deref(j.Spec.Completions, 0)) && len(out) < n; i++ {
		if !taken.Has(i) {
			out = append(out, i)
		}
	}
	return out
}

// deleteAll deletes the given pods of the Job.
// The deletions are expected, so a sync before the informer shows them
// does not delete more.
func (c *jobController) deleteAll(ctx context.Context, key string, pods []*corev1.Pod) error {
	if len(pods) == 0 {
		return nil
	}
	c.expectations.expect(key, 0, podKeys(pods))
	return deletePods(ctx, c.client, c.expectations, key, pods, nil)
}

// expire deletes a finished Job once ttlSecondsAfterFinished has passed,
// as Kubernetes' TTL-after-finished controller, or says when to look
// again.
func (c *jobController) expire(ctx context.Context, j *batchv1.Job, now time.Time) (time.Duration, error) {
	if j.Spec.TTLSecondsAfterFinished == nil {
		return 0, nil
	}
	at := finishedCondition(j).LastTransitionTime.Add(time.Duration(*j.Spec.TTLSecondsAfterFinished) * time.Second)
	if left := at.Sub(now); left > 0 {
		return left, nil
	}
	policy := metav1.DeletePropagationBackground
	err := c.client.BatchV1().Jobs(j.Namespace).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &j.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return 0, fmt.Errorf("delete expired job %s: %w", j.Name, err)
	}
	return 0, nil
}

func (c *jobController) writeStatus(ctx context.Context, old, j *batchv1.Job) error {
	return writeStatus(ctx, c.client.BatchV1().Jobs(j.Namespace), j, old.Status, j.Status)
}
