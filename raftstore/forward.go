package raftstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pontoon-dev/pontoon/fsm"
)

// A follower forwards the transactions its clients send to the leader in
// batches: the transactions that arrive while a batch is on its way go
// together in the next one. Under load this turns one HTTP round trip per
// write into one per batch, on the follower and on the leader alike, and
// the leader submits a whole batch to Raft before waiting, so Raft stores
// and replicates it as one. A batch is never retried: when its fate is
// unknown, every transaction in it is reported as of unknown outcome.
//
// One batch is gathered at a time, as the leader gathers its groups (see
// submitter.gather): once the first transaction is in, the batch waits
// for as many as were answered since the last one left, since under load
// those clients come back at once, for at most as long as the last batch
// took (and maxLinger). Sent as they came, the first few would leave
// alone while the rest waited for a sender, and missed the leader's next
// group.

const (
	// forwardSenders is how many batches may be on their way at once.
	forwardSenders = 4
	// maxForwardBatch bounds a batch's transactions.
	maxForwardBatch = 256
	// maxForwardBytes bounds a batch's encoded transactions; a batch
	// holds at least one, so the leader reads at most this much or one
	// largest transaction, whichever is more.
	maxForwardBytes = 16 << 20
	// maxEncodedTxn is the most a transaction within fsm's limits takes
	// encoded: its bytes and a few varints for each operation.
	maxEncodedTxn = fsm.MaxTxnSize + fsm.MaxTxnOps*64
)

// forwarder is the follower's side of forwarding.
type forwarder struct {
	reqs chan *forwardReq
	// maxLinger bounds how long a batch waits for more: the leader's
	// maxLinger, which tests lengthen to take time out of their checks.
	maxLinger time.Duration

	// gathering is held by the sender that gathers the next batch; next
	// is a transaction for another leader, kept for the batch after.
	gathering sync.Mutex
	next      *forwardReq

	mu       sync.Mutex
	answered int           // transactions answered since the last batch left
	took     time.Duration // how long the last batch was on its way
}

type forwardReq struct {
	ctx  context.Context
	api  string
	txn  []byte
	done chan forwardResult
}

type forwardResult struct {
	rev uint64
	err error
}

// forward sends txn to the leader at api and waits for its verdict.
func (n *Node) forward(ctx context.Context, api string, txn *fsm.Txn) (uint64, error) {
	req := &forwardReq{ctx: ctx, api: api, txn: txn.Marshal(), done: make(chan forwardResult, 1)}
	select {
	case n.fwd.reqs <- req:
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %v", ErrNoLeader, ctx.Err())
	}
	select {
	case res := <-req.done:
		return res.rev, res.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}

// runForwarder is one sender of batches; forwardSenders of them run.
func (n *Node) runForwarder(ctx context.Context) {
	defer n.wg.Done()
	for {
		batch := n.fwd.gather(ctx)
		if batch == nil {
			return
		}
		n.sendBatch(batch)
	}
}

// gather returns the next batch, or nil once ctx ends.
func (f *forwarder) gather(ctx context.Context) []*forwardReq {
	f.gathering.Lock()
	defer f.gathering.Unlock()
	first := f.next
	f.next = nil
	if first == nil {
		select {
		case first = <-f.reqs:
		case <-ctx.Done():
			return nil
		}
	}
	f.mu.Lock()
	want, linger := f.answered, min(f.took, f.maxLinger)
	f.answered = 0
	f.mu.Unlock()
	batch := []*forwardReq{first}
	size := len(first.txn)
	var timeout <-chan time.Time
	for len(batch) < maxForwardBatch {
		var r *forwardReq
		if len(batch) >= want {
			select {
			case r = <-f.reqs:
			default:
				return batch
			}
		} else {
			if timeout == nil {
				timer := time.NewTimer(linger)
				defer timer.Stop()
				timeout = timer.C
			}
			select {
			case r = <-f.reqs:
			case <-timeout:
				return batch
			case <-ctx.Done():
				return batch
			}
		}
		if r.api != first.api || size+len(r.txn) > maxForwardBytes {
			f.next = r // for the next batch
			return batch
		}
		batch = append(batch, r)
		size += len(r.txn)
	}
	return batch
}

// done counts the n writes of a batch as answered, before their callers
// hear of it: a caller's next write, however quick, is one the next
// batch awaits.
func (f *forwarder) done(n int, sent time.Time) {
	f.mu.Lock()
	f.answered += n
	f.took = time.Since(sent)
	f.mu.Unlock()
}

// applyReply is the leader's verdict on one forwarded transaction.
type applyReply struct {
	Revision uint64        `json:"revision,omitempty"`
	Error    *fsm.TxnError `json:"error,omitempty"`
	// NotLeader: the transaction was not appended; it may be sent again.
	NotLeader bool `json:"not_leader,omitempty"`
	// Unknown: the transaction's fate is unknown; Message says why.
	Unknown bool `json:"unknown,omitempty"`
	// NoSpace: refused for lack of space; Message says where.
	NoSpace bool   `json:"no_space,omitempty"`
	Message string `json:"message,omitempty"`
}

func (n *Node) sendBatch(batch []*forwardReq) {
	sent := time.Now()
	var body []byte
	var latest time.Time
	for _, r := range batch {
		body = binary.AppendUvarint(body, uint64(len(r.txn)))
		body = append(body, r.txn...)
		if d := deadline(r.ctx); d.After(latest) {
			latest = d
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), latest)
	defer cancel()
	replies, err := n.postBatch(ctx, batch[0].api, body, len(batch))
	n.fwd.done(len(batch), sent)
	for i, r := range batch {
		res := forwardResult{err: err}
		if err == nil {
			rep := replies[i]
			switch {
			case rep.Error != nil:
				res = forwardResult{rev: rep.Revision, err: rep.Error}
			case rep.NotLeader:
				res.err = errNotLeaderThere
			case rep.Unknown:
				res.err = fmt.Errorf("%w: %s", ErrUnknownOutcome, rep.Message)
			case rep.NoSpace:
				res.err = fmt.Errorf("%w (the leader: %s)", ErrNoSpace, rep.Message)
			default:
				res.rev = rep.Revision
			}
		}
		r.done <- res
	}
}

func (n *Node) postBatch(ctx context.Context, api string, body []byte, count int) ([]applyReply, error) {
	resp, err := n.post(ctx, api, pathApply, body)
	if err != nil {
		// Sent or not, we cannot tell: never retry.
		return nil, fmt.Errorf("%w: forwarding to the leader at %s: %v", ErrUnknownOutcome, api, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: reading the leader's reply: %v", ErrUnknownOutcome, err)
	case resp.StatusCode == http.StatusMisdirectedRequest:
		return nil, errNotLeaderThere
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%w: leader at %s answered %s: %s", ErrUnknownOutcome, api, resp.Status, bytes.TrimSpace(b))
	}
	var replies []applyReply
	if err := json.Unmarshal(b, &replies); err != nil || len(replies) != count {
		return nil, fmt.Errorf("%w: unreadable reply from the leader (%d replies for %d transactions): %v", ErrUnknownOutcome, len(replies), count, err)
	}
	return replies, nil
}

// serveApply applies a forwarded batch on the leader: every transaction is
// submitted before any is waited for.
//
// A forwarded transaction is checked here as Apply checks a local one,
// because this is the server that proposes it: the sender may be of
// another version, or not a Pontoon server at all.
func (n *Node) serveApply(w http.ResponseWriter, r *http.Request) {
	const limit = max(maxForwardBytes, maxEncodedTxn) + maxForwardBatch*binary.MaxVarintLen64
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	switch {
	case err != nil:
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	case len(body) > limit:
		http.Error(w, fmt.Sprintf("batch over %d bytes", limit), http.StatusRequestEntityTooLarge)
		return
	}
	var txns [][]byte
	for len(body) > 0 {
		size, k := binary.Uvarint(body)
		if k <= 0 || size > uint64(len(body)-k) || len(txns) == maxForwardBatch {
			http.Error(w, "malformed batch", http.StatusBadRequest)
			return
		}
		txns = append(txns, body[k:k+int(size)])
		body = body[k+int(size):]
	}
	if !n.IsLeader() {
		http.Error(w, "not the leader", http.StatusMisdirectedRequest)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	start := time.Now()
	replies := make([]applyReply, len(txns))
	valid := make([][]byte, 0, len(txns))
	refused := make([]error, len(txns))
	for i, b := range txns {
		if refused[i] = n.admitForwarded(b); refused[i] == nil {
			valid = append(valid, b)
		}
	}
	var submitted []applyResult
	if len(valid) > 0 {
		submitted, err = n.submitter.submit(ctx, valid)
	}
	for i := range replies {
		var res applyResult
		switch {
		case refused[i] != nil:
			res.err = refused[i]
		case err != nil:
			res.err = err
		default:
			res, submitted = submitted[0], submitted[1:]
		}
		n.metrics.observeApply(start, res.err)
		var te *fsm.TxnError
		switch {
		case res.err == nil:
			replies[i].Revision = res.rev
		case errors.As(res.err, &te):
			replies[i] = applyReply{Revision: res.rev, Error: te}
		case errors.Is(res.err, raft.ErrNotLeader):
			replies[i].NotLeader = true
		case errors.Is(res.err, ErrNoSpace):
			replies[i] = applyReply{NoSpace: true, Message: res.err.Error()}
		default:
			replies[i] = applyReply{Unknown: true, Message: res.err.Error()}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(replies)
}

// admitForwarded decodes, validates and checks the space for a forwarded
// transaction, returning why it is refused (a *fsm.TxnError or
// ErrNoSpace), or nil.
func (n *Node) admitForwarded(b []byte) error {
	txn, err := fsm.UnmarshalTxn(b)
	if err == nil {
		err = txn.Validate()
	}
	var te *fsm.TxnError
	if err != nil && !errors.As(err, &te) {
		err = &fsm.TxnError{Code: fsm.CodeInvalid, Message: err.Error()}
	}
	if err != nil {
		return err
	}
	return n.checkSpace(txn)
}
