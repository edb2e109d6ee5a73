package kube

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/protobuf"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// Objects are stored under /registry/<group>/<resource>/[<namespace>/]<name>
// ("core" for the core group), Protobuf-encoded without their
// resourceVersion: the resourceVersion is the revision of the entry that
// last wrote the key, set when the object is read.
const registryPrefix = "/registry/"

// objects reads and writes API objects in the replicated store.
type objects struct {
	node   *raftstore.Node
	store  *fsm.Store
	codec  runtime.Serializer
	shared sharedObjects
	// atRest encrypts the resources that have a transformer (atrest.go).
	atRest map[*resource.Resource]value.Transformer
}

func newObjects(node *raftstore.Node, store *fsm.Store, scheme *runtime.Scheme, atRest map[*resource.Resource]value.Transformer) *objects {
	return &objects{node: node, store: store, codec: protobuf.NewSerializer(scheme, scheme), atRest: atRest}
}

// sharedObjects keeps decoded the few objects that admission reads on
// every create, a namespace and the priority classes, as kube-apiserver's
// admission reads them from informers: a pod create decoded all three
// anew, and the decoding showed in CPU profiles of creates. An object is
// reused while its key holds the same bytes at the same revision (a
// snapshot restored from elsewhere may bring other bytes at a revision
// seen before), and is shared: whoever gets one only reads it.
type sharedObjects struct {
	mu sync.Mutex
	m  map[string]sharedObject
}

// sharedObject is an object decoded from raw, the value stored at rev.
type sharedObject struct {
	obj runtime.Object
	rev uint64
	raw []byte
}

// maxSharedObjects bounds the cache; it starts over when full (namespaces
// come and go, and decoding one again is cheap).
const maxSharedObjects = 4096

// decodeShared returns the object kv holds, decoded once per revision.
// The caller must not change it.
func (o *objects) decodeShared(r *resource.Resource, kv fsm.KV) (runtime.Object, error) {
	o.shared.mu.Lock()
	s, ok := o.shared.m[kv.Key]
	o.shared.mu.Unlock()
	if ok && s.rev == kv.ModRevision && bytes.Equal(s.raw, kv.Value) {
		return s.obj, nil
	}
	obj, err := o.decode(r, kv)
	if err != nil {
		return nil, err
	}
	o.shared.mu.Lock()
	if o.shared.m == nil || len(o.shared.m) >= maxSharedObjects {
		o.shared.m = map[string]sharedObject{}
	}
	o.shared.m[kv.Key] = sharedObject{obj: obj, rev: kv.ModRevision, raw: kv.Value}
	o.shared.mu.Unlock()
	return obj, nil
}

// prefix is the key prefix of a resource's objects in one namespace, or in
// all of them when ns is empty.
func prefix(r *resource.Resource, ns string) string {
	group := r.GroupVersion.Group
	if group == "" {
		group = "core"
	}
	p := registryPrefix + group + "/" + r.Name + "/"
	if r.Namespaced && ns != "" {
		p += ns + "/"
	}
	return p
}

func key(r *resource.Resource, ns, name string) string {
	return prefix(r, ns) + name
}

// encode returns the encoded form of obj: Protobuf, without
// resourceVersion. It is stored as seal makes it.
func (o *objects) encode(r *resource.Resource, obj runtime.Object) ([]byte, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, err
	}
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	obj.GetObjectKind().SetGroupVersionKind(r.GroupVersionKind())
	b, err := runtime.Encode(o.codec, obj)
	m.SetResourceVersion(rv)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", r.Kind, err)
	}
	return b, nil
}

// decode returns the object kv holds, with its resourceVersion.
func (o *objects) decode(r *resource.Resource, kv fsm.KV) (runtime.Object, error) {
	obj, _, _, err := o.decodeStored(r, kv)
	return obj, err
}

// decodeStored is decode that also returns the object's encoding
// (decrypted) and whether it is stored stale (openStale).
func (o *objects) decodeStored(r *resource.Resource, kv fsm.KV) (runtime.Object, []byte, bool, error) {
	plain, stale, err := o.openStale(r, kv)
	if err != nil {
		return nil, nil, false, err
	}
	obj := r.New()
	if _, _, err := o.codec.Decode(plain, nil, obj); err != nil {
		return nil, nil, false, fmt.Errorf("decode stored %s: %w", r.Kind, err)
	}
	m, err := meta.Accessor(obj)
	if err != nil {
		return nil, nil, false, err
	}
	m.SetResourceVersion(strconv.FormatUint(kv.ModRevision, 10))
	return obj, plain, stale, nil
}

// maxWaitApplied bounds the wait for this server to apply a revision a
// client has seen elsewhere.
const maxWaitApplied = 5 * time.Second

// consistency says how current a read must be.
type consistency struct {
	// linearizable reads run the ReadIndex barrier first.
	linearizable bool
	// minRevision waits until this server has applied it.
	minRevision uint64
}

// readConsistency interprets resourceVersion as Kubernetes does for
// get and list: "" is a linearizable read, "0" any local state, and a
// number at least that revision.
func readConsistency(rv string) (consistency, error) {
	switch rv {
	case "":
		return consistency{linearizable: true}, nil
	case "0":
		return consistency{}, nil
	}
	n, err := parseRV(rv)
	return consistency{minRevision: n}, err
}

func parseRV(rv string) (uint64, error) {
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version %q", rv))
	}
	return n, nil
}

// sync waits until the local store is as current as c requires.
func (o *objects) sync(ctx context.Context, c consistency) error {
	if c.linearizable {
		return o.node.ReadIndex(ctx)
	}
	if c.minRevision > o.store.Applied() {
		wctx, cancel := context.WithTimeout(ctx, maxWaitApplied)
		defer cancel()
		if err := o.store.WaitApplied(wctx, c.minRevision); err != nil {
			return apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", c.minRevision, o.store.Applied()), 1)
		}
	}
	return nil
}

// getCurrent reads one object for a write: from the local store, which
// has applied at least minRev (the version the client saw), and after the
// read barrier when it does not have the object, which may be this
// server lagging behind a create elsewhere. A stale read costs a retry,
// never a wrong write: writes are conditioned on the revision read.
func (o *objects) getCurrent(ctx context.Context, r *resource.Resource, ns, name string, minRev uint64) (stored, error) {
	return o.current(ctx, minRev, func() (stored, error) { return o.get(r, ns, name) })
}

// getShared is getCurrent at no particular revision for an object the
// caller only reads: it may be shared with other callers (sharedObjects),
// and its encoding is not kept.
func (o *objects) getShared(ctx context.Context, r *resource.Resource, ns, name string) (stored, error) {
	return o.current(ctx, 0, func() (stored, error) {
		return o.read(r, ns, name, func(r *resource.Resource, kv fsm.KV) (runtime.Object, []byte, bool, error) {
			obj, err := o.decodeShared(r, kv)
			return obj, nil, false, err
		})
	})
}

func (o *objects) current(ctx context.Context, minRev uint64, get func() (stored, error)) (stored, error) {
	if err := o.sync(ctx, consistency{minRevision: minRev}); err != nil {
		return stored{}, err
	}
	cur, err := get()
	if apierrors.IsNotFound(err) {
		if err := o.sync(ctx, consistency{linearizable: true}); err != nil {
			return stored{}, err
		}
		return get()
	}
	return cur, err
}

// stored is an object as the store holds it: decoded, with the revision
// that last wrote it and its encoding (decrypted), which tells an update
// that changes nothing, unless it is stale (encrypted with a key that is
// no longer the first).
type stored struct {
	obj   runtime.Object
	rev   uint64
	value []byte
	stale bool
}

// get reads one object from the local store.
func (o *objects) get(r *resource.Resource, ns, name string) (stored, error) {
	return o.read(r, ns, name, o.decodeStored)
}

func (o *objects) read(r *resource.Resource, ns, name string, decode func(*resource.Resource, fsm.KV) (runtime.Object, []byte, bool, error)) (stored, error) {
	kv, found, _, err := o.store.Get(key(r, ns, name))
	if err != nil {
		return stored{}, err
	}
	if !found {
		return stored{}, apierrors.NewNotFound(r.GroupVersionResource().GroupResource(), name)
	}
	obj, plain, stale, err := decode(r, kv)
	if err != nil {
		var u unreadable
		u.add(kv.Key, err)
		return stored{}, u.err(r, prefix(r, ns))
	}
	return stored{obj: obj, rev: kv.ModRevision, value: plain, stale: stale}, nil
}

// unreadable collects stored objects that cannot be decoded. Its err is
// kube-apiserver's answer for them: 500 StorageReadError, naming each key,
// so that an operator can find them and delete them with
// ignoreStoreReadErrorWithClusterBreakingPotential.
type unreadable struct {
	keys []string
	errs []error
}

func (u *unreadable) add(key string, err error) {
	u.keys, u.errs = append(u.keys, key), append(u.errs, err)
}

// err is nil when nothing was collected.
func (u *unreadable) err(r *resource.Resource, pfx string) error {
	if len(u.keys) == 0 {
		return nil
	}
	causes := make([]metav1.StatusCause, len(u.keys))
	for i, k := range u.keys {
		causes[i] = metav1.StatusCause{Type: metav1.CauseTypeUnexpectedServerResponse, Message: u.errs[i].Error(), Field: k}
	}
	return &apierrors.StatusError{ErrStatus: metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusInternalServerError, Reason: metav1.StatusReasonStoreReadError,
		Message: fmt.Sprintf("failed to read %d stored object(s) (%s): %v; an object that cannot be read can be deleted with ignoreStoreReadErrorWithClusterBreakingPotential=true",
			len(u.keys), strings.Join(u.keys, ", "), u.errs[0]),
		Details: &metav1.StatusDetails{Group: r.GroupVersion.Group, Kind: r.Name, Name: pfx, Causes: causes},
	}}
}

// apply commits a transaction and maps the store's refusals to the Status
// kube-apiserver returns for the same case.
//
// It does not wait for this server to apply the write: as in Kubernetes, a
// read at resourceVersion=0 may be stale; writes that follow read what they
// need through getCurrent.
func (o *objects) apply(ctx context.Context, r *resource.Resource, name string, txn *fsm.Txn) (uint64, error) {
	rev, err := o.node.Apply(ctx, txn)
	var te *fsm.TxnError
	if errors.As(err, &te) && te.Op > 0 {
		// The object's own key is always the first operation; the others
		// are what the write was decided from.
		return 0, fmt.Errorf("%w: %v", errDependencyChanged, te)
	}
	if errors.As(err, &te) {
		gr := r.GroupVersionResource().GroupResource()
		switch te.Code {
		case fsm.CodeExists:

			return 0, apierrors.NewAlreadyExists(gr, name)
		case fsm.CodeNotFound:
			return 0, apierrors.NewNotFound(gr, name)
		case fsm.CodeConflict:
			return 0, apierrors.NewConflict(gr, name, errors.New(conflictMessage))
		case fsm.CodeTooLarge:
			return 0, apierrors.NewRequestEntityTooLargeError("limit is 1572864")
		}
	}
	return rev, err
}

// errDependencyChanged is a write refused because a key it was decided
// from changed: an allocated address another service took first, or its
// namespace. The write is decided again.
var errDependencyChanged = errors.New("a key the write depends on changed")

// conflictMessage is kube-apiserver's wording, which clients match on.
const conflictMessage = "the object has been modified; please apply your changes to the latest version and try again"

// setRV sets obj's resourceVersion.
func setRV(obj runtime.Object, rev uint64) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetResourceVersion(strconv.FormatUint(rev, 10))
	}
}

func accessor(obj runtime.Object) metav1.Object {
	m, err := meta.Accessor(obj)
	if err != nil {
		panic(fmt.Sprintf("%T has no object metadata: %v", obj, err))
	}
	return m
}
