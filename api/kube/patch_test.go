package kube

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Thirty copies of a growing array once took a server from 136 MiB to
// 1.5 GiB; the copies are now bounded, and so are the operations.
func TestJSONPatchBombsRefused(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a", Annotations: map[string]string{"x": strings.Repeat("x", 1000)}}}
	ops := []string{`{"op":"add","path":"/data","value":{"a":[{"op":"x"}]}}`}
	for i := range 30 {
		ops = append(ops, fmt.Sprintf(`{"op":"copy","from":"/metadata/annotations","path":"/metadata/annotations/c%d"}`, i))
	}
	p := newPatcher()
	_, err := p.apply(t.Context(), types.JSONPatchType, cm, []byte("["+strings.Join(ops, ",")+"]"))
	if !apierrors.IsRequestEntityTooLargeError(err) {
		t.Fatalf("copy bomb: %v, want 413", err)
	}

	many := strings.TrimSuffix(strings.Repeat(`{"op":"test","path":"/metadata/name","value":"a"},`, maxJSONPatchOperations+1), ",")
	_, err = p.apply(t.Context(), types.JSONPatchType, cm, []byte("["+many+"]"))
	if se, ok := err.(apierrors.APIStatus); !ok || se.Status().Code != http.StatusRequestEntityTooLarge || !strings.Contains(err.Error(), "maximum operations") {
		t.Fatalf("%d operations: %v", maxJSONPatchOperations+1, err)
	}

	out, err := p.apply(t.Context(), types.JSONPatchType, cm, []byte(`[{"op":"copy","from":"/metadata/name","path":"/metadata/generateName"}]`))
	if err != nil || !strings.Contains(string(out), `"generateName":"a"`) {
		t.Fatalf("a small copy: %s, %v", out, err)
	}
}

// Patches wait for one of the patcher's slots, and a request whose
// context ends first, waiting or patching, gets a timeout.
func TestPatcherBoundedAndGivesUp(t *testing.T) {
	p := &patcher{slots: make(chan struct{}, 1)}
	p.slots <- struct{}{} // a patch that does not finish
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	_, err := p.apply(ctx, types.MergePatchType, cm, []byte(`{"data":{"k":"v"}}`))
	if !apierrors.IsTimeout(err) {
		t.Fatalf("a patch with every slot taken: %v, want a timeout", err)
	}
	<-p.slots
	out, err := p.apply(t.Context(), types.MergePatchType, cm, []byte(`{"data":{"k":"v"}}`))
	if err != nil || !strings.Contains(string(out), `"k":"v"`) || len(p.slots) != 0 {
		t.Fatalf("with a slot free: %s %v, %d slots taken after", out, err, len(p.slots))
	}
}
