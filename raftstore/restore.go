package raftstore

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pontoon-dev/pontoon/fsm"
)

// Restore replaces the whole cluster's state with the snapshot file at path
// (as written by fsm.ReadSnapshot: verified, checksum removed). It must run on
// the leader. New writes wait while it runs; afterwards every server's store
// holds the snapshot and every watch is ended with fsm.ErrCompacted, so
// clients list again.
//
// hashicorp/raft places the snapshot after the last log entry, at a new
// index. The snapshot's recorded index is rewritten to one at or below that
// place and above every revision handed out before, so that revisions only
// ever grow.
func (n *Node) Restore(ctx context.Context, path string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	n.restoreMu.Lock()
	defer n.restoreMu.Unlock()
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	timeout := time.Until(deadline(ctx))
	// With new applies held off, a barrier makes LastIndex final.
	if err := n.raft.Barrier(timeout).Error(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	index, term := n.raft.LastIndex()+1, n.raft.CurrentTerm()
	if err := fsm.SetSnapshotIndex(path, index, term); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// raft.Restore wants the stream's exact size up front.
	stream, err := os.CreateTemp(filepath.Dir(path), "restore-*.snap")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer os.Remove(stream.Name())
	defer stream.Close()
	if err := fsm.WriteSnapshotFile(path, stream); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	size, err := stream.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if _, err := stream.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	meta := &raft.SnapshotMeta{
		Version:            raft.SnapshotVersionMax,
		Index:              index - 1,
		Term:               term,
		Configuration:      cf.Configuration(),
		ConfigurationIndex: cf.Index(),
		Size:               size,
	}
	if err := n.raft.Restore(meta, stream, timeout); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Readers wait for the store to reach the commit index, which now
	// points at the restored snapshot; an entry after it gets them there.
	if _, err := n.applyLocal(ctx, &fsm.Txn{Ops: []fsm.Op{fsm.Put(keyLeader, []byte(n.cfg.Identity.Name), "", fsm.Cond{})}}); err != nil {
		return fmt.Errorf("restore: marker entry: %w", err)
	}
	n.logger.Info("restored snapshot", "index", index)
	return nil
}
