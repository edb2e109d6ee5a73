package resource

import (
	"reflect"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

// Every entry's constructors must make its kind, or the handler would
// store and serve the wrong type.
func TestBuiltinEntriesMakeTheirKinds(t *testing.T) {
	reg := Builtin()
	for _, gv := range reg.GroupVersions() {
		for _, r := range reg.In(gv) {
			if got := reflect.TypeOf(r.New()).Elem().Name(); got != r.Kind {
				t.Errorf("%s: New makes %s", r.Name, got)
			}
			if got := reflect.TypeOf(r.NewList()).Elem().Name(); got != r.Kind+"List" {
				t.Errorf("%s: NewList makes %s", r.Name, got)
			}
			if r.Status && !reflect.ValueOf(r.New()).Elem().FieldByName("Status").IsValid() {
				t.Errorf("%s has a status subresource but no status", r.Name)
			}
			for _, c := range r.Columns {
				c.Cell(r.New()) // must not panic on an empty object
			}
		}
	}
}

func TestDeploymentDefaultsAndValidation(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "d"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "other"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	defaultDeployment(d)
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.RollingUpdate.MaxSurge.StrVal != "25%" || *d.Spec.RevisionHistoryLimit != 10 {
		t.Fatalf("defaults: %+v", d.Spec)
	}
	if c := d.Spec.Template.Spec.Containers[0]; c.ImagePullPolicy != corev1.PullAlways || c.TerminationMessagePath != "/dev/termination-log" {
		t.Fatalf("container defaults: %+v", c)
	}
	errs := validateDeployment(d, nil)
	if len(errs) != 1 || errs[0].Field != "spec.template.metadata.labels" {
		t.Fatalf("a selector that misses its template: %v", errs)
	}
	d.Spec.Template.Labels["app"] = "d"
	if errs := validateDeployment(d, nil); len(errs) != 0 {
		t.Fatalf("valid deployment: %v", errs)
	}
	old := d.DeepCopy()
	d.Spec.Selector.MatchLabels["app"] = "e"
	if errs := validateDeployment(d, old); len(errs) == 0 {
		t.Fatal("a changed selector was accepted")
	}
}

func TestPodStatusColumn(t *testing.T) {
	for _, tc := range []struct {
		pod  corev1.Pod
		want string
	}{
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, "Pending"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}}, "CrashLoopBackOff"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{
			{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}}}, "Completed"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "Terminating"},
	} {
		if got := PodStatus(&tc.pod); got != tc.want {
			t.Errorf("PodStatus = %q, want %q", got, tc.want)
		}
	}
}

func TestSpecChangedIgnoresMetadataAndStatus(t *testing.T) {
	a := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Paused: true}}
	b := a.DeepCopy()
	b.Labels = map[string]string{"x": "y"}
	b.Status.Replicas = 3
	if SpecChanged(b, a) {
		t.Fatal("labels and status counted as a spec change")
	}
	b.Spec.Paused = false
	if !SpecChanged(b, a) {
		t.Fatal("spec change missed")
	}
}

func TestControllerRevisionValidationAndColumns(t *testing.T) {
	r := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "ds-1", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "agent", Controller: ptr.To(true)}}}, Revision: -1}
	errs := validateControllerRevision(r, nil)
	if len(errs) != 2 || errs[0].Field != "data" || errs[1].Field != "revision" {
		t.Fatalf("no data and a negative revision: %v", errs)
	}
	r.Revision, r.Data.Raw = 2, []byte(`{"spec":{}}`)
	if errs := validateControllerRevision(r, nil); len(errs) != 0 {
		t.Fatalf("valid revision: %v", errs)
	}
	renumbered := r.DeepCopy()
	renumbered.Revision = 3
	if errs := validateControllerRevision(renumbered, r); len(errs) != 0 {
		t.Fatalf("a new number was refused: %v", errs)
	}
	changed := r.DeepCopy()
	changed.Data.Raw = []byte(`{"spec":{"x":1}}`)
	if errs := validateControllerRevision(changed, r); len(errs) != 1 || errs[0].Field != "data" {
		t.Fatalf("changed data: %v", errs)
	}
	if got := controllerRevisionColumns[0].Cell(r); got != "daemonset.apps/agent" {
		t.Fatalf("controller column %q", got)
	}
}

func TestCountIndexes(t *testing.T) {
	for list, want := range map[string]int64{"0": 1, "0,2-4": 4, "1,2": 2} {
		if n, msg := countIndexes(list, 5); n != want || msg != "" {
			t.Errorf("countIndexes(%q) = %d, %q; want %d", list, n, msg, want)
		}
	}
	for _, bad := range []string{"2-1", "1,1", "0-2,2", "5", "x", "-1", ""} {
		if _, msg := countIndexes(bad, 5); msg == "" {
			t.Errorf("countIndexes(%q) accepted it", bad)
		}
	}
}
