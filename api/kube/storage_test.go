package kube

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// storelessObjects is the objects layer without a store or a node, for
// tests of what it encodes and decodes, and the served resource gvr.
func storelessObjects(t *testing.T, gvr schema.GroupVersionResource) (*objects, *resource.Resource) {
	t.Helper()
	scheme, err := newScheme()
	if err != nil {
		t.Fatal(err)
	}
	r, ok := resource.Builtin().Lookup(gvr)
	if !ok {
		t.Fatalf("%s is not served", gvr)
	}
	return newObjects(nil, nil, scheme, nil), r
}

// A shared object is decoded once per stored version: the same revision
// and bytes give the same object; a write, or other bytes at that
// revision (a restored snapshot), give the new one.
func TestSharedObjectsFollowTheRevision(t *testing.T) {
	o, nsRes := storelessObjects(t, corev1.SchemeGroupVersion.WithResource("namespaces"))
	stored := func(phase corev1.NamespacePhase, rev uint64) fsm.KV {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}, Status: corev1.NamespaceStatus{Phase: phase}}
		v, err := o.encode(nsRes, ns)
		if err != nil {
			t.Fatal(err)
		}
		return fsm.KV{Key: key(nsRes, "", "team"), ModRevision: rev, Value: v}
	}
	get := func(kv fsm.KV) *corev1.Namespace {
		obj, err := o.decodeShared(nsRes, kv)
		if err != nil {
			t.Fatal(err)
		}
		return obj.(*corev1.Namespace)
	}

	active := stored(corev1.NamespaceActive, 5)
	first := get(active)
	if again := get(active); again != first {
		t.Fatal("the same revision was decoded twice")
	}
	if other := get(stored(corev1.NamespaceTerminating, 5)); other == first || other.Status.Phase != corev1.NamespaceTerminating {
		t.Fatal("other bytes at a revision seen before gave the object decoded before")
	}
	terminating := get(stored(corev1.NamespaceTerminating, 9))
	if terminating == first || terminating.Status.Phase != corev1.NamespaceTerminating || terminating.ResourceVersion != "9" {
		t.Fatalf("after a write: phase %s at %s", terminating.Status.Phase, terminating.ResourceVersion)
	}
}
