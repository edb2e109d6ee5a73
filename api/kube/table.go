package kube

import (
	"encoding/json"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

var nameColumn = metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name",
	Description: "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"}

// table renders objects as the Table kubectl prints, with the resource's
// columns; includeObject (None, Metadata, Object) says what each row
// carries, as in kube-apiserver.
func (h *Handler) table(req *request, objs []runtime.Object, lm metav1.ListMeta, headers bool) (*metav1.Table, error) {
	include := metav1.IncludeObjectPolicy(req.URL.Query().Get("includeObject"))
	switch include {
	case "":
		include = metav1.IncludeMetadata
	case metav1.IncludeNone, metav1.IncludeMetadata, metav1.IncludeObject:
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("includeObject must be one of None, Metadata or Object, not %q", include))
	}
	t := &metav1.Table{ListMeta: lm, Rows: []metav1.TableRow{}}
	t.APIVersion, t.Kind = "meta.k8s.io/v1", "Table"
	// The name comes first unless the resource places it (events).
	ownName := false
	for _, c := range req.res.Columns {
		ownName = ownName || c.Name == nameColumn.Name
	}
	if headers {
		if !ownName {
			t.ColumnDefinitions = append(t.ColumnDefinitions, nameColumn)
		}
		for _, c := range req.res.Columns {
			t.ColumnDefinitions = append(t.ColumnDefinitions, c.TableColumnDefinition)
		}
	}
	for _, obj := range objs {
		var row metav1.TableRow
		if !ownName {
			row.Cells = append(row.Cells, accessor(obj).GetName())
		}
		for _, c := range req.res.Columns {
			row.Cells = append(row.Cells, c.Cell(obj))
		}
		var embedded runtime.Object
		switch include {
		case metav1.IncludeMetadata:
			embedded = partialMetadata(obj)
		case metav1.IncludeObject:
			obj.GetObjectKind().SetGroupVersionKind(req.res.GroupVersionKind())
			embedded = obj
		}
		if embedded != nil {
			b, err := json.Marshal(embedded)
			if err != nil {
				return nil, err
			}
			row.Object = runtime.RawExtension{Raw: b}
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}
