package kube

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

func (h *Handler) get(w http.ResponseWriter, req *request) error {
	c, err := readConsistency(req.URL.Query().Get("resourceVersion"))
	if err != nil {
		return err
	}
	if err := h.objects.sync(req.Context(), c); err != nil {
		return err
	}
	cur, err := h.objects.get(req.res, req.namespace, req.name)
	if err != nil {
		return err
	}
	obj := cur.obj
	if req.sub == "scale" {
		return h.writeResult(w, req, http.StatusOK, scaleOf(req.res, obj))
	}
	return h.writeResult(w, req, http.StatusOK, obj)
}

// writeResult writes one object as the client asked: itself, its table
// row or its metadata.
func (h *Handler) writeResult(w http.ResponseWriter, req *request, code int, obj runtime.Object) error {
	switch req.out.kind {
	case asTable:
		t, err := h.table(req, []runtime.Object{obj}, metav1.ListMeta{ResourceVersion: accessor(obj).GetResourceVersion()}, true)
		if err != nil {
			return err
		}
		obj = t
	case asPartialMetadata:
		obj = partialMetadata(obj)
	default:
		if obj.GetObjectKind().GroupVersionKind().Empty() {
			obj.GetObjectKind().SetGroupVersionKind(req.res.GroupVersionKind())
		}
	}
	h.writeObject(w, req.out, code, obj)
	return nil
}

// partialMetadata is obj's metadata as kube-apiserver sends it for
// as=PartialObjectMetadata(List) and in Table rows: of kind
// meta.k8s.io/v1 PartialObjectMetadata, which a metadata client decodes
// whatever the resource.
func partialMetadata(obj runtime.Object) *metav1.PartialObjectMetadata {
	om := reflect.ValueOf(obj).Elem().FieldByName("ObjectMeta").Addr().Interface().(*metav1.ObjectMeta)
	p := &metav1.PartialObjectMetadata{ObjectMeta: *om.DeepCopy()}
	p.APIVersion, p.Kind = metav1.SchemeGroupVersion.String(), "PartialObjectMetadata"
	return p
}

// selector is a list or watch's label and field selection.
type selector struct {
	labels labels.Selector
	fields fields.Selector
}

func (h *Handler) parseSelector(req *request) (selector, error) {
	q := req.URL.Query()
	ls, err := labels.Parse(q.Get("labelSelector"))
	if err != nil {
		return selector{}, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
	}
	fs, err := fields.ParseSelector(q.Get("fieldSelector"))
	if err != nil {
		return selector{}, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
	}
	// Only fields the resource can select on are allowed, as in
	// kube-apiserver; check against a zero object's field set.
	known := req.res.SelectableFields(req.res.New(), accessor(req.res.New()))
	for _, r := range fs.Requirements() {
		if _, ok := known[r.Field]; !ok {
			return selector{}, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", r.Field))
		}
	}
	return selector{labels: ls, fields: fs}, nil
}

func (s selector) matches(r *resource.Resource, obj runtime.Object) bool {
	m := accessor(obj)
	if !s.labels.Empty() && !s.labels.Matches(labels.Set(m.GetLabels())) {
		return false
	}
	return s.fields.Empty() || s.fields.Matches(r.SelectableFields(obj, m))
}

// continueToken is the opaque token of the next page: the revision of the
// listing and the key to continue after, as kube-apiserver encodes it.
type continueToken struct {
	APIVersion      string `json:"v"`
	ResourceVersion uint64 `json:"rv"`
	StartKey        string `json:"start"`
}

func encodeContinue(rev uint64, after string) string {
	b, _ := json.Marshal(continueToken{APIVersion: "meta.k8s.io/v1", ResourceVersion: rev, StartKey: after})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(s string) (continueToken, error) {
	var t continueToken
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, &t)
	}
	if err != nil || t.APIVersion != "meta.k8s.io/v1" || t.ResourceVersion == 0 {
		return t, apierrors.NewBadRequest("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
	}
	return t, nil
}

// listOptions are a list request's paging and consistency.
type listOptions struct {
	consistency consistency
	// revision lists at exactly this revision (0: the latest).
	revision uint64
	after    string
	limit    int
}

// parseList interprets resourceVersion, resourceVersionMatch, limit and
// continue as kube-apiserver does.
func parseList(req *request) (listOptions, error) {
	q := req.URL.Query()
	var o listOptions
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 0 {
			return o, apierrors.NewBadRequest(fmt.Sprintf("invalid limit %q", l))
		}
		o.limit = n
	}
	rv, match := q.Get("resourceVersion"), metav1.ResourceVersionMatch(q.Get("resourceVersionMatch"))
	if token := q.Get("continue"); token != "" {
		if rv != "" && rv != "0" {
			return o, apierrors.NewBadRequest("specifying resource version is not allowed when using continue")
		}
		t, err := decodeContinue(token)
		if err != nil {
			return o, err
		}
		o.revision, o.after = t.ResourceVersion, t.StartKey
		return o, nil
	}
	switch match {
	case "":
		c, err := readConsistency(rv)
		if err != nil {
			return o, err
		}
		o.consistency = c
		// Legacy semantics: a limited list at a given version is exact.
		if o.limit > 0 && c.minRevision > 0 {
			o.revision = c.minRevision
		}
	case metav1.ResourceVersionMatchNotOlderThan:
		if rv == "" {
			return o, apierrors.NewBadRequest("resourceVersionMatch is forbidden unless resourceVersion is provided")
		}
		c, err := readConsistency(rv)
		o.consistency = c
		return o, err
	case metav1.ResourceVersionMatchExact:
		if rv == "" || rv == "0" {
			return o, apierrors.NewBadRequest("resourceVersionMatch \"Exact\" is forbidden for resourceVersion \"0\" or unset")
		}
		n, err := parseRV(rv)
		o.revision = n
		return o, err
	default:
		return o, apierrors.NewBadRequest(fmt.Sprintf("unsupported resourceVersionMatch %q", match))
	}
	return o, nil
}

// listObjects reads the matching objects of a list request and the
// listing's metadata.
func (h *Handler) listObjects(req *request, sel selector) ([]runtime.Object, metav1.ListMeta, error) {
	var objs []runtime.Object
	lm, err := h.listKeys(req, sel, func(kv fsm.KV, obj runtime.Object) error {
		objs = append(objs, obj)
		return nil
	}, true)
	return objs, lm, err
}

// listKeys reads a list request's matching keys in order and gives each to
// add, decoded unless decode is false (only without a selector), and
// returns the listing's metadata.
func (h *Handler) listKeys(req *request, sel selector, add func(fsm.KV, runtime.Object) error, decode bool) (metav1.ListMeta, error) {
	opts, err := parseList(req)
	if err != nil {
		return metav1.ListMeta{}, err
	}
	if err := h.objects.sync(req.Context(), opts.consistency); err != nil {
		return metav1.ListMeta{}, err
	}
	pfx := prefix(req.res, req.namespace)
	var lm metav1.ListMeta
	count := 0
	after := ""
	if opts.after != "" {
		after = pfx + opts.after
	}
	// Objects that cannot be decoded are collected, and the listing
	// fails naming them all, as kube-apiserver's does.
	var bad unreadable
	finish := func() (metav1.ListMeta, error) { return lm, bad.err(req.res, pfx) }
	// Filtering happens after reading, so a page may need several reads
	// to fill, as kube-apiserver's storage does.
	for {
		page := opts.limit - count
		if opts.limit > 0 && (!sel.labels.Empty() || !sel.fields.Empty()) {
			page = max(page, 64)
		}
		res, err := h.objects.store.List(req.Context(), fsm.ListOptions{Prefix: pfx, After: after, Limit: page, Revision: opts.revision})
		switch {
		case errors.Is(err, fsm.ErrCompacted) && opts.after != "":
			return lm, apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.")
		case errors.Is(err, fsm.ErrCompacted):
			return lm, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", opts.revision, h.objects.store.Applied()))
		case errors.Is(err, fsm.ErrFutureRevision):
			return lm, apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", opts.revision, h.objects.store.Applied()), 1)
		case err != nil:
			return lm, err
		}
		lm.ResourceVersion = strconv.FormatUint(res.Revision, 10)
		opts.revision = res.Revision
		for i, kv := range res.KVs {
			after = kv.Key
			var obj runtime.Object
			if decode {
				if obj, err = h.objects.decode(req.res, kv); err != nil {
					bad.add(kv.Key, err)
					continue
				}
				if !sel.matches(req.res, obj) {
					continue
				}
			}
			if err := add(kv, obj); err != nil {
				return lm, err
			}
			if count++; opts.limit > 0 && count == opts.limit {
				if i < len(res.KVs)-1 || res.More {
					lm.Continue = encodeContinue(res.Revision, strings.TrimPrefix(kv.Key, pfx))
				}
				return finish()
			}
		}
		if !res.More {
			return finish()
		}
	}
}

func (h *Handler) list(w http.ResponseWriter, req *request) error {
	sel, err := h.parseSelector(req)
	if err != nil {
		return err
	}
	if req.out.kind == asObject && req.out.info.MediaType == mediaProtobuf && sel.labels.Empty() && sel.fields.Empty() {
		return h.listProtobuf(w, req, sel)
	}
	objs, lm, err := h.listObjects(req, sel)
	if err != nil {
		return err
	}
	switch req.out.kind {
	case asTable:
		t, err := h.table(req, objs, lm, true)
		if err != nil {
			return err
		}
		h.writeObject(w, req.out, http.StatusOK, t)
	case asPartialMetadata:
		l := &metav1.PartialObjectMetadataList{ListMeta: lm}
		l.APIVersion, l.Kind = "meta.k8s.io/v1", "PartialObjectMetadataList"
		for _, obj := range objs {
			p := partialMetadata(obj)
			l.Items = append(l.Items, *p)
		}
		h.writeObject(w, req.out, http.StatusOK, l)
	default:
		l := req.res.NewList()
		if err := meta.SetList(l, objs); err != nil {
			return err
		}
		lma, _ := meta.ListAccessor(l)
		lma.SetResourceVersion(lm.ResourceVersion)
		lma.SetContinue(lm.Continue)
		l.GetObjectKind().SetGroupVersionKind(req.res.GroupVersion.WithKind(req.res.Kind + "List"))
		h.writeObject(w, req.out, http.StatusOK, l)
	}
	return nil
}

// listProtobuf answers a Protobuf list without a selector from the stored
// bytes, without decoding them.
func (h *Handler) listProtobuf(w http.ResponseWriter, req *request, sel selector) error {
	var keys []string
	var values [][]byte
	var revs []uint64
	var bad unreadable
	lm, err := h.listKeys(req, sel, func(kv fsm.KV, _ runtime.Object) error {
		plain, err := h.objects.open(req.res, kv)
		if err != nil {
			bad.add(kv.Key, err)
			return nil
		}
		keys, values, revs = append(keys, kv.Key), append(values, plain), append(revs, kv.ModRevision)
		return nil
	}, false)
	if err != nil {
		return err
	}
	b, err := protoList(req.res.GroupVersion.WithKind(req.res.Kind+"List"), lm, values, revs, func(i int, err error) { bad.add(keys[i], err) })
	if err == nil {
		err = bad.err(req.res, prefix(req.res, req.namespace))
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", mediaProtobuf)
	w.WriteHeader(http.StatusOK)
	w.Write(b)
	return nil
}
