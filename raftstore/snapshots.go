package raftstore

import (
	"context"
)

// snapshotThreshold is the number of log entries after which Raft takes a
// snapshot: entriesPerObject for every object the store holds, never fewer
// than the configured threshold. A snapshot copies the whole store, so a
// fixed threshold copies a large store again after every few thousand
// writes (128,000 objects of 1 KiB with 16,384 entries between snapshots:
// some 10 KiB copied, hashed and written for every KiB written).
// Following the object count keeps that near half an object copied per
// entry, whatever the store's size; the log then holds up to twice as
// many entries as the store holds objects, plus the trailing logs.
func snapshotThreshold(configured uint64, objects int64) uint64 {
	return max(configured, entriesPerObject*uint64(max(objects, 0)))
}

// entriesPerObject is how many log entries Raft waits for between
// snapshots for each object the store holds, as etcd keeps its snapshots
// rare (--snapshot-count 100,000 whatever its size). Going from 1 to 2
// took the three servers' CPU for scheduling 50,000 pods from 38.4 s to
// 36.2 s (three paired runs), for a log twice as long.
const entriesPerObject = 2

// paceSnapshots sets Raft's snapshot threshold from the store's object
// count at start and every SnapshotInterval, the period of Raft's own
// checks.
func (n *Node) paceSnapshots(ctx context.Context) {
	defer n.wg.Done()
	pace := func() {
		n.setSnapshotThreshold(snapshotThreshold(n.cfg.SnapshotThreshold, n.cfg.Store.Stats().Keys))
	}
	pace()
	every(ctx, n.cfg.SnapshotInterval, pace)
}

func (n *Node) setSnapshotThreshold(want uint64) {
	rc := n.raft.ReloadableConfig()
	if rc.SnapshotThreshold == want {
		return
	}
	rc.SnapshotThreshold = want
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.logger.Warn("cannot set the snapshot threshold", "threshold", want, "err", err)
	}
}

// lastSnapshotIndex is the index of the newest snapshot on disk, or 0.
func (n *Node) lastSnapshotIndex() uint64 {
	metas, err := n.snapshots.List()
	if err != nil || len(metas) == 0 {
		return 0
	}
	return metas[0].Index
}
