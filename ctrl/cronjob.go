package ctrl

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// The annotation Kubernetes puts on a CronJob's Jobs.
const scheduledTimestampAnnotation = "batch.kubernetes.io/cronjob-scheduled-timestamp"

var cronJobKind = batchv1.SchemeGroupVersion.WithKind("CronJob")

// cronJobController starts the Jobs of CronJobs on their schedule, as
// Kubernetes' does: the most recent missed time within
// startingDeadlineSeconds, concurrencyPolicy Allow, Forbid or Replace,
// suspend, timeZone, and the successful and failed history limits. A Job
// is named after its scheduled minute, so a time is never run twice, also
// across a failover.
type cronJobController struct {
	*controller
	client   kubernetes.Interface
	cronJobs batchlisters.CronJobLister
	jobs     batchlisters.JobLister
}

func newCronJobController(cfg Config) *controller {
	c := &cronJobController{client: cfg.Client}
	c.controller = newController("cronjob", cfg, c.sync)
	cjInf, jobInf := cfg.Informers.Batch().V1().CronJobs(), cfg.Informers.Batch().V1().Jobs()
	cjInf.Informer().AddEventHandler(c.handler())
	jobInf.Informer().AddEventHandler(c.enqueueOwner(cronJobKind))
	c.cronJobs, c.jobs = cjInf.Lister(), jobInf.Lister()
	c.synced = append(c.synced, cjInf.Informer().HasSynced, jobInf.Informer().HasSynced)
	return c.controller
}

func (c *cronJobController) sync(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return err
	}
	cur, err := c.cronJobs.CronJobs(ns).Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil || cur.DeletionTimestamp != nil {
		return err
	}
	cj := cur.DeepCopy()
	all, err := c.jobs.Jobs(ns).List(labels.Everything())
	if err != nil {
		return err
	}
	var jobs []*batchv1.Job
	for _, j := range all {
		if ownedBy(j, cj) {
			jobs = append(jobs, j)
		}
	}
	c.trackActive(ctx, cj, jobs)
	now := time.Now()
	sched, err := cron.ParseStandard(schedule(cj))
	if err != nil {
		c.recorder.Eventf(cj, corev1.EventTypeWarning, "UnparseableSchedule", "unparseable schedule: %q : %s", cj.Spec.Schedule, err)
		return c.writeStatus(ctx, cur, cj)
	}
	var runErr error
	if !ptr.Deref(cj.Spec.Suspend, false) {
		runErr = c.run(ctx, cj, sched, now)
	}
	errs := []error{runErr, c.writeStatus(ctx, cur, cj), c.cleanup(ctx, cj, jobs)}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return requeueAfter(sched.Next(now).Sub(now) + 100*time.Millisecond)
}

// schedule is the CronJob's schedule in its time zone.
func schedule(cj *batchv1.CronJob) string {
	if cj.Spec.TimeZone != nil {
		return "CRON_TZ=" + *cj.Spec.TimeZone + " " + cj.Spec.Schedule
	}
	return cj.Spec.Schedule
}

// trackActive drops finished and vanished Jobs from status.active and
// notes the last success.
func (c *cronJobController) trackActive(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job) {
	byUID := map[string]*batchv1.Job{}
	for _, j := range jobs {
		byUID[string(j.UID)] = j
	}
	var active []corev1.ObjectReference
	for _, ref := range cj.Status.Active {
		j, ok := byUID[string(ref.UID)]
		if !ok {
			// The informer may not show a Job just made: ask the API.
			if got, err := c.client.BatchV1().Jobs(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{}); err == nil && got.UID == ref.UID {
				j, ok = got, true
			}
		}
		if !ok {
			c.recorder.Eventf(cj, corev1.EventTypeNormal, "MissingJob", "Active job went missing: %v", ref.Name)
			continue
		}
		if f := finishedCondition(j); f != nil {
			c.recorder.Eventf(cj, corev1.EventTypeNormal, "SawCompletedJob", "Saw completed job: %s, condition: %s", j.Name, f.Type)
			if f.Type == batchv1.JobComplete && j.Status.CompletionTime != nil &&
				(cj.Status.LastSuccessfulTime == nil || cj.Status.LastSuccessfulTime.Before(j.Status.CompletionTime)) {
				cj.Status.LastSuccessfulTime = j.Status.CompletionTime
			}
			continue
		}
		active = append(active, ref)
	}
	// A Job made just before a failover may be missing from the list.
	for _, j := range jobs {
		if finishedCondition(j) == nil && !hasRef(active, j) {
			active = append(active, corev1.ObjectReference{Kind: "Job", APIVersion: "batch/v1", Namespace: j.Namespace, Name: j.Name, UID: j.UID, ResourceVersion: j.ResourceVersion})
		}
	}
	cj.Status.Active = active
}

func hasRef(refs []corev1.ObjectReference, j *batchv1.Job) bool {
	for _, r := range refs {
		if r.UID == j.UID {
			return true
		}
	}
	return false
}

// run starts the Job of the most recent missed time, if it may run.
func (c *cronJobController) run(ctx context.Context, cj *batchv1.CronJob, sched cron.Schedule, now time.Time) error {
	earliest := cj.CreationTimestamp.Time
	if cj.Status.LastScheduleTime != nil {
		earliest = cj.Status.LastScheduleTime.Time
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil {
		earliest = maxTime(earliest, now.Add(-time.Duration(*d)*time.Second))
	}
	var scheduled time.Time
	for t := sched.Next(earliest); !t.After(now); t = sched.Next(t) {
		scheduled = t
	}
	if scheduled.IsZero() {
		return nil
	}
	if len(cj.Status.Active) > 0 {
		switch cj.Spec.ConcurrencyPolicy {
		case batchv1.ForbidConcurrent:
			c.recorder.Eventf(cj, corev1.EventTypeNormal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
			return nil
		case batchv1.ReplaceConcurrent:
			policy := metav1.DeletePropagationBackground
			for _, ref := range cj.Status.Active {
				err := c.client.BatchV1().Jobs(ref.Namespace).Delete(ctx, ref.Name, metav1.DeleteOptions{PropagationPolicy: &policy})
				if err != nil && !apierrors.IsNotFound(err) {
					return fmt.Errorf("replace job %s: %w", ref.Name, err)
				}
				c.recorder.Eventf(cj, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted job %v", ref.Name)
			}
			cj.Status.Active = nil
		}
	}
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name:            fmt.Sprintf("%s-%d", cj.Name, scheduled.Unix()/60),
			Namespace:       cj.Namespace,
			Labels:          maps.Clone(cj.Spec.JobTemplate.Labels),
			Annotations:     withEntry(maps.Clone(cj.Spec.JobTemplate.Annotations), scheduledTimestampAnnotation, scheduled.Format(time.RFC3339)),
			OwnerReferences: []metav1.OwnerReference{controllerRef(cj, cronJobKind)},
		},
		Spec: *cj.Spec.JobTemplate.Spec.DeepCopy(),
	}
	created, err := c.client.BatchV1().Jobs(cj.Namespace).Create(ctx, job, metav1.CreateOptions{})
	switch {
	case apierrors.IsAlreadyExists(err):
		// This time has run already (before a failover).
	case err != nil:
		c.recorder.Eventf(cj, corev1.EventTypeWarning, "FailedCreate", "Error creating job: %v", err)
		return fmt.Errorf("create job %s: %w", job.Name, err)
	default:
		c.recorder.Eventf(cj, corev1.EventTypeNormal, "SuccessfulCreate", "Created job %v", created.Name)
		cj.Status.Active = append(cj.Status.Active, corev1.ObjectReference{Kind: "Job", APIVersion: "batch/v1",
			Namespace: created.Namespace, Name: created.Name, UID: created.UID, ResourceVersion: created.ResourceVersion})
	}
	cj.Status.LastScheduleTime = &metav1.Time{Time: scheduled}
	return nil
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// cleanup deletes the oldest finished Jobs beyond the history limits.
func (c *cronJobController) cleanup(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job) error {
	var ok, failed []*batchv1.Job
	for _, j := range jobs {
		if f := finishedCondition(j); f != nil && j.DeletionTimestamp == nil {
			if f.Type == batchv1.JobComplete {
				ok = append(ok, j)
			} else {
				failed = append(failed, j)
			}
		}
	}
	var errs []error
	for _, h := range []struct {
		jobs  []*batchv1.Job
		limit int32
	}{{ok, ptr.Deref(cj.Spec.SuccessfulJobsHistoryLimit, 3)}, {failed, ptr.Deref(cj.Spec.FailedJobsHistoryLimit, 1)}} {
		if len(h.jobs) <= int(h.limit) {
			continue
		}
		sort.Slice(h.jobs, func(i, j int) bool { return h.jobs[i].CreationTimestamp.Before(&h.jobs[j].CreationTimestamp) })
		policy := metav1.DeletePropagationBackground
		for _, j := range h.jobs[:len(h.jobs)-int(h.limit)] {
			err := c.client.BatchV1().Jobs(j.Namespace).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &policy, Preconditions: &metav1.Preconditions{UID: &j.UID}})
			if err != nil && !apierrors.IsNotFound(err) {
				errs = append(errs, fmt.Errorf("delete old job %s: %w", j.Name, err))
				continue
			}
			c.recorder.Eventf(cj, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted job %v", j.Name)
		}
	}
	return errors.Join(errs...)
}

func (c *cronJobController) writeStatus(ctx context.Context, old, cj *batchv1.CronJob) error {
	return writeStatus(ctx, c.client.BatchV1().CronJobs(cj.Namespace), cj, old.Status, cj.Status)
}
