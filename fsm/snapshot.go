package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// A snapshot is a consistent copy of the bbolt file followed by the SHA-256
// of that copy (as etcd's snapshots are). The same format goes to Raft's
// snapshot store, to followers that install a snapshot, and to operators'
// `pontoon snapshot save` files, so there is one reader for all three and a
// truncated or damaged copy is always caught before it replaces anything.

// ErrBadSnapshot is wrapped by every error about a snapshot's content.
var ErrBadSnapshot = errors.New("invalid snapshot")

// WriteSnapshot writes a consistent snapshot of the current state to w,
// recording the latest applied index.
func (s *Store) WriteSnapshot(w io.Writer) error {
	s.commitPending()
	tx, err := s.begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	return writeSnapshot(tx, w)
}

func writeSnapshot(tx *bbolt.Tx, w io.Writer) error {
	h := sha256.New()
	if _, err := tx.WriteTo(io.MultiWriter(w, h)); err != nil {
		return fmt.Errorf("write snapshot: %w", err)
	}
	if _, err := w.Write(h.Sum(nil)); err != nil {
		return fmt.Errorf("write snapshot checksum: %w", err)
	}
	return nil
}

// Snapshot implements raft.FSM. The read transaction taken here, on the
// apply goroutine, fixes the state; Persist copies it concurrently with
// later applies. Raft compacts the log up to the snapshot's index, so the
// snapshot must hold everything applied, and record it as applied: it
// commits even entries that wrote no key.
func (s *Store) Snapshot() (raft.FSMSnapshot, error) {
	s.commitPending()
	tx, err := s.begin()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	return &fsmSnapshot{tx: tx}, nil
}

type fsmSnapshot struct {
	tx *bbolt.Tx
}

func (f *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := writeSnapshot(f.tx, sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (f *fsmSnapshot) Release() {
	f.tx.Rollback()
}

// SnapshotInfo describes a verified snapshot.
type SnapshotInfo struct {
	// Index and Term are those of the last entry applied to the state.
	Index, Term uint64
	// Size is the size of the snapshot in bytes, checksum included.
	Size int64
	// Objects is the number of keys.
	Objects int
}

// ReadSnapshot copies a snapshot from r into a new file in dir, verifies its
// checksum and its content, and returns the path of the bbolt file (checksum
// removed) with what it holds. The caller owns the file.
func ReadSnapshot(r io.Reader, dir string) (path string, info SnapshotInfo, err error) {
	f, err := os.CreateTemp(dir, "snapshot-*.db")
	if err != nil {
		return "", info, fmt.Errorf("read snapshot: %w", err)
	}
	name := f.Name()
	defer func() {
		if err != nil {
			os.Remove(name)
		}
	}()
	n, err := io.Copy(f, r)
	if err == nil {
		err = verifyChecksum(f, n)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", info, err
	}
	if info, err = inspectFile(name); err != nil {
		return "", info, err
	}
	info.Size = n
	return name, info, nil
}

// verifyChecksum checks the trailing SHA-256 of the n-byte file f and cuts it off.
func verifyChecksum(f *os.File, n int64) error {
	if n < sha256.Size {
		return fmt.Errorf("%w: %d bytes is too short", ErrBadSnapshot, n)
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.NewSectionReader(f, 0, n-sha256.Size)); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	want := make([]byte, sha256.Size)
	if _, err := f.ReadAt(want, n-sha256.Size); err != nil {
		return fmt.Errorf("read snapshot: %w", err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return fmt.Errorf("%w: checksum mismatch (truncated or corrupt)", ErrBadSnapshot)
	}
	return f.Truncate(n - sha256.Size)
}

// inspectFile opens a bbolt file read-only and reads what a snapshot holds.
func inspectFile(path string) (SnapshotInfo, error) {
	var info SnapshotInfo
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeoutOpen})
	if err != nil {
		return info, fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	defer db.Close()
	err = db.View(func(tx *bbolt.Tx) error {
		kv, meta := tx.Bucket(bucketKV), tx.Bucket(bucketMeta)
		if kv == nil || meta == nil {
			return fmt.Errorf("%w: not a Pontoon store", ErrBadSnapshot)
		}
		var err error
		if info.Index, info.Term, err = decodeApplied(meta.Get(keyApplied)); err != nil {
			return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
		}
		return kv.ForEach(func(k, v []byte) error {
			if _, _, ok := recordHeader(v); !ok {
				return fmt.Errorf("%w: record %q is damaged", ErrBadSnapshot, k)
			}
			info.Objects++
			return nil
		})
	})
	return info, err
}

// Restore implements raft.FSM: it replaces the whole state with a snapshot.
// The snapshot is verified in a file beside the store before anything is
// replaced, so a bad one leaves the store as it was.
func (s *Store) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	path, info, err := ReadSnapshot(rc, filepath.Dir(s.path))
	if err != nil {
		return err
	}
	s.commitPending()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Close(); err != nil {
		os.Remove(path)
		return fmt.Errorf("restore: close store: %w", err)
	}
	if err := os.Rename(path, s.path); err != nil {
		os.Remove(path)
		return fmt.Errorf("restore: %w", err)
	}
	if err := syncDir(filepath.Dir(s.path)); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	prev := s.applied
	if err := s.open(); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	// Watchers and listings at revisions up to the old state's must not
	// mix with the new state; they get ErrCompacted and start over.
	s.hub.reset(max(prev, info.Index))
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
