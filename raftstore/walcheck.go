package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// raft-wal checks the last batch written to its last segment when it
// opens, and cuts it off when a crash tore it (its checksum does not
// match), but keeps no checksum of anything else: a damaged segment reads
// back as wrong data, silently (and its custom codecs cannot be read back
// after a restart: every segment says it holds the built-in one). So
// Pontoon stores each entry's data behind a CRC-32C of the entry
// (CheckedLog), and every start reads the whole log back (checkLog):
// damage is refused with one line, and the data dir left as it is.

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errDamagedEntry is a log entry whose checksum does not match.
var errDamagedEntry = errors.New("damaged log entry")

// CheckedLog is a raft-wal log whose entries carry a CRC-32C of their
// index, term, type, data and extensions in front of their data: how
// Pontoon writes every raft-wal log, and so how every reader must open one.
type CheckedLog struct {
	*wal.WAL
}

// StoreLog implements raft.LogStore.
func (c CheckedLog) StoreLog(l *raft.Log) error { return c.StoreLogs([]*raft.Log{l}) }

// StoreLogs implements raft.LogStore; the logs given are not changed.
func (c CheckedLog) StoreLogs(logs []*raft.Log) error {
	sealed := make([]*raft.Log, len(logs))
	for i, l := range logs {
		s := *l
		s.Data = binary.BigEndian.AppendUint32(make([]byte, 0, 4+len(l.Data)), entrySum(l))
		s.Data = append(s.Data, l.Data...)
		sealed[i] = &s
	}
	return c.WAL.StoreLogs(sealed)
}

// GetLog implements raft.LogStore.
func (c CheckedLog) GetLog(index uint64, l *raft.Log) error {
	if err := c.WAL.GetLog(index, l); err != nil {
		return err
	}
	if len(l.Data) < 4 {
		return fmt.Errorf("%w: entry %d has no checksum", errDamagedEntry, index)
	}
	sum := binary.BigEndian.Uint32(l.Data)
	l.Data = l.Data[4:]
	if sum != entrySum(l) {
		return fmt.Errorf("%w: entry %d's checksum does not match", errDamagedEntry, index)
	}
	return nil
}

func entrySum(l *raft.Log) uint32 {
	var h [17]byte
	binary.BigEndian.PutUint64(h[:], l.Index)
	binary.BigEndian.PutUint64(h[8:], l.Term)
	h[16] = byte(l.Type)
	sum := crc32.Update(0, castagnoli, h[:])
	sum = crc32.Update(sum, castagnoli, l.Data)
	return crc32.Update(sum, castagnoli, l.Extensions)
}

// checkLog reads every entry of the raft-wal log in dir back, and
// returns an error naming the first damaged one.
func checkLog(w CheckedLog, dir string) error {
	first, err := w.FirstIndex()
	if err != nil {
		return err
	}
	last, err := w.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	var l raft.Log
	for i := first; i <= last; i++ {
		err := w.GetLog(i, &l)
		if err == nil && l.Index != i {
			err = fmt.Errorf("%w: index %d where %d belongs", errDamagedEntry, l.Index, i)
		}
		if err != nil {
			return fmt.Errorf("the Raft log in %s is damaged at entry %d of %d-%d (%v); the data dir is left as it is: remove this server (pontoon operator raft remove-peer) and start it with an empty data dir to rejoin", dir, i, first, last, err)
		}
	}
	return nil
}
