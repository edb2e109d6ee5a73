package raftstore

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// writeWAL writes entries 1 to n into a raft-wal log of small segments in
// raftDir, as a server does, and returns its segment files in order.
func writeWAL(t *testing.T, raftDir string, n int) []string {
	t.Helper()
	s, err := openLogStore(raftDir, LogStoreWAL, 1<<16, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if err := s.log.StoreLog(&raft.Log{Index: uint64(i), Term: 1, Type: raft.LogCommand, Data: []byte(fmt.Sprintf("%0500d", i))}); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	files, _ := filepath.Glob(filepath.Join(raftDir, walLogDir, "*.wal"))
	slices.Sort(files)
	if len(files) < 3 {
		t.Fatalf("%d segments, want several", len(files))
	}
	return files
}

func damage(t *testing.T, file string, at int) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	copy(b[at:], "DAMAGED")
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// A torn end of the last segment, as a crash in the middle of an append
// leaves it, is cut off at start (raft-wal checks its last batch); the
// entries before it read back.
func TestTornLogTailCutOff(t *testing.T) {
	dir := t.TempDir()
	files := writeWAL(t, dir, 300)
	tail := files[len(files)-1]
	b, _ := os.ReadFile(tail)
	end := len(bytes.TrimRight(b, "\x00"))
	damage(t, tail, end-20)
	s, err := openLogStore(dir, "", 1<<16, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("a torn tail refused the start: %v", err)
	}
	defer s.Close()
	last, _ := s.log.LastIndex()
	if last != 299 {
		t.Fatalf("last index %d after the repair, want 299", last)
	}
	var l raft.Log
	if err := s.log.GetLog(299, &l); err != nil || string(l.Data) != fmt.Sprintf("%0500d", 299) {
		t.Fatalf("entry 299: %q %v", l.Data, err)
	}
}

// Damage raft-wal does not see, anywhere else, refuses the start with one
// line naming the entry, and leaves the data dir as it is: in an earlier
// segment, or in an earlier batch of the last one.
func TestDamagedLogRefused(t *testing.T) {
	for _, where := range []string{"earlier segment", "last segment"} {
		dir := t.TempDir()
		files := writeWAL(t, dir, 300)
		file := files[1]
		if where == "last segment" {
			file = files[len(files)-1]
		}
		// The data of the second entry the segment holds.
		b, _ := os.ReadFile(file)
		var at []int
		for i := 1; i <= 300; i++ {
			if j := bytes.Index(b, []byte(fmt.Sprintf("%0500d", i))); j >= 0 {
				at = append(at, j)
			}
		}
		damage(t, file, at[1]+100)
		before := listing(t, dir)
		_, err := openLogStore(dir, "", 1<<16, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "is damaged at entry") || strings.Contains(err.Error(), "\n") {
			t.Fatalf("damage in the %s: %v", where, err)
		}
		if after := listing(t, dir); after != before {
			t.Fatalf("damage in the %s: the refused start changed the data dir:\n%s\n%s", where, before, after)
		}
	}
}

// Sealed segments are read back once: a start records them, and the next
// reads again only a segment that is not as recorded.
func TestSealedSegmentsVerifiedOnce(t *testing.T) {
	dir := t.TempDir()
	files := writeWAL(t, dir, 300)
	s, err := openLogStore(dir, "", 1<<16, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	b, err := os.ReadFile(filepath.Join(dir, verifiedFile))
	if err != nil || !strings.Contains(string(b), filepath.Base(files[0])) || strings.Contains(string(b), filepath.Base(files[len(files)-1])) {
		t.Fatalf("recorded %s (%v), want the sealed segments and not the last", b, err)
	}
	seg, _ := os.ReadFile(files[1])
	var at int
	for i := 1; i <= 300; i++ {
		if j := bytes.Index(seg, []byte(fmt.Sprintf("%0500d", i))); j >= 0 {
			at = j
			break
		}
	}
	copy(seg[at+100:], "DAMAGED")
	if err := os.WriteFile(files[1], append(seg, 0), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := openLogStore(dir, "", 1<<16, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "is damaged at entry") {
		t.Fatalf("a sealed segment changed since it was verified: %v", err)
	}
}
