package fsm

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
)

// ErrCompacted is returned for a watch or a list at a revision older than
// the history the store still holds. Kubernetes clients answer it (410 Gone)
// by listing again.
var ErrCompacted = errors.New("required revision has been compacted")

// EventType says whether a key was written or removed.
type EventType uint8

// The event types.
const (
	EventPut EventType = iota + 1
	EventDelete
)

// Event is one change to one key. A transaction yields one event per
// operation, all with the transaction's revision.
type Event struct {
	Type     EventType
	Key      string
	Value    []byte // the new value; nil for a delete
	UID      string // the new UID; empty for a delete
	Revision uint64
	// Prev is the key's state before the change; Prev.ModRevision is zero
	// when the key was created by it.
	Prev KV
}

// hub keeps a bounded, revision-ordered history of events and lets any
// number of watchers read it at their own pace. Publishing never waits for a
// watcher: each watcher pulls from the shared history with its own cursor, so
// a slow watcher costs nothing until it falls out of the history, and then it
// gets ErrCompacted (as a kube-apiserver watcher that is too slow is closed).
//
// A watcher that has read everything waits under its prefix, and a publish
// wakes only the prefixes its events fall under. Waking every watcher on
// every publish made each write wake every watch of the leader's
// scheduler and controllers (nineteen), to find nothing for most of them:
// CPU spent for nothing, in proportion to watchers times writes. A
// waiting watcher has seen that nothing after its cursor is for it, so
// when it wakes it skips what was published while it waited, even if that
// has left the history since.
type hub struct {
	mu sync.Mutex
	// events[i] has sequence number base+i.
	events []Event
	base   uint64
	max    int
	// compacted is the newest revision some of whose events are gone.
	compacted uint64
	// published is the newest revision whose events are all in events.
	published uint64
	// epoch changes when the history is replaced (a snapshot restore);
	// watchers of an older epoch get ErrCompacted.
	epoch uint64
	// wake is closed and replaced whenever something is published; what
	// waits for a revision (WaitApplied, lists) waits for it.
	wake chan struct{}
	// waiting holds the watchers that have read everything, by prefix.
	waiting map[string][]*Watcher
}

func newHub(max int, rev uint64) *hub {
	if max < 1 {
		max = 1
	}
	return &hub{max: max, compacted: rev, published: rev, wake: make(chan struct{}), waiting: make(map[string][]*Watcher)}
}

// publish appends the events of revisions up to rev, which is now applied.
func (h *hub) publish(evs []Event, rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	first := h.base + uint64(len(h.events))
	h.events = append(h.events, evs...)
	h.published = rev
	h.wakeWaiting(first, func(prefix string) bool {
		return slices.ContainsFunc(evs, func(ev Event) bool { return strings.HasPrefix(ev.Key, prefix) })
	})
	if over := len(h.events) - h.max; over > 0 {
		// Drop whole revisions only, so that the remaining history is
		// complete for every revision after compacted.
		last := h.events[over-1].Revision
		for over < len(h.events) && h.events[over].Revision == last {
			over++
		}
		h.compacted = last
		h.base += uint64(over)
		// Reslice most of the time; copy once the dead prefix is as large as
		// the history, so memory stays bounded by about twice max.
		if over >= cap(h.events)/2 {
			h.events = append(make([]Event, 0, 2*h.max), h.events[over:]...)
		} else {
			clear(h.events[:over])
			h.events = h.events[over:]
		}
	}
	close(h.wake)
	h.wake = make(chan struct{})
}

// reset empties the history after the store was replaced at revision rev.
func (h *hub) reset(rev uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.base += uint64(len(h.events))
	h.events = nil
	h.compacted = max(h.published, rev)
	h.published = h.compacted
	h.epoch++
	close(h.wake)
	h.wake = make(chan struct{})
	h.wakeWaiting(h.base, func(string) bool { return true })
}

// wakeWaiting wakes the waiting watchers of every prefix that match
// accepts: nothing before sequence number seq is for them. h.mu is held.
func (h *hub) wakeWaiting(seq uint64, match func(prefix string) bool) {
	for prefix, ws := range h.waiting {
		if !match(prefix) {
			continue
		}
		for _, w := range ws {
			w.wakeAt(seq)
		}
		delete(h.waiting, prefix)
	}
}

// waitPublished blocks until the events of rev are in the history.
func (h *hub) waitPublished(ctx context.Context, rev uint64) error {
	for {
		h.mu.Lock()
		done, wake := h.published >= rev, h.wake
		h.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// changedSince returns, for every key under prefix changed after rev up to
// and including upTo, its state at rev (ModRevision zero: absent at rev).
func (h *hub) changedSince(rev, upTo uint64, prefix string) (map[string]KV, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rev < h.compacted {
		return nil, ErrCompacted
	}
	i := sort.Search(len(h.events), func(i int) bool { return h.events[i].Revision > rev })
	out := make(map[string]KV)
	for ; i < len(h.events) && h.events[i].Revision <= upTo; i++ {
		ev := &h.events[i]
		if !strings.HasPrefix(ev.Key, prefix) {
			continue
		}
		if _, seen := out[ev.Key]; !seen {
			out[ev.Key] = ev.Prev
		}
	}
	return out, nil
}

// Watcher reads the events under a prefix after a revision, in order.
type Watcher struct {
	h      *hub
	prefix string
	after  uint64
	next   uint64 // sequence number of the next event to look at
	epoch  uint64
	// progress is the newest revision all of whose events under prefix
	// have been returned.
	progress uint64
	// waiting says the watcher is in the hub's waiting list; wake gets a
	// token when a publish takes it out. Both are guarded by h.mu.
	waiting bool
	wake    chan struct{}
}

// wakeAt takes the watcher off the waiting list: nothing before sequence
// number seq is for it. h.mu is held.
func (w *Watcher) wakeAt(seq uint64) {
	w.waiting = false
	w.next = max(w.next, seq)
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// stopWaiting takes the watcher off the waiting list if it is still on it;
// then nothing published since is for it. h.mu is held.
func (w *Watcher) stopWaiting() {
	if !w.waiting {
		return
	}
	ws := w.h.waiting[w.prefix]
	ws = slices.DeleteFunc(ws, func(o *Watcher) bool { return o == w })
	if len(ws) == 0 {
		delete(w.h.waiting, w.prefix)
	} else {
		w.h.waiting[w.prefix] = ws
	}
	w.waiting = false
	w.next = w.h.base + uint64(len(w.h.events))
	w.progress = max(w.progress, w.h.published)
}

// watch starts a watcher for events with revisions greater than rev.
func (h *hub) watch(prefix string, rev uint64) (*Watcher, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if rev < h.compacted {
		return nil, ErrCompacted
	}
	i := sort.Search(len(h.events), func(i int) bool { return h.events[i].Revision > rev })
	return &Watcher{h: h, prefix: prefix, after: rev, next: h.base + uint64(i), epoch: h.epoch, progress: rev, wake: make(chan struct{}, 1)}, nil
}

// Next blocks until at least one event is available, and returns up to
// limit of them. It returns ErrCompacted when the watcher fell out of the
// history (or the store was restored from a snapshot) and ctx's error when
// ctx ends.
func (w *Watcher) Next(ctx context.Context, limit int) ([]Event, error) {
	for {
		w.h.mu.Lock()
		if w.epoch != w.h.epoch || w.next < w.h.base {
			w.h.mu.Unlock()
			return nil, ErrCompacted
		}
		var out []Event
		end := w.h.base + uint64(len(w.h.events))
		for ; w.next < end && len(out) < limit; w.next++ {
			ev := w.h.events[w.next-w.h.base]
			if ev.Revision > w.after && strings.HasPrefix(ev.Key, w.prefix) {
				out = append(out, ev)
			}
		}
		if w.next == end {
			w.progress = max(w.progress, w.h.published)
		} else {
			w.progress = max(w.progress, w.h.events[w.next-w.h.base].Revision-1)
		}
		if len(out) > 0 {
			w.h.mu.Unlock()
			return out, nil
		}
		if !w.waiting {
			w.waiting = true
			w.h.waiting[w.prefix] = append(w.h.waiting[w.prefix], w)
		}
		w.h.mu.Unlock()
		select {
		case <-w.wake:
		case <-ctx.Done():
			w.h.mu.Lock()
			w.stopWaiting()
			w.h.mu.Unlock()
			return nil, ctx.Err()
		}
	}
}

// Progress returns the newest revision all of whose events under the
// watcher's prefix have been returned by Next: a revision a client may
// resume from without missing anything (a Kubernetes bookmark).
func (w *Watcher) Progress() uint64 { return w.progress }

// HistoryStats describes the watch history, for metrics.
type HistoryStats struct {
	Events    int
	Compacted uint64
	Published uint64
}

func (h *hub) stats() HistoryStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	return HistoryStats{Events: len(h.events), Compacted: h.compacted, Published: h.published}
}
