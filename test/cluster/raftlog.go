package cluster

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"go.etcd.io/bbolt"

	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// Command is one transaction in a server's Raft log.
type Command struct {
	Index uint64
	Txn   *fsm.Txn
}

// Commands reads the transactions of a stopped server's Raft log up to and
// including index upTo, or to its end when it ends before: the ground
// truth of what the cluster committed.
func (s *Server) Commands(upTo uint64) ([]Command, error) {
	store, err := s.openLog()
	if err != nil {
		return nil, fmt.Errorf("open %s's raft log: %w", s.Name, err)
	}
	defer store.Close()
	first, err := store.FirstIndex()
	if err != nil {
		return nil, err
	}
	last, err := store.LastIndex()
	if err != nil {
		return nil, err
	}
	upTo = min(upTo, last)
	var out []Command
	for i := first; i <= upTo; i++ {
		var l raft.Log
		if err := store.GetLog(i, &l); err != nil {
			return nil, fmt.Errorf("%s's log entry %d: %w", s.Name, i, err)
		}
		if l.Type != raft.LogCommand {
			continue
		}
		txn, err := fsm.UnmarshalTxn(l.Data)
		if err != nil {
			return nil, fmt.Errorf("%s's log entry %d: %w", s.Name, i, err)
		}
		out = append(out, Command{Index: i, Txn: txn})
	}
	return out, nil
}

// openLog opens a stopped server's Raft log, in whichever store its data
// dir keeps it.
func (s *Server) openLog() (interface {
	raft.LogStore
	io.Closer
}, error) {
	dir := filepath.Join(s.DataDir, "raft")
	kind, err := raftstore.DetectLogStore(dir)
	switch {
	case err != nil:
		return nil, err
	case kind == raftstore.LogStoreBoltDB:
		return raftboltdb.New(raftboltdb.Options{Path: filepath.Join(dir, "raft.db"), BoltOptions: &bbolt.Options{ReadOnly: true}})
	case kind == raftstore.LogStoreWAL:
		w, err := wal.Open(filepath.Join(dir, "wal"))
		return raftstore.CheckedLog{WAL: w}, err
	}
	return nil, fmt.Errorf("%s holds no Raft log", dir)
}
