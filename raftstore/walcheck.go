package raftstore

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
)

// raft-wal checks the last batch written to its last segment when it
// opens, and cuts it off when a crash tore it (its checksum does not
// match), but keeps no checksum of anything else: a damaged segment reads
// back as wrong data, silently (and its custom codecs cannot be read back
// after a restart: every segment says it holds the built-in one). So
// Pontoon stores each entry's data behind a CRC-32C of the entry
// (CheckedLog), and every start reads the log back (checkLog): damage is
// refused with one line, and the data dir left as it is. Sealed segments
// never change, so each is read back once: the ones already verified are
// recorded beside the log (with their size), and a start reads only the
// others and the last segment. A 100,000-key store's log took a restart
// from about 1 to 3.2 s when all of it was read every time.

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

// verifiedFile, in the raft dir, names the sealed segments already read
// back, with their sizes.
const verifiedFile = "wal-verified.json"

// checkLog reads the entries of the raft-wal log in walDir back, but those
// of sealed segments verifiedFile in raftDir records, and returns an error
// naming the first damaged one. Then it records every sealed segment.
func checkLog(w CheckedLog, raftDir, walDir string) error {
	first, err := w.FirstIndex()
	if err != nil {
		return err
	}
	last, err := w.LastIndex()
	if err != nil || last == 0 {
		return err
	}
	segments, err := listSegments(walDir)
	if err != nil {
		return err
	}
	verified := map[string]int64{}
	if b, err := os.ReadFile(filepath.Join(raftDir, verifiedFile)); err == nil {
		json.Unmarshal(b, &verified)
	}
	// skip reports whether entry i lies in a sealed segment read before.
	skip := func(i uint64) (bool, uint64) {
		for k, seg := range segments[:max(len(segments)-1, 0)] {
			if end := segments[k+1].base; i >= seg.base && i < end {
				return verified[seg.name] == seg.size, end
			}
		}
		return false, 0
	}
	var l raft.Log
	for i := first; i <= last; i++ {
		if ok, next := skip(i); ok {
			i = next - 1
			continue
		}
		err := w.GetLog(i, &l)
		if err == nil && l.Index != i {
			err = fmt.Errorf("%w: index %d where %d belongs", errDamagedEntry, l.Index, i)
		}
		if err != nil {
			return fmt.Errorf("the Raft log in %s is damaged at entry %d of %d-%d (%v); the data dir is left as it is: remove this server (pontoon operator raft remove-peer) and start it with an empty data dir to rejoin", walDir, i, first, last, err)
		}
	}
	sealed := map[string]int64{}
	for _, seg := range segments[:max(len(segments)-1, 0)] {
		sealed[seg.name] = seg.size
	}
	b, _ := json.Marshal(sealed)
	return writeSynced(filepath.Join(raftDir, verifiedFile), b)
}

// segment is a raft-wal segment file: BASEINDEX-ID.wal.
type segment struct {
	name string
	base uint64
	size int64
}

// listSegments lists the segment files in dir by their first index.
func listSegments(dir string) ([]segment, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.wal"))
	if err != nil {
		return nil, err
	}
	var out []segment
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		base, _, _ := strings.Cut(filepath.Base(f), "-")
		n, err := strconv.ParseUint(base, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("raft log segment %s: unexpected name", f)
		}
		out = append(out, segment{name: filepath.Base(f), base: n, size: fi.Size()})
	}
	slices.SortFunc(out, func(a, b segment) int { return cmp.Compare(a.base, b.base) })
	return out, nil
}
