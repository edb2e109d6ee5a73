package raftstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// raft-wal keeps no checksum of its entries: a damaged segment reads back
// as wrong data, silently (and its custom codecs cannot be read back after
// a restart: every segment says it holds the built-in one). So Pontoon
// stores each entry's data behind a CRC-32C of the entry (CheckedLog), and
// every start reads the whole log back (checkLog): damage in the last
// segment is what a crash in the middle of an append leaves, and is cut
// off, as etcd repairs a torn WAL tail; damage anywhere else refuses the
// start, leaving the data dir as it is.

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

// checkLog reads every entry of the raft-wal log in dir back. The first
// damaged one in the last segment, and everything after it, is cut off;
// one in an earlier segment is an error naming it.
func checkLog(w CheckedLog, dir string, logger *slog.Logger) error {
	first, err := w.FirstIndex()
	if err != nil {
		return err
	}
	last, err := w.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	tail, err := tailSegmentBase(dir)
	if err != nil {
		return err
	}
	var l raft.Log
	for i := first; i <= last; i++ {
		err := w.GetLog(i, &l)
		if err == nil && l.Index != i {
			err = fmt.Errorf("%w: index %d where %d belongs", errDamagedEntry, l.Index, i)
		}
		if err == nil {
			continue
		}
		if i < tail {
			return fmt.Errorf("the Raft log in %s is damaged at entry %d of %d-%d, in a segment before the last (%v); the data dir is left as it is: remove this server (pontoon operator raft remove-peer) and start it with an empty data dir to rejoin", dir, i, first, last, err)
		}
		logger.Warn("cutting off the torn end of the Raft log, as a crash in the middle of an append leaves it", "from", i, "to", last, "err", err)
		if err := w.DeleteRange(i, last); err != nil {
			return fmt.Errorf("cut off the torn end of the Raft log in %s at %d: %w", dir, i, err)
		}
		return nil
	}
	return nil
}

// tailSegmentBase returns the first index of the last segment in dir, from
// raft-wal's file names (BASEINDEX-ID.wal).
func tailSegmentBase(dir string) (uint64, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		return 0, err
	}
	var bases []uint64
	for _, f := range files {
		base, _, _ := strings.Cut(filepath.Base(f), "-")
		n, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("raft log segment %s: unexpected name", f)
		}
		bases = append(bases, n)
	}
	if len(bases) == 0 {
		return 0, fmt.Errorf("no raft log segment in %s", dir)
	}
	return slices.Max(bases), nil
}
