package ctrl

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"
)

// An Indexed Job counts completion indexes, not pods, as Kubernetes'
// does: status.completedIndexes records each index once its first pod
// succeeds, so an index whose pod is deleted afterwards (by pod GC, by a
// user) is never run again, and a second success of an index counts
// nothing. With backoffLimitPerIndex, each index has its own failures
// (carried from pod to pod in the job-index-failure-count annotation) and
// backoff; an index past its limit, or failed by a FailIndex rule, goes to
// status.failedIndexes and runs no more.

func indexed(j *batchv1.Job) bool {
	return ptr.Deref(j.Spec.CompletionMode, batchv1.NonIndexedCompletion) == batchv1.IndexedCompletion
}

// completionIndex is the index a pod of the Job runs, if it is one of the
// Job's.
func completionIndex(j *batchv1.Job, p *corev1.Pod) (int, bool) {
	i, err := strconv.Atoi(p.Annotations[batchv1.JobCompletionIndexAnnotation])
	return i, err == nil && i >= 0 && i < int(ptr.Deref(j.Spec.Completions, 0))
}

// parseIndexes reads an interval list such as "1,3-5" (completedIndexes,
// a success policy's succeededIndexes); what does not parse is skipped,
// the API having refused it.
func parseIndexes(s string) sets.Set[int] {
	out := sets.New[int]()
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		last := first
		if isRange {
			if last, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for i := first; i <= last; i++ {
			out.Insert(i)
		}
	}
	return out
}

// formatIndexes writes indexes as Kubernetes does: ascending, runs of
// three or more as ranges ("1,3-5"), pairs as two.
func formatIndexes(indexes sets.Set[int]) string {
	list := sets.List(indexes)
	var parts []string
	for start := 0; start < len(list); {
		end := start
		for end+1 < len(list) && list[end+1] == list[end]+1 {
			end++
		}
		switch end - start {
		case 0:
			parts = append(parts, strconv.Itoa(list[start]))
		case 1:
			parts = append(parts, strconv.Itoa(list[start]), strconv.Itoa(list[end]))
		default:
			parts = append(parts, fmt.Sprintf("%d-%d", list[start], list[end]))
		}
		start = end + 1
	}
	return strings.Join(parts, ",")
}

// successPolicyRule is the index of the first rule of the Job's success
// policy that its completed indexes meet, -1 if none does.
func successPolicyRule(j *batchv1.Job) int {
	if j.Spec.SuccessPolicy == nil {
		return -1
	}
	completed := parseIndexes(j.Status.CompletedIndexes)
	for i, r := range j.Spec.SuccessPolicy.Rules {
		done, want := completed.Len(), 0
		if r.SucceededIndexes != nil {
			listed := parseIndexes(*r.SucceededIndexes)
			done, want = listed.Intersection(completed).Len(), listed.Len()
		}
		if r.SucceededCount != nil {
			want = int(*r.SucceededCount)
		}
		if (r.SucceededIndexes != nil || r.SucceededCount != nil) && done >= want {
			return i
		}
	}
	return -1
}

// indexFailures is what an index's failed pods say: how many failures it
// has had and when the last one ended.
type indexFailures struct {
	count int
	last  time.Time
}

// failuresByIndex reads the failures of each index of a Job with
// backoffLimitPerIndex from its failed pods: each pod carries the
// failures of its index before it, and failures the pod failure policy
// ignores do not count.
func failuresByIndex(j *batchv1.Job, pods []*corev1.Pod) map[int]indexFailures {
	out := map[int]indexFailures{}
	for _, p := range pods {
		i, ok := completionIndex(j, p)
		action, _ := failurePolicyAction(j, p)
		if !ok || !podFailed(p) || action == batchv1.PodFailurePolicyActionIgnore {
			continue
		}
		before, _ := strconv.Atoi(p.Annotations[batchv1.JobIndexFailureCountAnnotation])
		f := out[i]
		f.count = max(f.count, before+1)
		if t := finishedAt(p); t.After(f.last) {
			f.last = t
		}
		out[i] = f
	}
	return out
}

// indexFailed says whether a failed pod fails its index for good.
func indexFailed(j *batchv1.Job, p *corev1.Pod) bool {
	if action, _ := failurePolicyAction(j, p); action == batchv1.PodFailurePolicyActionFailIndex {
		return true
	}
	before, _ := strconv.Atoi(p.Annotations[batchv1.JobIndexFailureCountAnnotation])
	return before+1 > int(*j.Spec.BackoffLimitPerIndex)
}

// maxFailedIndexesExceeded says the Job has more failed indexes than its
// maxFailedIndexes allows.
func maxFailedIndexesExceeded(j *batchv1.Job) bool {
	return j.Spec.MaxFailedIndexes != nil && int32(parseIndexes(ptr.Deref(j.Status.FailedIndexes, "")).Len()) > *j.Spec.MaxFailedIndexes
}

// indexesFailed says every index of a Job with backoffLimitPerIndex has
// either completed or failed, and some have failed, with none running.
func indexesFailed(j *batchv1.Job) bool {
	failed := parseIndexes(ptr.Deref(j.Status.FailedIndexes, ""))
	return j.Spec.BackoffLimitPerIndex != nil && j.Status.Active == 0 && failed.Len() > 0 &&
		int32(parseIndexes(j.Status.CompletedIndexes).Len()+failed.Len()) >= ptr.Deref(j.Spec.Completions, 0)
}
