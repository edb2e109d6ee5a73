package fsm

import (
	"bytes"
	"testing"

	"github.com/hashicorp/raft"
)

// snapshotFile writes s's state as a snapshot file, as an operator's
// restore receives it.
func snapshotFile(t *testing.T, s *Store) string {
	t.Helper()
	var buf bytes.Buffer
	if err := s.WriteSnapshot(&buf); err != nil {
		t.Fatal(err)
	}
	path, _, err := ReadSnapshot(&buf, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return path
}

// restoreLog turns a snapshot file into the entries of restore id.
func restoreLog(t *testing.T, path string, id uint64) [][]byte {
	t.Helper()
	var out [][]byte
	if err := RestoreEntries(path, id, func(e *RestoreEntry) error {
		out = append(out, e.Marshal())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

func applyEntry(s *Store, index uint64, data []byte) *Result {
	return s.ApplyBatch([]*raft.Log{{Index: index, Term: 1, Type: raft.LogCommand, Data: data}})[0].(*Result)
}

// A restore through the log: what is staged changes nothing until the
// commit, writes in between are replaced by it, and the result is the
// snapshot's state, alike on every store that applies the same entries.
func TestRestoreThroughTheLog(t *testing.T) {
	src := openTest(t, 100)
	big := bytes.Repeat([]byte("x"), 300<<10)
	for i := range 10 {
		apply(t, src, uint64(i+1), Put(string(rune('a'+i)), big, "u", Cond{}))
	}
	_, want, _ := src.Digest()
	entries := restoreLog(t, snapshotFile(t, src), 42)
	if len(entries) < 5 {
		t.Fatalf("%d entries for 3 MB, want chunks of about 1 MiB", len(entries))
	}

	var digests [][32]byte
	for range 2 {
		s := openTest(t, 100)
		apply(t, s, 1, Put("old", []byte("1"), "", Cond{}))
		w, _ := s.Watch("", 1)
		index := uint64(2)
		for i, e := range entries {
			if i == len(entries)-1 {
				// The state is the old one until the commit.
				if kv, found, _, _ := s.Get("old"); !found || string(kv.Value) != "1" {
					t.Fatal("staging changed the state")
				}
				apply(t, s, index, Put("between", []byte("2"), "", Cond{}))
				index++
			}
			if res := applyEntry(s, index, e); res.Err != nil {
				t.Fatalf("entry %d: %v", i, res.Err)
			}
			index++
		}
		_, got, _ := s.Digest()
		if got != want {
			t.Fatal("the restored state is not the snapshot's")
		}
		if _, found, _, _ := s.Get("between"); found {
			t.Fatal("a write before the commit survived the restore")
		}
		if st := s.Stats(); st.Keys != 10 {
			t.Fatalf("%d keys counted after the restore", st.Keys)
		}
		if _, err := w.Next(t.Context(), 100); err == nil {
			t.Fatal("a watcher went on across the restore")
		}
		if res := apply(t, s, index, Put("after", []byte("3"), "", Cond{})); res.Err != nil {
			t.Fatal(res.Err)
		}
		_, d, _ := s.Digest()
		digests = append(digests, d)
	}
	if digests[0] != digests[1] {
		t.Fatal("two stores diverged")
	}
}

// Entries of another restore, out of order or a commit that does not
// match what was staged are refused and change nothing.
func TestRestoreEntriesOutOfOrderRefused(t *testing.T) {
	src := openTest(t, 100)
	apply(t, src, 1, Put("a", []byte("1"), "", Cond{}))
	entries := restoreLog(t, snapshotFile(t, src), 1)
	s := openTest(t, 100)
	apply(t, s, 1, Put("old", []byte("1"), "", Cond{}))
	_, before, _ := s.Digest()
	wantCode(t, applyEntry(s, 2, entries[1]), CodeConflict) // a chunk before begin
	applyEntry(s, 3, entries[0])
	wantCode(t, applyEntry(s, 4, entries[2]), CodeConflict) // commit before the chunk
	other := restoreLog(t, snapshotFile(t, src), 2)
	wantCode(t, applyEntry(s, 5, other[1]), CodeConflict) // another restore's chunk
	if _, after, _ := s.Digest(); after != before {
		t.Fatal("refused restore entries changed the state")
	}
	applyEntry(s, 6, entries[1])
	if res := applyEntry(s, 7, entries[2]); res.Err != nil {
		t.Fatal(res.Err)
	}
	if _, found, _, _ := s.Get("a"); !found {
		t.Fatal("the restore did not apply once in order")
	}
}
