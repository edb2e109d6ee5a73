// Package fsm is Pontoon's object store and the state machine of its Raft
// log.
//
// Keys map to opaque object bytes in a bbolt file. Every Raft entry is a
// transaction (see Txn); applying it is deterministic (no clocks, no
// randomness, no map order), so every server that applies the same log holds
// byte-identical state. A key's modification revision is the Raft index of
// the entry that last wrote it, which is the same on every server; the API
// layer hands it out as the Kubernetes resourceVersion.
//
// The index of the last applied entry is stored in the same bbolt
// transaction as the writes (etcd's consistent index): after a crash the
// store knows exactly which entries it already holds, and Raft's replay of
// older entries is skipped. Applies arrive in batches (raft.BatchingFSM),
// and the batches go into one bbolt write transaction that is committed
// every Options.CommitInterval, as etcd's backend commits its batch
// transaction: under load a commit writes each touched page once for many
// batches instead of once per batch. A read still sees every entry applied
// before it was called: Get reads the pending transaction itself, and a
// listing commits it first if it wrote under the listed prefix. A crash
// loses only what was never committed, which the Raft log still holds and
// replays.
//
// The package does no I/O beyond its own bbolt file and knows nothing of the
// network, so it is tested by feeding it log entries in memory.
package fsm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// timeoutOpen bounds the wait for bbolt's file lock: a second process on
// the same data dir fails instead of hanging.
const timeoutOpen = time.Second

var (
	bucketKV   = []byte("kv")
	bucketMeta = []byte("meta")
	keyApplied = []byte("applied")
)

// KV is a stored key with its value, UID and modification revision.
type KV struct {
	Key         string
	Value       []byte
	UID         string
	ModRevision uint64
}

// Options tune a Store.
type Options struct {
	// WatchHistory is how many events the watch history keeps.
	WatchHistory int
	// NoSync skips fsync on commit; Close syncs. The caller must be able
	// to rebuild the store after a machine crash (raftstore does).
	NoSync bool
	// CommitInterval is how long applied entries may wait for a commit
	// when nothing reads them; zero means DefaultCommitInterval.
	CommitInterval time.Duration
}

// DefaultWatchHistory is the number of events kept when Options leave it 0.
const DefaultWatchHistory = 20000

// A commit of the applied entries is due when the oldest uncommitted one
// has waited Options.CommitInterval, or when they hold maxPendingBytes of
// log data, which bounds the memory the open write transaction holds.
// etcd's backend commits every 100 ms likewise.
const (
	DefaultCommitInterval = 100 * time.Millisecond
	maxPendingBytes       = 16 << 20
)

// Store is the object store. Apply, ApplyBatch, Snapshot and Restore are
// called by Raft from one goroutine; the read methods may be called from any
// number of goroutines at once.
type Store struct {
	path string
	opts Options

	// mu guards db against Restore swapping the file. Readers hold it only
	// while they begin a bbolt transaction.
	mu sync.RWMutex
	db *bbolt.DB

	// pendingMu guards the write transaction that holds the entries
	// applied since the last commit; readers read or commit it too.
	pendingMu    sync.Mutex
	pending      *bbolt.Tx // nil when everything applied is committed
	pendingSince time.Time
	pendingBytes int
	pendingKeys  []string // written by the pending transaction
	pendingReset bool     // the pending transaction replaced the whole state

	// applied and term are the last applied entry; written only by the
	// apply goroutine, read by it alone (others read the hub).
	applied, term uint64
	keys          atomic.Int64
	hub           *hub
	lastApply     atomic.Int64 // nanoseconds the last batch took
}

// Open opens or creates the store at path. A file that is not a store (or is
// damaged beyond what bbolt's two meta pages recover from) is an error; the
// file is never rewritten to make it fit.
func Open(path string, opts Options) (*Store, error) {
	if opts.WatchHistory == 0 {
		opts.WatchHistory = DefaultWatchHistory
	}
	if opts.CommitInterval == 0 {
		opts.CommitInterval = DefaultCommitInterval
	}
	s := &Store{path: path, opts: opts}
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

func boltOptions(readOnly bool) *bbolt.Options {
	return &bbolt.Options{
		Timeout:  timeoutOpen,
		ReadOnly: readOnly,
		// A large initial mmap avoids remapping (which waits for every
		// open read transaction) as the file grows; it costs address space,
		// not memory.
		InitialMmapSize: 1 << 30,
		NoFreelistSync:  true,
		FreelistType:    bbolt.FreelistMapType,
	}
}

func (s *Store) open() error {
	db, err := bbolt.Open(s.path, 0o600, boltOptions(false))
	if err != nil {
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	db.NoSync = s.opts.NoSync
	if err := ensureBuckets(db); err != nil {
		db.Close()
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	var keys int
	err = db.View(func(tx *bbolt.Tx) error {
		var err error
		s.applied, s.term, err = decodeApplied(tx.Bucket(bucketMeta).Get(keyApplied))
		keys = tx.Bucket(bucketKV).Stats().KeyN
		return err
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("open store %s: %w", s.path, err)
	}
	s.db = db
	s.keys.Store(int64(keys))
	if s.hub == nil {
		s.hub = newHub(s.opts.WatchHistory, s.applied)
	}
	return nil
}

// ensureBuckets creates the buckets of a new store. An existing store is
// only read: opening it leaves the file as it was.
func ensureBuckets(db *bbolt.DB) error {
	var missing bool
	db.View(func(tx *bbolt.Tx) error {
		missing = tx.Bucket(bucketKV) == nil || tx.Bucket(bucketMeta) == nil
		return nil
	})
	if !missing {
		return nil
	}
	return db.Update(func(tx *bbolt.Tx) error {
		for _, b := range [][]byte{bucketKV, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
}

func decodeApplied(b []byte) (index, term uint64, err error) {
	switch len(b) {
	case 0:
		return 0, 0, nil
	case 16:
		return binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:]), nil
	default:
		return 0, 0, fmt.Errorf("applied index record is %d bytes, want 16", len(b))
	}
}

func encodeApplied(index, term uint64) []byte {
	b := make([]byte, 16)
	binary.BigEndian.PutUint64(b, index)
	binary.BigEndian.PutUint64(b[8:], term)
	return b
}

// A stored record is the modification revision, the UID and the value.
func encodeRecord(rev uint64, uid string, value []byte) []byte {
	b := make([]byte, 0, 9+len(uid)+len(value))
	b = binary.BigEndian.AppendUint64(b, rev)
	b = append(b, byte(len(uid)))
	b = append(b, uid...)
	return append(b, value...)
}

// decodeRecord copies a record out of bbolt's memory into a KV.
func decodeRecord(key, rec []byte) (KV, error) {
	if len(rec) < 9 || len(rec) < 9+int(rec[8]) {
		return KV{}, fmt.Errorf("record for %q is truncated (%d bytes)", key, len(rec))
	}
	n := 9 + int(rec[8])
	return KV{
		Key:         string(key),
		ModRevision: binary.BigEndian.Uint64(rec),
		UID:         string(rec[9:n]),
		Value:       bytes.Clone(rec[n:]),
	}, nil
}

// recordHeader reads the revision and UID of a record without copying the value.
func recordHeader(rec []byte) (rev uint64, uid string, ok bool) {
	if len(rec) < 9 || len(rec) < 9+int(rec[8]) {
		return 0, "", false
	}
	return binary.BigEndian.Uint64(rec), string(rec[9 : 9+int(rec[8])]), true
}

// Close commits what is pending, syncs and closes the bbolt file.
func (s *Store) Close() error {
	s.commitPending()
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.db.Sync(); err != nil {
		s.db.Close()
		return fmt.Errorf("sync store: %w", err)
	}
	return s.db.Close()
}

// Apply applies one log entry. Raft calls ApplyBatch instead; Apply exists to
// satisfy raft.FSM.
func (s *Store) Apply(l *raft.Log) any {
	return s.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies committed log entries in the pending bbolt
// transaction and returns a *Result for each command entry. Entries at or
// below the stored applied index were applied before a restart and are
// skipped.
func (s *Store) ApplyBatch(logs []*raft.Log) []any {
	start := time.Now()
	results := make([]any, len(logs))
	s.pendingMu.Lock()
	a, err := s.applyPending(logs, results)
	s.pendingMu.Unlock()
	if err != nil {
		// The log is committed; a server that cannot write it must stop
		// rather than diverge. On restart it replays from its applied index.
		panic(fmt.Sprintf("fsm: cannot write applied entries up to %d: %v", a.index, err))
	}
	s.applied, s.term = a.index, a.term
	if a.resetAt != 0 {
		// A restore replaced the state: watchers start over from it.
		s.keys.Store(a.keys)
		s.hub.reset(a.resetAt)
	}
	s.keys.Add(a.keyDelta)
	s.hub.publish(a.events, a.index)
	s.lastApply.Store(int64(time.Since(start)))
	return results
}

// applied is what a batch of entries did.
type applied struct {
	index, term uint64
	events      []Event
	keyDelta    int64
	// resetAt is the index of a restore that replaced the state in the
	// batch (zero if none), and keys its number of keys; events and
	// keyDelta are those after it.
	resetAt uint64
	keys    int64
}

// applyPending applies logs in the pending transaction, beginning one if
// none is pending, and commits it when a commit is due. s.pendingMu is
// held.
func (s *Store) applyPending(logs []*raft.Log, results []any) (a applied, err error) {
	a.index, a.term = s.applied, s.term
	if s.pending == nil {
		if s.pending, err = s.db.Begin(true); err != nil {
			return a, err
		}
		s.pendingSince, s.pendingBytes = time.Now(), 0
	}
	kv := kvBucket(s.pending)
	for i, l := range logs {
		if l.Index <= a.index {
			continue
		}
		a.index, a.term = l.Index, l.Term
		s.pendingBytes += len(l.Data)
		if l.Type != raft.LogCommand {
			continue
		}
		if isRestore(l.Data) {
			res, reset, keys := applyRestore(s.pending, l.Index, l.Data)
			results[i] = res
			if reset {
				kv = kvBucket(s.pending)
				a.events, a.keyDelta, a.resetAt, a.keys = nil, 0, l.Index, keys
				s.pendingReset = true
			}
			continue
		}
		res, evs, delta := applyTxn(kv, l.Index, l.Data)
		results[i] = res
		for _, ev := range evs {
			s.pendingKeys = append(s.pendingKeys, ev.Key)
		}
		a.events = append(a.events, evs...)
		a.keyDelta += delta
	}
	if a.index == s.applied {
		return a, nil
	}
	if err := s.pending.Bucket(bucketMeta).Put(keyApplied, encodeApplied(a.index, a.term)); err != nil {
		return a, err
	}
	if s.pendingBytes >= maxPendingBytes || time.Since(s.pendingSince) >= s.opts.CommitInterval {
		s.commitLocked()
	}
	return a, nil
}

// kvBucket returns tx's key bucket, set to fill its pages. Pages split
// half full by default, which wastes up to half of the file (and of the
// memory it maps) when keys are written in order, as Kubernetes' keys
// mostly are; etcd fills its key bucket to 90% likewise.
func kvBucket(tx *bbolt.Tx) *bbolt.Bucket {
	kv := tx.Bucket(bucketKV)
	kv.FillPercent = 0.9
	return kv
}

// commitPending commits the entries applied since the last commit.
func (s *Store) commitPending() {
	s.pendingMu.Lock()
	defer s.pendingMu.Unlock()
	s.commitLocked()
}

// commitLocked commits the pending transaction, if any; s.pendingMu is
// held. Its entries may have been answered and published already, so a
// server that cannot write them must stop rather than serve state that
// lacks them; on restart it replays them from the log.
func (s *Store) commitLocked() {
	if s.pending == nil {
		return
	}
	tx := s.pending
	s.pending, s.pendingKeys, s.pendingReset = nil, nil, false
	if err := tx.Commit(); err != nil {
		panic(fmt.Sprintf("fsm: cannot commit applied entries: %v", err))
	}
}

// pendingUnder reports whether the pending transaction wrote a key under
// prefix (none is when nothing is pending); s.pendingMu is held.
func (s *Store) pendingUnder(prefix string) bool {
	if s.pendingReset {
		return true
	}
	for _, k := range s.pendingKeys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}

// applyTxn checks every precondition against the state before the
// transaction, then writes all operations, or none.
func applyTxn(kv *bbolt.Bucket, index uint64, data []byte) (*Result, []Event, int64) {
	txn, err := UnmarshalTxn(data)
	if err == nil {
		err = txn.Validate()
	}
	if err != nil {
		var te *TxnError
		if !errors.As(err, &te) {
			te = &TxnError{Code: CodeInvalid, Message: err.Error()}
		}
		return &Result{Revision: index, Err: te}, nil, 0
	}
	for i, op := range txn.Ops {
		if err := check(kv, i, op); err != nil {
			return &Result{Revision: index, Err: err}, nil, 0
		}
	}
	events := make([]Event, 0, len(txn.Ops))
	var delta int64
	for _, op := range txn.Ops {
		if op.Type == OpCheck {
			continue
		}
		key := []byte(op.Key)
		var prev KV
		if rec := kv.Get(key); rec != nil {
			prev, _ = decodeRecord(key, rec)
		}
		ev := Event{Key: op.Key, Revision: index, Prev: prev}
		var err error
		switch op.Type {
		case OpPut:
			// The event's value is the record's own copy: bbolt only
			// reads what it is given, and op.Value is the log entry's.
			rec := encodeRecord(index, op.UID, op.Value)
			ev.Type, ev.Value, ev.UID = EventPut, rec[len(rec)-len(op.Value):], op.UID
			err = kv.Put(key, rec)
			if prev.ModRevision == 0 {
				delta++
			}
		case OpDelete:
			if prev.ModRevision == 0 {
				// A second delete of the same key within one transaction.
				continue
			}
			ev.Type = EventDelete
			err = kv.Delete(key)
			delta--
		}
		if err != nil {
			// Validate keeps every operation inside bbolt's limits, so
			// nothing in the entry makes a write fail: this is the store
			// itself failing, as a failed commit is.
			panic(fmt.Sprintf("fsm: write %q at %d: %v", truncate(op.Key, 256), index, err))
		}
		events = append(events, ev)
	}
	return &Result{Revision: index}, events, delta
}

func check(kv *bbolt.Bucket, i int, op Op) error {
	rec := kv.Get([]byte(op.Key))
	rev, uid, _ := recordHeader(rec)
	fail := func(code Code, msg string) error {
		return &TxnError{Code: code, Op: i, Key: op.Key, Current: rev, Message: msg}
	}
	switch {
	case rec != nil && op.Cond.MustNotExist:
		return fail(CodeExists, "key already exists")
	case rec == nil && (op.Cond.MustExist || op.Type == OpDelete || op.Cond.ModRevision != 0 || op.Cond.UID != ""):
		return fail(CodeNotFound, "key not found")
	case op.Cond.ModRevision != 0 && op.Cond.ModRevision != rev:
		return fail(CodeConflict, fmt.Sprintf("revision is %d, not %d", rev, op.Cond.ModRevision))
	case op.Cond.UID != "" && op.Cond.UID != uid:
		return fail(CodeConflict, fmt.Sprintf("uid is %q, not %q", uid, op.Cond.UID))
	}
	return nil
}

// beginRead starts a read transaction whose keys under prefix are those
// of the latest applied revision, and returns it with that revision. The
// pending transaction is committed first only when it wrote under prefix:
// otherwise the last commit holds the same keys there, and a listing of
// one resource does not cost a commit for every write to another. The
// caller must not hold another read transaction: a commit that grows the
// file's mapping waits for every read transaction to end.
func (s *Store) beginRead(prefix string) (*bbolt.Tx, uint64, error) {
	s.pendingMu.Lock()
	// The read begins before the lock is let go: a commit in between
	// could add writes under prefix that the latest revision known here
	// does not cover.
	defer s.pendingMu.Unlock()
	if s.pendingUnder(prefix) {
		s.commitLocked()
	}
	var latest uint64
	if s.pending != nil {
		var err error
		if latest, err = appliedIn(s.pending); err != nil {
			return nil, 0, err
		}
	}
	tx, err := s.begin()
	if err != nil {
		return nil, 0, err
	}
	index, err := appliedIn(tx)
	if err != nil {
		tx.Rollback()
		return nil, 0, err
	}
	return tx, max(index, latest), nil
}

// begin starts a read transaction of the committed state.
func (s *Store) begin() (*bbolt.Tx, error) {
	s.mu.RLock()
	tx, err := s.db.Begin(false)
	s.mu.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("begin read: %w", err)
	}
	return tx, nil
}

func appliedIn(tx *bbolt.Tx) (uint64, error) {
	index, _, err := decodeApplied(tx.Bucket(bucketMeta).Get(keyApplied))
	return index, err
}

// Get returns the key's current state, whether it exists, and the revision
// of the state it was read from. Unlike a listing it commits nothing: it
// reads what is applied but not committed in the pending transaction
// itself. Kubernetes' writes read a key or two each (the object, its
// namespace), and a commit for each would write pages per write again.
func (s *Store) Get(key string) (kv KV, found bool, rev uint64, err error) {
	s.pendingMu.Lock()
	if s.pending != nil {
		defer s.pendingMu.Unlock()
		return get(s.pending, key)
	}
	s.pendingMu.Unlock()
	// Everything applied before the call is committed.
	tx, err := s.begin()
	if err != nil {
		return KV{}, false, 0, err
	}
	defer tx.Rollback()
	return get(tx, key)
}

func get(tx *bbolt.Tx, key string) (kv KV, found bool, rev uint64, err error) {
	rev, err = appliedIn(tx)
	if err != nil {
		return KV{}, false, 0, err
	}
	rec := tx.Bucket(bucketKV).Get([]byte(key))
	if rec == nil {
		return KV{}, false, rev, nil
	}
	kv, err = decodeRecord([]byte(key), rec)
	return kv, err == nil, rev, err
}

// Applied returns the index of the last applied entry.
func (s *Store) Applied() uint64 {
	return s.hub.stats().Published
}

// WaitApplied blocks until the entry at index has been applied.
func (s *Store) WaitApplied(ctx context.Context, index uint64) error {
	return s.hub.waitPublished(ctx, index)
}

// Watch returns a watcher of the events under prefix after revision rev.
func (s *Store) Watch(prefix string, rev uint64) (*Watcher, error) {
	return s.hub.watch(prefix, rev)
}

// Stats describes the store, for metrics and operators.
type Stats struct {
	Applied      uint64
	Keys         int64
	FileSize     int64
	LastApply    time.Duration
	WatchHistory HistoryStats
}

// Stats returns the store's current figures.
func (s *Store) Stats() Stats {
	st := Stats{
		Keys:         s.keys.Load(),
		LastApply:    time.Duration(s.lastApply.Load()),
		WatchHistory: s.hub.stats(),
	}
	st.Applied = st.WatchHistory.Published
	if fi, err := os.Stat(s.path); err == nil {
		st.FileSize = fi.Size()
	}
	return st
}

// Digest returns the applied index and a SHA-256 of every key, UID,
// revision and value: equal digests at equal indexes mean equal state.
func (s *Store) Digest() (index uint64, sum [32]byte, err error) {
	tx, index, err := s.beginRead("")
	if err != nil {
		return 0, sum, err
	}
	defer tx.Rollback()
	h := sha256.New()
	err = tx.Bucket(bucketKV).ForEach(func(k, v []byte) error {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(k)))
		h.Write(n[:])
		h.Write(k)
		binary.BigEndian.PutUint64(n[:], uint64(len(v)))
		h.Write(n[:])
		h.Write(v)
		return nil
	})
	copy(sum[:], h.Sum(nil))
	return index, sum, err
}
