package ctrl

import (
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	"k8s.io/utils/ptr"
)

func TestIndexesRoundTrip(t *testing.T) {
	for in, want := range map[string]string{"": "", "3": "3", "0,1": "0,1", "0-2,5,7,8,10-12": "0-2,5,7,8,10-12", "1,2,3": "1-3"} {
		if got := formatIndexes(parseIndexes(in)); got != want {
			t.Errorf("formatIndexes(parseIndexes(%q)) = %q, want %q", in, got, want)
		}
	}
}

func TestSuccessPolicyRule(t *testing.T) {
	j := &batchv1.Job{Spec: batchv1.JobSpec{SuccessPolicy: &batchv1.SuccessPolicy{Rules: []batchv1.SuccessPolicyRule{
		{SucceededIndexes: ptr.To("0,4")},
		{SucceededIndexes: ptr.To("1-3"), SucceededCount: ptr.To[int32](2)},
		{SucceededCount: ptr.To[int32](4)},
	}}}}
	for completed, want := range map[string]int{"": -1, "0": -1, "0,4": 0, "1,3": 1, "0,1,5,6": 2, "2,5,6": -1} {
		j.Status.CompletedIndexes = completed
		if got := successPolicyRule(j); got != want {
			t.Errorf("completed %q: rule %d, want %d", completed, got, want)
		}
	}
}

func TestBackoff(t *testing.T) {
	for failures, want := range map[int]time.Duration{0: 0, 1: 10 * time.Second, 2: 20 * time.Second, 30: 6 * time.Minute} {
		if got := backoff(failures); got != want {
			t.Errorf("backoff(%d) = %v, want %v", failures, got, want)
		}
	}
}
