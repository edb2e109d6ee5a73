package kube

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/pontoon-dev/pontoon/fsm"
)

// expireBatch is how many expired events one transaction deletes.
const expireBatch = 256

// ExpireEvents deletes events whose last write is older than the event
// TTL, as kube-apiserver's --event-ttl does with etcd leases: events are
// written for every pod scheduled and every replica made, and would
// otherwise grow the store for ever. It is a leader duty; it sweeps the
// local store every half TTL (at most every minute) until ctx ends. A
// delete is conditioned on the event's revision, so an event updated
// meanwhile (a repeat counted) stays.
func (h *Handler) ExpireEvents(ctx context.Context) {
	ttl := h.cfg.EventTTL
	if ttl <= 0 {
		return
	}
	t := time.NewTicker(min(ttl/2, time.Minute))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := h.expireEvents(ctx, time.Now().Add(-ttl)); err != nil && ctx.Err() == nil {
			h.cfg.Logger.Warn("expiring events", "err", err)
		}
	}
}

func (h *Handler) expireEvents(ctx context.Context, before time.Time) error {
	r, _ := h.registry.Lookup(corev1.SchemeGroupVersion.WithResource("events"))
	res, err := h.objects.store.List(ctx, fsm.ListOptions{Prefix: prefix(r, "")})
	if err != nil {
		return err
	}
	var ops []fsm.Op
	for _, kv := range res.KVs {
		obj, err := h.objects.decode(r, kv)
		if err != nil {
			return err
		}
		if lastWrite(obj.(*corev1.Event)).Before(before) {
			ops = append(ops, fsm.Delete(kv.Key, fsm.Cond{ModRevision: kv.ModRevision}))
		}
	}
	for len(ops) > 0 {
		batch := ops[:min(expireBatch, len(ops))]
		_, err := h.cfg.Node.Apply(ctx, &fsm.Txn{Ops: batch})
		var te *fsm.TxnError
		if errors.As(err, &te) && te.Op >= 0 && te.Op < len(batch) {
			// That event changed or went: leave it, delete the rest.
			ops = append(batch[:te.Op:te.Op], ops[te.Op+1:]...)
			continue
		}
		if err != nil {
			return err
		}
		ops = ops[len(batch):]
	}
	return nil
}

// lastWrite is when an event was last recorded.
func lastWrite(e *corev1.Event) time.Time {
	t := e.CreationTimestamp.Time
	for _, c := range []time.Time{e.LastTimestamp.Time, e.EventTime.Time} {
		if c.After(t) {
			t = c
		}
	}
	if e.Series != nil && e.Series.LastObservedTime.After(t) {
		t = e.Series.LastObservedTime.Time
	}
	return t
}
