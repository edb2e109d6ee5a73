package fsm

import (
	"encoding/binary"
	"fmt"

	"go.etcd.io/bbolt"
)

// An operator's restore (`pontoon snapshot restore`) goes through the Raft
// log like any write, so that every server applies it or none does. The
// leader stages the snapshot's records in entries of their own (begin,
// chunks, commit), which every server writes aside, in a staging bucket;
// the commit entry swaps the staged records in as the whole state. A crash
// at any moment leaves every server, after replaying the log, on the old
// state (the commit never committed: what was staged is dropped by the
// next restore) or on the restored one (it did, and every server applies
// it). hashicorp/raft's own Restore installs the snapshot on the leader
// before any follower has it, and a leader that dies right after keeps
// that state and a hole in its log for good.
//
// A restore entry starts with restoreVersion where a transaction starts
// with txnVersion; forwarding between servers only carries transactions,
// so restore entries come from the leader alone.
const restoreVersion = 2

// RestoreKind says what a restore entry does.
type RestoreKind byte

// The restore entries, in the order the leader appends them.
const (
	// RestoreBegin empties the staging bucket for a new restore.
	RestoreBegin RestoreKind = iota + 1
	// RestoreChunk stages records.
	RestoreChunk
	// RestoreCommit replaces the state with what was staged.
	RestoreCommit
)

// maxChunkSize is about how many bytes of records a chunk holds; a chunk
// holds at least one record, however large.
const maxChunkSize = 1 << 20

var (
	bucketStaging = []byte("staging")
	// keyStaging in the meta bucket is the staged restore's ID, the
	// number of the chunk it expects next and the keys staged so far.
	keyStaging = []byte("staging")
)

// RestoreEntry is one entry of a restore.
type RestoreEntry struct {
	Kind RestoreKind
	// ID names the restore; its entries only apply to the restore the
	// last begin started.
	ID uint64
	// Seq is a chunk's number, from 0; in a commit, the number of chunks.
	Seq uint64
	// Keys is, in a commit, the number of records staged.
	Keys uint64
	// Records are a chunk's stored records (key, and revision, UID and
	// value as the store keeps them).
	Records []Record
}

// Record is a key and its stored record.
type Record struct {
	Key, Value []byte
}

// Marshal encodes the entry for the Raft log.
func (e *RestoreEntry) Marshal() []byte {
	b := []byte{restoreVersion, byte(e.Kind)}
	b = binary.AppendUvarint(b, e.ID)
	b = binary.AppendUvarint(b, e.Seq)
	b = binary.AppendUvarint(b, e.Keys)
	b = binary.AppendUvarint(b, uint64(len(e.Records)))
	for _, r := range e.Records {
		b = appendBytes(b, r.Key)
		b = appendBytes(b, r.Value)
	}
	return b
}

// unmarshalRestore decodes and checks a restore entry: everything it
// would write must be what the store can hold. Records alias b.
func unmarshalRestore(b []byte) (*RestoreEntry, error) {
	d := decoder{b: b}
	if v := d.byte(); v != restoreVersion {
		return nil, fmt.Errorf("%w: version %d", errMalformed, v)
	}
	e := &RestoreEntry{Kind: RestoreKind(d.byte()), ID: d.uvarint(), Seq: d.uvarint(), Keys: d.uvarint()}
	n := d.uvarint()
	if d.err == nil && n > uint64(len(d.b))/2 {
		return nil, fmt.Errorf("%w: %d records in %d bytes", errMalformed, n, len(d.b))
	}
	size := 0
	for i := uint64(0); i < n && d.err == nil; i++ {
		r := Record{Key: d.bytes(), Value: d.bytes()}
		if _, _, ok := recordHeader(r.Value); d.err == nil && (len(r.Key) == 0 || len(r.Key) > MaxKeySize || !ok || len(r.Value) > 9+maxUIDSize+MaxValueSize) {
			return nil, fmt.Errorf("%w: record %d of a restore chunk is not one the store can hold", errMalformed, i)
		}
		size += len(r.Key) + len(r.Value)
		e.Records = append(e.Records, r)
	}
	switch {
	case d.err != nil:
		return nil, d.err
	case len(d.b) != 0:
		return nil, fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	case e.Kind < RestoreBegin || e.Kind > RestoreCommit:
		return nil, fmt.Errorf("%w: restore entry of kind %d", errMalformed, e.Kind)
	case e.Kind != RestoreChunk && n > 0, e.Kind == RestoreChunk && n == 0:
		return nil, fmt.Errorf("%w: a restore %d entry with %d records", errMalformed, e.Kind, n)
	case n > 1 && size > maxChunkSize+MaxTxnSize:
		return nil, fmt.Errorf("%w: a restore chunk of %d bytes", errMalformed, size)
	}
	return e, nil
}

// applyRestore applies a restore entry in tx; reset says the state was
// replaced, and keys is then its number of keys. A refused entry changes
// nothing.
func applyRestore(tx *bbolt.Tx, index uint64, data []byte) (res *Result, reset bool, keys int64) {
	refuse := func(code Code, msg string) (*Result, bool, int64) {
		return &Result{Revision: index, Err: &TxnError{Code: code, Message: msg}}, false, 0
	}
	e, err := unmarshalRestore(data)
	if err != nil {
		return refuse(CodeInvalid, err.Error())
	}
	meta := tx.Bucket(bucketMeta)
	id, next, count, staged := decodeStaging(meta.Get(keyStaging))
	if e.Kind != RestoreBegin && (!staged || id != e.ID || next != e.Seq) {
		return refuse(CodeConflict, fmt.Sprintf("restore %d: entry %d of kind %d is not the one the staged restore expects", e.ID, e.Seq, e.Kind))
	}
	// Every bucket operation below is decided by the checks above, and
	// every record is inside bbolt's limits (unmarshalRestore): none can
	// fail but by the store itself failing.
	must := func(err error) {
		if err != nil {
			panic(fmt.Sprintf("fsm: restore entry at %d: %v", index, err))
		}
	}
	switch e.Kind {
	case RestoreBegin:
		if tx.Bucket(bucketStaging) != nil {
			must(tx.DeleteBucket(bucketStaging))
		}
		_, err := tx.CreateBucket(bucketStaging)
		must(err)
		must(meta.Put(keyStaging, encodeStaging(e.ID, 0, 0)))
	case RestoreChunk:
		b := tx.Bucket(bucketStaging)
		for _, r := range e.Records {
			if b.Get(r.Key) == nil {
				count++
			}
			must(b.Put(r.Key, r.Value))
		}
		must(meta.Put(keyStaging, encodeStaging(e.ID, next+1, count)))
	case RestoreCommit:
		if count != e.Keys {
			return refuse(CodeConflict, fmt.Sprintf("restore %d: %d records staged, the commit says %d", e.ID, count, e.Keys))
		}
		b := tx.Bucket(bucketStaging)
		must(tx.DeleteBucket(bucketKV))
		_, err := tx.CreateBucket(bucketKV)
		must(err)
		must(b.ForEach(kvBucket(tx).Put))
		must(tx.DeleteBucket(bucketStaging))
		must(meta.Delete(keyStaging))
		return &Result{Revision: index}, true, int64(e.Keys)
	}
	return &Result{Revision: index}, false, 0
}

func encodeStaging(id, next, count uint64) []byte {
	b := binary.BigEndian.AppendUint64(nil, id)
	b = binary.BigEndian.AppendUint64(b, next)
	return binary.BigEndian.AppendUint64(b, count)
}

func decodeStaging(b []byte) (id, next, count uint64, ok bool) {
	if len(b) != 24 {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), binary.BigEndian.Uint64(b[16:]), true
}

// isRestore reports whether a log entry's data is a restore entry.
func isRestore(data []byte) bool {
	return len(data) > 0 && data[0] == restoreVersion
}

// RestoreEntries reads the snapshot file at path (as ReadSnapshot leaves
// it) and hands emit, in order, the entries that restore it as restore id.
func RestoreEntries(path string, id uint64, emit func(*RestoreEntry) error) error {
	db, err := bbolt.Open(path, 0o600, &bbolt.Options{ReadOnly: true, Timeout: timeoutOpen})
	if err != nil {
		return fmt.Errorf("open snapshot: %w", err)
	}
	defer db.Close()
	if err := emit(&RestoreEntry{Kind: RestoreBegin, ID: id}); err != nil {
		return err
	}
	var chunks, keys uint64
	chunk := &RestoreEntry{Kind: RestoreChunk, ID: id}
	size := 0
	flush := func() error {
		if len(chunk.Records) == 0 {
			return nil
		}
		chunk.Seq = chunks
		if err := emit(chunk); err != nil {
			return err
		}
		chunks++
		chunk, size = &RestoreEntry{Kind: RestoreChunk, ID: id}, 0
		return nil
	}
	err = db.View(func(tx *bbolt.Tx) error {
		kv := tx.Bucket(bucketKV)
		if kv == nil {
			return fmt.Errorf("%w: not a Pontoon store", ErrBadSnapshot)
		}
		return kv.ForEach(func(k, v []byte) error {
			if size > 0 && size+len(k)+len(v) > maxChunkSize {
				if err := flush(); err != nil {
					return err
				}
			}
			// The records are bbolt's memory, valid while tx is open;
			// emit is done with each chunk before the next is built.
			chunk.Records = append(chunk.Records, Record{Key: k, Value: v})
			size += len(k) + len(v)
			keys++
			return nil
		})
	})
	if err == nil {
		err = flush()
	}
	if err != nil {
		return err
	}
	return emit(&RestoreEntry{Kind: RestoreCommit, ID: id, Seq: chunks, Keys: keys})
}
