package ctrl

import (
	"context"
	"io"
	"log/slog"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/record"
)

// quietConfig is the Config a controller under test needs: an event
// broadcaster (shut down with the test) and a logger that discards.
func quietConfig(t *testing.T) Config {
	broadcaster := record.NewBroadcaster()
	t.Cleanup(broadcaster.Shutdown)
	return Config{Events: broadcaster, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// A sync that panics fails its key, which is retried, instead of
// crashing the server.
func TestPanickingSyncIsRetried(t *testing.T) {
	calls := 0
	c := newController("test", quietConfig(t),
		func(context.Context, string) error {
			calls++
			panic("a bug")
		})
	defer c.queue.ShutDown()
	c.queue.Add("ns/name")
	if !c.next(context.Background()) {
		t.Fatal("the queue shut down")
	}
	if calls != 1 || c.queue.NumRequeues("ns/name") != 1 {
		t.Fatalf("after a panicking sync: %d calls, %d requeues; want 1 and 1", calls, c.queue.NumRequeues("ns/name"))
	}
}

func TestGCOwnerKeyRoundTrip(t *testing.T) {
	for _, k := range []gcOwner{
		{uid: "u1", gvr: schema.GroupVersionResource{Group: "apps", Version: "v1", Resource: "replicasets"}, namespace: "ns", name: "web"},
		{uid: "u2", gvr: schema.GroupVersionResource{Version: "v1", Resource: "nodes"}, name: "n1"},
		{uid: "u3", name: "of-a-kind-not-watched"},
		{uid: "a/uid", gvr: schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, namespace: "ns", name: "a/name"},
	} {
		got, err := parseGCOwner(k.String())
		if err != nil || got != k {
			t.Errorf("parseGCOwner(%q) = %+v, %v; want %+v", k.String(), got, err, k)
		}
	}
	if _, err := parseGCOwner(`["u1","apps","v1"]`); err == nil {
		t.Error("a key of three parts parsed")
	}
}

func TestWithConditionTaints(t *testing.T) {
	node := &corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
		{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionTrue},
		{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse},
	}}}
	other := corev1.Taint{Key: "dedicated", Effect: corev1.TaintEffectNoSchedule}
	disk := corev1.Taint{Key: corev1.TaintNodeDiskPressure, Effect: corev1.TaintEffectNoSchedule}
	got := withConditionTaints(node, []corev1.Taint{other, disk})
	want := []corev1.Taint{other, {Key: corev1.TaintNodeMemoryPressure, Effect: corev1.TaintEffectNoSchedule}}
	if !equality.Semantic.DeepEqual(got, want) {
		t.Fatalf("taints %+v, want %+v", got, want)
	}
	if again := withConditionTaints(node, got); !equality.Semantic.DeepEqual(again, want) {
		t.Fatalf("not idempotent: %+v", again)
	}
}
