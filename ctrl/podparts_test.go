package ctrl

import (
	"reflect"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/utils/ptr"
)

func partsPod(app, cpu string, seconds int64) *corev1.Pod {
	pod := &corev1.Pod{}
	pod.Labels = map[string]string{"app": app, "tier": "web"}
	pod.Spec.Containers = []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(cpu), corev1.ResourceMemory: resource.MustParse("128Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
	}}}
	pod.Spec.Tolerations = []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To(seconds)},
	}
	return pod
}

func sameMap(a, b any) bool {
	return reflect.ValueOf(a).Pointer() == reflect.ValueOf(b).Pointer()
}

// Pods that hold equal parts end up sharing one copy of each; pods that
// differ keep their own; what every pod holds is unchanged.
func TestPodPartsShareEqualParts(t *testing.T) {
	p := newPodParts()
	first, second, other := partsPod("a", "100m", 300), partsPod("a", "100m", 300), partsPod("b", "200m", 60)
	want := []*corev1.Pod{first.DeepCopy(), second.DeepCopy(), other.DeepCopy()}
	for i, pod := range []*corev1.Pod{first, second, other} {
		p.share(pod)
		if !equality.Semantic.DeepEqual(pod, want[i]) {
			t.Fatalf("pod %d changed: %+v, want %+v", i, pod, want[i])
		}
	}
	fc, sc, oc := first.Spec.Containers[0].Resources, second.Spec.Containers[0].Resources, other.Spec.Containers[0].Resources
	if !sameMap(first.Labels, second.Labels) || !sameMap(fc.Requests, sc.Requests) || !sameMap(fc.Limits, sc.Limits) ||
		&first.Spec.Tolerations[0] != &second.Spec.Tolerations[0] {
		t.Error("equal parts are not shared")
	}
	if sameMap(first.Labels, other.Labels) || sameMap(fc.Requests, oc.Requests) || &first.Spec.Tolerations[0] == &other.Spec.Tolerations[0] {
		t.Error("different parts are shared")
	}
	if !sameMap(fc.Limits, oc.Limits) {
		t.Error("equal limits of pods that differ elsewhere are not shared")
	}
}

// A nil part stays nil and an empty one empty: a deep comparison tells
// them apart.
func TestPodPartsLeaveEmptyParts(t *testing.T) {
	p := newPodParts()
	withNil, withEmpty := &corev1.Pod{}, &corev1.Pod{}
	withEmpty.Labels = map[string]string{}
	p.share(withNil)
	p.share(withEmpty)
	if withNil.Labels != nil || withEmpty.Labels == nil {
		t.Fatalf("labels after sharing: %v and %v, want nil and empty", withNil.Labels, withEmpty.Labels)
	}
}

func TestPodPartsTablesAreBounded(t *testing.T) {
	p := newPodParts()
	for i := range maxPodParts + 10 {
		p.share(partsPod(strconv.Itoa(i), "100m", 300))
	}
	if n := len(p.labels); n > maxPodParts {
		t.Fatalf("%d label sets kept, want at most %d", n, maxPodParts)
	}
}
