package kube

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/streaming"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/pontoon-dev/pontoon/fsm"
)

// bookmarkInterval is how often an idle watch that allows bookmarks is
// told how far it has got.
const bookmarkInterval = 5 * time.Second

// minWatchTimeout is the shortest server-side watch timeout; each watch
// gets a random one between it and twice it, as kube-apiserver does, so
// that clients do not all reconnect at once.
const minWatchTimeout = 30 * time.Minute

// watchStream writes watch events in the negotiated format, one frame per
// event, flushed as it is written.
type watchStream struct {
	h       *Handler
	req     *request
	w       http.ResponseWriter
	flusher http.Flusher
	enc     streaming.Encoder
	first   bool
}

func (s *watchStream) sendRaw(typ watch.EventType, raw []byte) error {
	if err := s.enc.Encode(&metav1.WatchEvent{Type: string(typ), Object: runtime.RawExtension{Raw: raw}}); err != nil {
		return err
	}
	s.flusher.Flush()
	return nil
}

func (s *watchStream) send(typ watch.EventType, obj runtime.Object) error {
	switch s.req.out.kind {
	case asTable:
		if typ != watch.Bookmark && typ != watch.Error {
			t, err := s.h.table(s.req, []runtime.Object{obj}, metav1.ListMeta{}, s.first)
			if err != nil {
				return err
			}
			s.first = false
			obj = t
		}
	case asPartialMetadata:
		if typ != watch.Error {
			obj = partialMetadata(obj)
		}
	default:
		if typ != watch.Error {
			obj.GetObjectKind().SetGroupVersionKind(s.req.res.GroupVersionKind())
		}
	}
	raw, err := runtime.Encode(s.req.out.info.Serializer, obj)
	if err != nil {
		return err
	}
	return s.sendRaw(typ, raw)
}

func (s *watchStream) bookmark(rev uint64, annotations map[string]string) error {
	obj := s.req.res.New()
	m := accessor(obj)
	m.SetResourceVersion(strconv.FormatUint(rev, 10))
	m.SetAnnotations(annotations)
	return s.send(watch.Bookmark, obj)
}

func (s *watchStream) fail(err error) {
	s.send(watch.Error, s.h.status(err))
}

// watchStart says where a watch begins: with the current state as ADDED
// events (initial), and from which revision.
type watchStart struct {
	initial     bool
	consistency consistency
	revision    uint64
	// initialEnd marks the end of the initial events with a bookmark.
	initialEnd bool
}

func parseWatchStart(req *request) (watchStart, error) {
	q := req.URL.Query()
	rv := q.Get("resourceVersion")
	if q.Get("sendInitialEvents") == "true" {
		if q.Get("resourceVersionMatch") != string(metav1.ResourceVersionMatchNotOlderThan) {
			return watchStart{}, apierrors.NewInvalid(metav1.SchemeGroupVersion.WithKind("ListOptions").GroupKind(), "", nil)
		}
		c, err := readConsistency(rv)
		return watchStart{initial: true, consistency: c, initialEnd: q.Get("allowWatchBookmarks") == "true"}, err
	}
	switch rv {
	case "":
		return watchStart{initial: true, consistency: consistency{linearizable: true}}, nil
	case "0":
		return watchStart{initial: true}, nil
	}
	n, err := parseRV(rv)
	return watchStart{revision: n}, err
}

func watchTimeout(req *request) (time.Duration, error) {
	v := req.URL.Query().Get("timeoutSeconds")
	if v == "" {
		return minWatchTimeout + rand.N(minWatchTimeout), nil
	}
	s, err := strconv.ParseInt(v, 10, 64)
	switch {
	case err != nil:
		return 0, apierrors.NewBadRequest(fmt.Sprintf("timeoutSeconds %q: not a whole number of seconds", v))
	case s <= 0:
		return minWatchTimeout + rand.N(minWatchTimeout), nil
	}
	return time.Duration(min(s, math.MaxInt64/int64(time.Second))) * time.Second, nil
}

// watch streams the changes of a resource, as kube-apiserver does: the
// synthetic ADDED events of the current state first when asked, then every
// change in revision order, with bookmarks; a revision older than the
// history is a 410 inside the stream.
func (h *Handler) watch(w http.ResponseWriter, req *request) error {
	sel, err := h.parseSelector(req)
	if err != nil {
		return err
	}
	start, err := parseWatchStart(req)
	if err != nil {
		return err
	}
	timeout, err := watchTimeout(req)
	if err != nil {
		return err
	}
	flusher, ok := w.(http.Flusher)
	if !ok {
		return apierrors.NewInternalError(errors.New("streaming is not supported"))
	}
	if err := h.objects.sync(req.Context(), start.consistency); err != nil {
		return err
	}
	stream := req.out.info.StreamSerializer
	if stream == nil {
		return apierrors.NewBadRequest(fmt.Sprintf("%s does not support watch", req.out.info.MediaType))
	}
	ctx, cancel := context.WithTimeout(req.Context(), timeout)
	defer cancel()

	pfx := prefix(req.res, req.namespace)
	var initial []runtime.Object
	rev := start.revision
	if start.initial {
		res, err := h.objects.store.List(ctx, fsm.ListOptions{Prefix: pfx})
		if err != nil {
			return err
		}
		rev = res.Revision
		for _, kv := range res.KVs {
			obj, err := h.objects.decode(req.res, kv)
			if err != nil {
				return err
			}
			if sel.matches(req.res, obj) {
				initial = append(initial, obj)
			}
		}
	}
	ws := &watchStream{h: h, req: req, w: w, flusher: flusher, first: true}
	mt := req.out.info.MediaType
	if mt == mediaProtobuf {
		mt += ";stream=watch"
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	ws.enc = streaming.NewEncoder(stream.Framer.NewFrameWriter(w), stream.Serializer)
	flusher.Flush()

	watcher, err := h.objects.store.Watch(pfx, rev)
	if err != nil {
		if errors.Is(err, fsm.ErrCompacted) {
			err = apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", rev, h.objects.store.Applied()))
		}
		ws.fail(err)
		return nil
	}
	for _, obj := range initial {
		if err := ws.send(watch.Added, obj); err != nil {
			return nil
		}
	}
	bookmarks := req.URL.Query().Get("allowWatchBookmarks") == "true"
	if start.initialEnd {
		if err := ws.bookmark(rev, map[string]string{metav1.InitialEventsAnnotationKey: "true"}); err != nil {
			return nil
		}
	}
	// Watchers that see every event as it is share its encoding.
	shared := req.out.kind == asObject && sel.labels.Empty() && sel.fields.Empty()
	for {
		next, cancelNext := context.WithTimeout(ctx, bookmarkInterval)
		evs, err := watcher.Next(next, 256)
		cancelNext()
		switch {
		case ctx.Err() != nil:
			return nil
		case errors.Is(err, context.DeadlineExceeded):
			if bookmarks {
				if err := ws.bookmark(watcher.Progress(), nil); err != nil {
					return nil
				}
			}
			continue
		case errors.Is(err, fsm.ErrCompacted):
			ws.fail(apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", watcher.Progress(), h.objects.store.Applied())))
			return nil
		case err != nil:
			ws.fail(err)
			return nil
		}
		for _, ev := range evs {
			if shared {
				raw, err := h.encodedEvent(req.res, req.out.info, ev)
				if err != nil {
					ws.fail(err)
					return nil
				}
				if err := ws.sendRaw(plainEventType(ev), raw); err != nil {
					return nil
				}
				continue
			}
			typ, obj, err := h.eventObject(req, sel, ev)
			if err != nil {
				ws.fail(err)
				return nil
			}
			if obj == nil {
				continue
			}
			if err := ws.send(typ, obj); err != nil {
				return nil
			}
		}
	}
}

// plainEventType is the type of an event for a watcher without a selector.
func plainEventType(ev fsm.Event) watch.EventType {
	switch {
	case ev.Type == fsm.EventDelete:
		return watch.Deleted
	case ev.Prev.ModRevision != 0:
		return watch.Modified
	}
	return watch.Added
}

// eventObject turns a store event into the watch event a client with sel
// sees: an object that stops matching is DELETED, one that starts
// matching is ADDED. A nil object means the client does not see it.
func (h *Handler) eventObject(req *request, sel selector, ev fsm.Event) (watch.EventType, runtime.Object, error) {
	filtered := !sel.labels.Empty() || !sel.fields.Empty()
	var prev runtime.Object
	prevMatched := ev.Prev.ModRevision != 0
	if ev.Prev.ModRevision != 0 && (filtered || ev.Type == fsm.EventDelete) {
		var err error
		if prev, err = h.objects.decode(req.res, fsm.KV{Key: ev.Key, Value: ev.Prev.Value, ModRevision: ev.Revision}); err != nil {
			return "", nil, err
		}
		prevMatched = sel.matches(req.res, prev)
	}
	if ev.Type == fsm.EventDelete {
		if !prevMatched {
			return "", nil, nil
		}
		return watch.Deleted, prev, nil
	}
	obj, err := h.objects.decode(req.res, fsm.KV{Key: ev.Key, Value: ev.Value, ModRevision: ev.Revision})
	if err != nil {
		return "", nil, err
	}
	matches := sel.matches(req.res, obj)
	switch {
	case matches && prevMatched:
		return watch.Modified, obj, nil
	case matches:
		return watch.Added, obj, nil
	case prevMatched:
		return watch.Deleted, obj, nil
	}
	return "", nil, nil
}
