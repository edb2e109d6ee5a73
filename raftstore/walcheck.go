package raftstore

import (
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
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
// (CheckedLog), and reads it back (logChecker): at start, where damage is
// refused with one line and the data dir left as it is, and in the
// background. Sealed segments never change, so each is read back once,
// soon after it is sealed, and recorded beside the log with its size; a
// start reads only the last segment and those not recorded. Reading all
// of a 100,000-key store's log at every start took a follower's restart
// from about 1 to 3.2 s (make bench).

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

// logChecker reads a raft-wal log's entries back and records the sealed
// segments it has verified in verifiedFile.
type logChecker struct {
	w               CheckedLog
	raftDir, walDir string
}

// check reads back the entries of the sealed segments not recorded yet,
// and those of the last segment too when withTail is set, and returns an
// error naming the first damaged one. The sealed segments it read whole
// are recorded.
func (c logChecker) check(withTail bool) error {
	segments, err := listSegments(c.walDir)
	if err != nil || len(segments) == 0 {
		return err
	}
	verified := map[string]int64{}
	if b, err := os.ReadFile(filepath.Join(c.raftDir, verifiedFile)); err == nil {
		json.Unmarshal(b, &verified)
	}
	first, err := c.w.FirstIndex()
	if err != nil {
		return err
	}
	last, err := c.w.LastIndex()
	if err != nil {
		return err
	}
	recorded := map[string]int64{}
	for k, seg := range segments {
		from, to := seg.base, last // the last segment runs to the log's end
		sealed := k < len(segments)-1
		if sealed {
			to = segments[k+1].base - 1
		}
		switch {
		case sealed && verified[seg.name] == seg.size:
			recorded[seg.name] = seg.size
			continue
		case !sealed && !withTail:
			continue
		}
		for i := max(from, first); i <= to && i <= last; i++ {
			var l raft.Log
			err := c.w.GetLog(i, &l)
			if errors.Is(err, raft.ErrLogNotFound) && sealed {
				continue // compacted meanwhile: what is left of it is read
			}
			if err == nil && l.Index != i {
				err = fmt.Errorf("%w: index %d where %d belongs", errDamagedEntry, l.Index, i)
			}
			if err != nil {
				return fmt.Errorf("the Raft log in %s is damaged at entry %d of %d-%d (%w); the data dir is left as it is: remove this server (pontoon operator raft remove-peer) and start it with an empty data dir to rejoin", c.walDir, i, first, last, err)
			}
		}
		if sealed {
			recorded[seg.name] = seg.size
		}
	}
	if maps.Equal(recorded, verified) {
		return nil // nothing new sealed, nothing compacted: no write
	}
	b, _ := json.Marshal(recorded)
	return writeSynced(filepath.Join(c.raftDir, verifiedFile), b)
}

// verifySealed reads back the segments sealed since it last ran (the node
// runs it every sealedCheckInterval), so that a restart has only the last
// one to read; damage is logged and counted, as the log verifier's
// mismatches are.
func (s *logStore) verifySealed() {
	switch err := s.checker.check(false); {
	case errors.Is(err, errDamagedEntry):
		s.verifications.WithLabelValues("damaged").Inc()
		s.logger.Error("raft log segment damaged on disk", "err", err)
	case err != nil:
		s.logger.Warn("reading sealed raft log segments back", "err", err)
	}
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
		if errors.Is(err, os.ErrNotExist) {
			continue // removed by a compaction meanwhile
		}
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
