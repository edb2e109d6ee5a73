package kube

import (
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The Protobuf fast path must produce exactly what encoding the decoded
// objects would: a client decodes the same objects, resourceVersion
// included.
func TestProtobufFastPathMatchesTheCodec(t *testing.T) {
	o, cmRes := storelessObjects(t, corev1.SchemeGroupVersion.WithResource("configmaps"))
	var values [][]byte
	var revs []uint64
	var want []corev1.ConfigMap
	for i := range 3 {
		cm := &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: "cm-" + strconv.Itoa(i), Namespace: "default", UID: "u", Generation: 0,
				Labels: map[string]string{"a": "b"}, Annotations: map[string]string{"c": "d"}, Finalizers: []string{"f"},
				ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "m", Operation: metav1.ManagedFieldsOperationUpdate}}},
			Data: map[string]string{"k": "v"}, BinaryData: map[string][]byte{"bin": {0, 1, 2}},
		}
		v, err := o.encode(cmRes, cm)
		if err != nil {
			t.Fatal(err)
		}
		rev := uint64(100 + i)
		values, revs = append(values, v), append(revs, rev)
		cm.ResourceVersion = strconv.FormatUint(rev, 10)
		cm.TypeMeta = metav1.TypeMeta{}
		want = append(want, *cm)
	}
	lm := metav1.ListMeta{ResourceVersion: "200", Continue: "token"}
	b, err := protoList(corev1.SchemeGroupVersion.WithKind("ConfigMapList"), lm, values, revs, func(i int, err error) { t.Errorf("value %d: %v", i, err) })
	if err != nil {
		t.Fatal(err)
	}
	var got corev1.ConfigMapList
	if _, _, err := o.codec.Decode(b, nil, &got); err != nil {
		t.Fatal(err)
	}
	for i := range got.Items {
		got.Items[i].TypeMeta = metav1.TypeMeta{}
	}
	if !apiequality.Semantic.DeepEqual(got.Items, want) || got.ResourceVersion != "200" || got.Continue != "token" {
		t.Fatalf("list decoded as\n%+v\nwant\n%+v", got, want)
	}

	one, err := protoObject(corev1.SchemeGroupVersion.WithKind("ConfigMap"), values[1], revs[1])
	if err != nil {
		t.Fatal(err)
	}
	var cm corev1.ConfigMap
	gvk := schema.GroupVersionKind{}
	if _, k, err := o.codec.Decode(one, &gvk, &cm); err != nil || k.Kind != "ConfigMap" {
		t.Fatalf("object: %v %v", err, k)
	}
	cm.TypeMeta = metav1.TypeMeta{}
	if !apiequality.Semantic.DeepEqual(cm, want[1]) {
		t.Fatalf("object decoded as %+v, want %+v", cm, want[1])
	}
	if _, err := storedMessage([]byte("{}")); err == nil {
		t.Fatal("JSON accepted as a stored Protobuf object")
	}
}
