package raftstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/hashicorp/raft"

	"github.com/pontoon-dev/pontoon/fsm"
)

// A leader duty's writes are fenced by the term it was started in: they
// are applied only while this server still leads in that term, and never
// forwarded to another leader. A controller that lost leadership (paused,
// partitioned) cannot write over the decisions of the new leader's.

// ErrFenced is a fenced write or read on a server that no longer leads in
// the term of the duty that issued it.
var ErrFenced = fmt.Errorf("%w: leadership of the issuing duty has ended", ErrNotLeader)

type fenceKey struct{}

// fenceTerm returns the term ctx is fenced by.
func fenceTerm(ctx context.Context) (uint64, bool) {
	t, ok := ctx.Value(fenceKey{}).(uint64)
	return t, ok
}

// Fenced returns ctx with the fence of the duty context duty: requests made
// with it act only while this server leads in the duty's term.
func Fenced(ctx, duty context.Context) context.Context {
	if t, ok := fenceTerm(duty); ok {
		return context.WithValue(ctx, fenceKey{}, t)
	}
	return ctx
}

// checkFence fails when ctx is fenced by a term this server no longer
// leads in.
func (n *Node) checkFence(ctx context.Context) error {
	term, ok := fenceTerm(ctx)
	if !ok {
		return nil
	}
	if !n.IsLeader() || n.raft.CurrentTerm() != term {
		return ErrFenced
	}
	return nil
}

// applyFenced applies a fenced transaction here or not at all.
func (n *Node) applyFenced(ctx context.Context, txn *fsm.Txn) (uint64, error) {
	if err := n.checkFence(ctx); err != nil {
		return 0, err
	}
	rev, err := n.applyLeader(ctx, txn)
	if errors.Is(err, raft.ErrNotLeader) {
		return 0, ErrFenced
	}
	return rev, err
}
