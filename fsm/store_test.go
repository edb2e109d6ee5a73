package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func openTest(t *testing.T, history int) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "fsm.db"), Options{WatchHistory: history, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// logOf turns transactions into consecutive log entries starting at index first.
func logOf(first uint64, txns ...Txn) []*raft.Log {
	logs := make([]*raft.Log, len(txns))
	for i := range txns {
		logs[i] = &raft.Log{Index: first + uint64(i), Term: 1, Type: raft.LogCommand, Data: txns[i].Marshal()}
	}
	return logs
}

func apply(t *testing.T, s *Store, index uint64, ops ...Op) *Result {
	t.Helper()
	return s.ApplyBatch(logOf(index, Txn{Ops: ops}))[0].(*Result)
}

func wantCode(t *testing.T, res *Result, code Code) {
	t.Helper()
	var te *TxnError
	if !errors.As(res.Err, &te) || te.Code != code {
		t.Fatalf("got %v, want %s", res.Err, code)
	}
}

func TestTxnRoundTrip(t *testing.T) {
	in := Txn{Ops: []Op{
		Put("/a", []byte("v"), "uid-1", Cond{MustNotExist: true}),
		Delete("/b", Cond{ModRevision: 7, UID: "u"}),
		Put("/c", nil, "", Cond{MustExist: true}),
	}}
	out, err := UnmarshalTxn(in.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(out.Ops) != fmt.Sprint(in.Ops) {
		t.Fatalf("round trip changed the transaction:\n%v\n%v", in.Ops, out.Ops)
	}
	b := in.Marshal()
	for i := range b {
		if _, err := UnmarshalTxn(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes decoded without error", i)
		}
	}
}

func TestPreconditions(t *testing.T) {
	s := openTest(t, 100)
	if res := apply(t, s, 1, Put("/a", []byte("1"), "u1", Cond{MustNotExist: true})); res.Err != nil || res.Revision != 1 {
		t.Fatalf("create: %+v", res)
	}
	wantCode(t, apply(t, s, 2, Put("/a", []byte("2"), "u1", Cond{MustNotExist: true})), CodeExists)
	wantCode(t, apply(t, s, 3, Put("/a", []byte("2"), "u1", Cond{ModRevision: 2})), CodeConflict)
	wantCode(t, apply(t, s, 4, Put("/a", []byte("2"), "u1", Cond{UID: "other"})), CodeConflict)
	wantCode(t, apply(t, s, 5, Put("/x", []byte("2"), "", Cond{MustExist: true})), CodeNotFound)
	wantCode(t, apply(t, s, 6, Delete("/x", Cond{})), CodeNotFound)
	wantCode(t, apply(t, s, 7, Put("/big", make([]byte, MaxValueSize+1), "", Cond{})), CodeTooLarge)
	if res := apply(t, s, 8, Put("/a", []byte("2"), "u1", Cond{ModRevision: 1, UID: "u1"})); res.Err != nil {
		t.Fatal(res.Err)
	}
	// All or nothing: the second operation fails, so the first is not written.
	wantCode(t, apply(t, s, 9, Put("/b", []byte("1"), "", Cond{}), Put("/a", []byte("3"), "", Cond{ModRevision: 1})), CodeConflict)
	if _, found, _, _ := s.Get("/b"); found {
		t.Fatal("a refused transaction wrote its first operation")
	}
	kv, found, rev, err := s.Get("/a")
	if err != nil || !found || string(kv.Value) != "2" || kv.ModRevision != 8 || kv.UID != "u1" || rev != 9 {
		t.Fatalf("Get = %+v %v %d %v", kv, found, rev, err)
	}
	if res := apply(t, s, 10, Delete("/a", Cond{ModRevision: 8})); res.Err != nil {
		t.Fatal(res.Err)
	}
	if s.Stats().Keys != 0 {
		t.Fatalf("keys = %d after deleting the only key", s.Stats().Keys)
	}
}

// randomLog builds a log of n random transactions over a few keys, with
// preconditions that sometimes fail.
func randomLog(seed uint64, n int) []*raft.Log {
	r := rand.New(rand.NewPCG(seed, 1))
	var logs []*raft.Log
	for i := 1; i <= n; i++ {
		var ops []Op
		for j := 0; j < 1+r.IntN(3); j++ {
			key := fmt.Sprintf("/k/%d", r.IntN(20))
			switch r.IntN(4) {
			case 0:
				ops = append(ops, Delete(key, Cond{}))
			case 1:
				ops = append(ops, Put(key, []byte(fmt.Sprint(i, j)), "", Cond{ModRevision: uint64(r.IntN(i))}))
			default:
				ops = append(ops, Put(key, []byte(fmt.Sprint(i, j)), fmt.Sprint(j), Cond{}))
			}
		}
		l := logOf(uint64(i), Txn{Ops: ops})[0]
		if r.IntN(10) == 0 {
			l.Type = raft.LogConfiguration
		}
		logs = append(logs, l)
	}
	return logs
}

func applyInBatches(s *Store, logs []*raft.Log, r *rand.Rand) {
	for len(logs) > 0 {
		n := min(len(logs), 1+r.IntN(16))
		s.ApplyBatch(logs[:n])
		logs = logs[n:]
	}
}

func TestDeterminism(t *testing.T) {
	logs := randomLog(42, 2000)
	var want [32]byte
	for i := range 3 {
		s := openTest(t, 100)
		applyInBatches(s, logs, rand.New(rand.NewPCG(uint64(i), 9)))
		index, sum, err := s.Digest()
		if err != nil {
			t.Fatal(err)
		}
		if index != 2000 {
			t.Fatalf("applied %d, want 2000", index)
		}
		if i == 0 {
			want = sum
		} else if sum != want {
			t.Fatalf("server %d digest %x differs from %x", i, sum, want)
		}
	}
}

func TestReplayAfterRestartIsIdempotent(t *testing.T) {
	logs := randomLog(7, 500)
	once := openTest(t, 100)
	once.ApplyBatch(logs)
	_, want, _ := once.Digest()

	path := filepath.Join(t.TempDir(), "fsm.db")
	s, err := Open(path, Options{WatchHistory: 10000})
	if err != nil {
		t.Fatal(err)
	}
	s.ApplyBatch(logs[:300])
	s.Close()
	// Raft replays from its last snapshot (here: from the start) after a
	// crash; what the store already holds must not be applied again.
	s, err = Open(path, Options{WatchHistory: 10000})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Applied() != 300 {
		t.Fatalf("reopened at %d, want 300", s.Applied())
	}
	w, _ := s.Watch("", 300)
	res := s.ApplyBatch(logs)
	for i, r := range res[:300] {
		if r != nil {
			t.Fatalf("entry %d applied twice: %+v", i+1, r)
		}
	}
	_, got, _ := s.Digest()
	if got != want {
		t.Fatal("replay gave a different state than applying once")
	}
	evs, err := w.Next(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if evs[0].Revision <= 300 {
		t.Fatalf("replay emitted an event at %d", evs[0].Revision)
	}
}

// crash stops s as kill -9 would: what it has not committed is lost.
func crash(s *Store) {
	s.pendingMu.Lock()
	if s.pending != nil {
		s.pending.Rollback()
		s.pending = nil
	}
	s.pendingMu.Unlock()
	s.db.Close()
}

// Applies are committed in groups. Reads see every apply before them: a
// Get reads the pending transaction, a listing commits it. A crash loses
// only what was not committed, and Raft's replay of the log brings that
// back.
func TestCrashLosesOnlyUncommittedApplies(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	opts := Options{NoSync: true, CommitInterval: time.Hour}
	s, err := Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	logs := logOf(1,
		Txn{Ops: []Op{Put("/a", []byte("a"), "", Cond{})}},
		Txn{Ops: []Op{Put("/b", []byte("b"), "", Cond{})}})
	s.ApplyBatch(logs[:1])
	if _, found, rev, err := s.Get("/a"); err != nil || !found || rev != 1 {
		t.Fatalf("Get after an uncommitted apply: found %v at %d, %v; want /a at 1", found, rev, err)
	}
	if s.pending == nil {
		t.Fatal("the apply was committed; want it pending until a listing")
	}
	if res, err := s.List(context.Background(), ListOptions{}); err != nil || len(res.KVs) != 1 || res.Revision != 1 {
		t.Fatalf("listing after an uncommitted apply: %+v, %v; want /a at 1", res, err)
	}
	s.ApplyBatch(logs[1:])
	if _, found, _, _ := s.Get("/b"); !found {
		t.Fatal("Get does not see /b, applied before it")
	}
	// Nothing pending is under /x: the listing commits nothing and is
	// still at the latest revision.
	if res, err := s.List(context.Background(), ListOptions{Prefix: "/x"}); err != nil || len(res.KVs) != 0 || res.Revision != 2 {
		t.Fatalf("listing of /x: %+v, %v; want nothing at 2", res, err)
	}
	crash(s)

	s, err = Open(path, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.Applied() != 1 {
		t.Fatalf("reopened at %d, want 1: what the listing committed, not the apply after it", s.Applied())
	}
	if _, found, _, _ := s.Get("/b"); found {
		t.Fatal("/b survived a crash before its commit")
	}
	res := s.ApplyBatch(logs)
	if res[0] != nil {
		t.Fatalf("entry 1 applied twice: %+v", res[0])
	}
	if _, found, rev, _ := s.Get("/b"); !found || rev != 2 {
		t.Fatalf("after replay /b: found %v at %d, want at 2", found, rev)
	}
}

func TestWatchHistoryAndCompaction(t *testing.T) {
	s := openTest(t, 10)
	ctx := context.Background()
	w, err := s.Watch("/a/", 0)
	if err != nil {
		t.Fatal(err)
	}
	for i := uint64(1); i <= 5; i++ {
		apply(t, s, i, Put("/a/x", []byte(fmt.Sprint(i)), "", Cond{}), Put("/b/x", nil, "", Cond{}))
	}
	evs, err := w.Next(ctx, 100)
	if err != nil || len(evs) != 5 {
		t.Fatalf("Next = %d events, %v", len(evs), err)
	}
	for i, ev := range evs {
		if ev.Revision != uint64(i+1) || ev.Key != "/a/x" || string(ev.Value) != fmt.Sprint(i+1) {
			t.Fatalf("event %d = %+v", i, ev)
		}
		if i > 0 && ev.Prev.ModRevision != uint64(i) {
			t.Fatalf("event %d prev revision %d", i, ev.Prev.ModRevision)
		}
	}
	// A watch started at revision 3 sees 4 and 5 only.
	w3, _ := s.Watch("/a/", 3)
	if evs, _ := w3.Next(ctx, 100); len(evs) != 2 || evs[0].Revision != 4 {
		t.Fatalf("watch from 3 = %+v", evs)
	}
	// Ten more revisions push the first ones out of a ten-event history.
	for i := uint64(6); i <= 15; i++ {
		apply(t, s, i, Put("/a/x", []byte(fmt.Sprint(i)), "", Cond{}), Put("/b/x", nil, "", Cond{}))
	}
	if _, err := s.Watch("/a/", 3); !errors.Is(err, ErrCompacted) {
		t.Fatalf("watch from a compacted revision: %v", err)
	}
	if _, err := w3.Next(ctx, 100); !errors.Is(err, ErrCompacted) {
		t.Fatalf("a watcher that fell behind: %v", err)
	}
	if _, err := s.Watch("/a/", 10); err != nil {
		t.Fatalf("watch inside the history: %v", err)
	}
	cctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	w15, _ := s.Watch("/a/", 15)
	if _, err := w15.Next(cctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a watcher with nothing to read: %v", err)
	}
}

// A watcher with nothing to read waits without being woken by writes under
// other prefixes, and those writes leaving the history do not compact it
// away: it gets its next event, and its progress follows the store.
func TestIdleWatcherSkipsOtherPrefixes(t *testing.T) {
	s := openTest(t, 10)
	w, _ := s.Watch("/quiet/", 0)
	waiting := func() bool {
		s.hub.mu.Lock()
		defer s.hub.mu.Unlock()
		return slices.Contains(s.hub.waiting["/quiet/"], w)
	}
	type next struct {
		evs []Event
		err error
	}
	// waitingNext calls Next and returns once the watcher waits.
	waitingNext := func(ctx context.Context) <-chan next {
		got := make(chan next, 1)
		go func() {
			evs, err := w.Next(ctx, 10)
			got <- next{evs, err}
		}()
		deadline := time.Now().Add(5 * time.Second)
		for !waiting() {
			if time.Now().After(deadline) {
				t.Fatal("the watcher never waited")
			}
			time.Sleep(time.Millisecond)
		}
		return got
	}
	busy := func(from, to uint64) {
		for i := from; i <= to; i++ {
			apply(t, s, i, Put(fmt.Sprintf("/busy/%d", i), nil, "", Cond{}))
		}
	}

	got := waitingNext(context.Background())
	busy(1, 50)
	if !waiting() {
		t.Fatal("writes under another prefix woke the watcher")
	}
	apply(t, s, 51, Put("/quiet/x", []byte("x"), "", Cond{}))
	if n := <-got; n.err != nil || len(n.evs) != 1 || n.evs[0].Revision != 51 {
		t.Fatalf("the idle watcher got %+v, %v; want the event at 51", n.evs, n.err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	got = waitingNext(ctx)
	busy(52, 100)
	cancel()
	if n := <-got; !errors.Is(n.err, context.Canceled) {
		t.Fatalf("Next with nothing to read: %+v, %v", n.evs, n.err)
	}
	if w.Progress() != 100 {
		t.Fatalf("progress %d, want 100", w.Progress())
	}

	got = waitingNext(context.Background())
	busy(101, 150)
	apply(t, s, 151, Put("/quiet/x", []byte("y"), "", Cond{}))
	if n := <-got; n.err != nil || len(n.evs) != 1 || n.evs[0].Revision != 151 {
		t.Fatalf("Next after a cancelled wait and 50 other writes = %+v, %v", n.evs, n.err)
	}
}

func TestListPagesAtFixedRevision(t *testing.T) {
	s := openTest(t, 1000)
	ctx := context.Background()
	idx := uint64(1)
	for i := range 10 {
		apply(t, s, idx, Put(fmt.Sprintf("/p/%02d", i), []byte("v1"), "", Cond{}))
		idx++
	}
	apply(t, s, idx, Put("/q/0", []byte("other prefix"), "", Cond{}))
	idx++
	page, err := s.List(ctx, ListOptions{Prefix: "/p/", Limit: 4})
	if err != nil || len(page.KVs) != 4 || !page.More || page.Revision != 11 {
		t.Fatalf("first page: %+v %v", page, err)
	}
	// Changes after the first page must not show in the later pages.
	apply(t, s, idx, Delete("/p/05", Cond{}))
	apply(t, s, idx+1, Put("/p/06", []byte("v2"), "", Cond{}))
	apply(t, s, idx+2, Put("/p/055", []byte("new"), "", Cond{}))
	apply(t, s, idx+3, Put("/p/99", []byte("new"), "", Cond{}))
	var keys []string
	for _, kv := range page.KVs {
		keys = append(keys, kv.Key)
	}
	for page.More {
		page, err = s.List(ctx, ListOptions{Prefix: "/p/", Limit: 4, After: keys[len(keys)-1], Revision: page.Revision})
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range page.KVs {
			if string(kv.Value) != "v1" {
				t.Fatalf("%s has %q, a value written after the listing's revision", kv.Key, kv.Value)
			}
			keys = append(keys, kv.Key)
		}
	}
	if fmt.Sprint(keys) != "[/p/00 /p/01 /p/02 /p/03 /p/04 /p/05 /p/06 /p/07 /p/08 /p/09]" {
		t.Fatalf("pages gave %v", keys)
	}
	latest, _ := s.List(ctx, ListOptions{Prefix: "/p/"})
	if len(latest.KVs) != 11 || latest.Revision != 15 {
		t.Fatalf("latest listing: %d keys at %d", len(latest.KVs), latest.Revision)
	}
	if _, err := s.List(ctx, ListOptions{Revision: 99}); !errors.Is(err, ErrFutureRevision) {
		t.Fatalf("list in the future: %v", err)
	}
}

func TestListCompacted(t *testing.T) {
	s := openTest(t, 2)
	for i := uint64(1); i <= 5; i++ {
		apply(t, s, i, Put("/a", nil, "", Cond{}))
	}
	if _, err := s.List(context.Background(), ListOptions{Revision: 1}); !errors.Is(err, ErrCompacted) {
		t.Fatalf("list at a compacted revision: %v", err)
	}
}

func TestSnapshotRoundTrip(t *testing.T) {
	src := openTest(t, 100)
	src.ApplyBatch(randomLog(3, 300))

	var buf bytes.Buffer
	if err := src.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	_, want, _ := src.Digest()

	dst := openTest(t, 100)
	dst.ApplyBatch(randomLog(4, 10))
	dw, _ := dst.Watch("", 0)
	if err := dst.Restore(io.NopCloser(bytes.NewReader(buf.Bytes()))); err != nil {
		t.Fatal(err)
	}
	index, got, _ := dst.Digest()
	if got != want || index != 300 {
		t.Fatalf("restored state differs (index %d)", index)
	}
	if _, err := dw.Next(context.Background(), 1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("a watcher across a restore: %v", err)
	}

	path, info, err := ReadSnapshot(bytes.NewReader(buf.Bytes()), t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if info.Index != 300 || info.Objects != int(src.Stats().Keys) || info.Size != int64(buf.Len()) {
		t.Fatalf("info = %+v, keys %d", info, src.Stats().Keys)
	}
	os.Remove(path)
}

func TestCorruptSnapshotRefused(t *testing.T) {
	src := openTest(t, 100)
	src.ApplyBatch(randomLog(5, 100))
	var buf bytes.Buffer
	src.WriteSnapshot(&buf)

	dst := openTest(t, 100)
	dst.ApplyBatch(randomLog(6, 50))
	_, want, _ := dst.Digest()
	flipped := bytes.Clone(buf.Bytes())
	flipped[len(flipped)/2] ^= 0xff
	for name, b := range map[string][]byte{
		"truncated": buf.Bytes()[:buf.Len()-100],
		"flipped":   flipped,
		"empty":     nil,
		"garbage":   bytes.Repeat([]byte("x"), 5000),
	} {
		err := dst.Restore(io.NopCloser(bytes.NewReader(b)))
		if !errors.Is(err, ErrBadSnapshot) {
			t.Fatalf("%s snapshot: %v", name, err)
		}
		_, got, _ := dst.Digest()
		if got != want {
			t.Fatalf("%s snapshot changed the store", name)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(dst.path)); len(entries) != 1 {
		t.Fatalf("refused snapshots left files behind: %v", entries)
	}
}

// TestTornLastWrite damages the newest bbolt meta page, as a crash in the
// middle of the last commit would: the store opens at the previous commit and
// Raft's replay brings it back.
func TestTornLastWrite(t *testing.T) {
	logs := randomLog(8, 200)
	path := filepath.Join(t.TempDir(), "fsm.db")
	s, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.ApplyBatch(logs[:150])
	s.commitPending()
	s.ApplyBatch(logs[150:])
	_, want, _ := s.Digest()
	s.Close()

	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	pageSize := int64(os.Getpagesize())
	txid := func(page int64) uint64 {
		b := make([]byte, 8)
		f.ReadAt(b, page*pageSize+64)
		return uint64(b[0]) | uint64(b[1])<<8 | uint64(b[2])<<16 | uint64(b[3])<<24
	}
	newest := int64(0)
	if txid(1) > txid(0) {
		newest = 1
	}
	f.WriteAt([]byte("torn"), newest*pageSize+72)
	f.Close()

	s, err = Open(path, Options{})
	if err != nil {
		t.Fatalf("reopen after a torn write: %v", err)
	}
	defer s.Close()
	if s.Applied() != 150 {
		t.Fatalf("after the torn write the store is at %d, want 150", s.Applied())
	}
	s.ApplyBatch(logs)
	_, got, _ := s.Digest()
	if got != want {
		t.Fatal("replay after a torn write gave a different state")
	}
}

func TestOpenRefusesForeignFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fsm.db")
	os.WriteFile(path, bytes.Repeat([]byte("not a database "), 1000), 0o600)
	if _, err := Open(path, Options{}); err == nil {
		t.Fatal("opened a file that is not a store")
	}
	if b, _ := os.ReadFile(path); !bytes.HasPrefix(b, []byte("not a database")) {
		t.Fatal("the foreign file was overwritten")
	}
}

// A check operation writes nothing, and its precondition gates the whole
// transaction (a create conditioned on its namespace's revision).
func TestCheckOperation(t *testing.T) {
	s := openTest(t, 100)
	apply(t, s, 1, Put("/ns", []byte("ns"), "", Cond{}))
	wantCode(t, apply(t, s, 2, Put("/ns/a", []byte("a"), "", Cond{}), Check("/missing", Cond{MustExist: true})), CodeNotFound)
	wantCode(t, apply(t, s, 3, Put("/ns/a", []byte("a"), "", Cond{}), Check("/ns", Cond{ModRevision: 9})), CodeConflict)
	if _, found, _, _ := s.Get("/ns/a"); found {
		t.Fatal("a transaction whose check failed wrote")
	}
	if res := apply(t, s, 4, Put("/ns/a", []byte("a"), "", Cond{}), Check("/ns", Cond{ModRevision: 1})); res.Err != nil {
		t.Fatal(res.Err)
	}
	kv, found, _, _ := s.Get("/ns")
	if !found || kv.ModRevision != 1 {
		t.Fatalf("a check wrote its key: %+v", kv)
	}
}
