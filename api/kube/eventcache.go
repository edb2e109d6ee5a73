package kube

import (
	"sync"

	"k8s.io/apimachinery/pkg/runtime"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// eventCacheSize is how many encoded watch objects are kept. Every watcher
// of a resource without a selector sends the same bytes for an event, so
// the first watcher to reach it encodes it and the others reuse it: with a
// thousand watchers, an event is decoded and encoded once instead of a
// thousand times.
const eventCacheSize = 4096

type eventKey struct {
	key       string
	revision  uint64
	mediaType string
}

// eventCache holds recently encoded watch objects, oldest evicted first.
type eventCache struct {
	mu    sync.Mutex
	items map[eventKey][]byte
	order []eventKey
	next  int
}

func newEventCache() *eventCache {
	return &eventCache{items: make(map[eventKey][]byte, eventCacheSize), order: make([]eventKey, eventCacheSize)}
}

func (c *eventCache) get(k eventKey) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b, ok := c.items[k]
	return b, ok
}

func (c *eventCache) put(k eventKey, b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.items[k]; ok {
		return
	}
	delete(c.items, c.order[c.next])
	c.order[c.next] = k
	c.next = (c.next + 1) % len(c.order)
	c.items[k] = b
}

// encodedEvent returns the encoded object of an event as a watcher without
// a selector sees it: the new state, or the last state of a deleted key,
// at the event's revision.
func (h *Handler) encodedEvent(r *resource.Resource, info runtime.SerializerInfo, ev fsm.Event) ([]byte, error) {
	k := eventKey{key: ev.Key, revision: ev.Revision, mediaType: info.MediaType}
	if b, ok := h.events.get(k); ok {
		return b, nil
	}
	kv := fsm.KV{Key: ev.Key, Value: ev.Value, ModRevision: ev.Revision}
	if ev.Type == fsm.EventDelete {
		kv.Value = ev.Prev.Value
	}
	if info.MediaType == mediaProtobuf {
		plain, err := h.objects.open(r, kv)
		if err != nil {
			return nil, err
		}
		b, err := protoObject(r.GroupVersionKind(), plain, ev.Revision)
		if err != nil {
			return nil, err
		}
		h.events.put(k, b)
		return b, nil
	}
	obj, err := h.objects.decode(r, kv)
	if err != nil {
		return nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(r.GroupVersionKind())
	b, err := runtime.Encode(info.Serializer, obj)
	if err != nil {
		return nil, err
	}
	h.events.put(k, b)
	return b, nil
}
