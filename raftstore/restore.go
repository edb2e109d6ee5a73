package raftstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/pontoon-dev/pontoon/fsm"
)

// ErrRestoreRunning refuses a restore while another one runs.
var ErrRestoreRunning = errors.New("a snapshot restore is already running")

// Restore replaces the whole cluster's state with the snapshot file at path
// (as written by fsm.ReadSnapshot: verified, checksum removed). It must run
// on the leader, within ctx's deadline. The snapshot goes through the Raft
// log (see fsm.RestoreEntry): its records are staged on every server, then
// one entry swaps them in, so that a crash of any server, or of all of
// them, at any moment leaves all on the old state or all on the restored
// one. Writes are not held off
// while the records are staged; whatever they wrote is replaced by the
// snapshot when it commits. Afterwards every watch is ended with
// fsm.ErrCompacted, so clients list again; revisions go on from the
// commit's index, above every one handed out before.
func (n *Node) Restore(ctx context.Context, path string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	if !n.restoring.TryLock() {
		return ErrRestoreRunning
	}
	defer n.restoring.Unlock()
	var b [8]byte
	rand.Read(b[:])
	id := binary.BigEndian.Uint64(b[:])
	var index uint64
	err := fsm.RestoreEntries(path, id, func(e *fsm.RestoreEntry) error {
		var err error
		index, err = n.applyLocal(ctx, e.Marshal())
		return err
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	n.logger.Info("restored snapshot", "index", index)
	return nil
}
