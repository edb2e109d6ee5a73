package raftstore

import (
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// A new data dir gets raft-wal unless told otherwise; an existing one
// keeps the store it was made with, and a flag that disagrees is refused
// with the way to move a server, leaving the data dir as it was.
func TestLogStoreChosenOnceAndKept(t *testing.T) {
	logger := slog.New(slog.DiscardHandler)
	for _, tc := range []struct {
		made, reopen LogStoreKind
		refused      bool
	}{
		{"", "", false},
		{"", LogStoreWAL, false},
		{"", LogStoreBoltDB, true},
		{LogStoreBoltDB, "", false},
		{LogStoreBoltDB, LogStoreBoltDB, false},
		{LogStoreBoltDB, LogStoreWAL, true},
	} {
		dir := t.TempDir()
		s, err := openLogStore(dir, tc.made, 0, logger)
		if err != nil {
			t.Fatal(err)
		}
		want := tc.made
		if want == "" {
			want = LogStoreWAL
		}
		if got, _ := DetectLogStore(dir); got != want {
			t.Fatalf("new data dir with %q got %s", tc.made, got)
		}
		if err := s.log.StoreLog(&raft.Log{Index: 1, Term: 1, Type: raft.LogCommand, Data: []byte("x")}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		before := listing(t, dir)
		s, err = openLogStore(dir, tc.reopen, 0, logger)
		if tc.refused {
			if err == nil || !strings.Contains(err.Error(), "is kept in "+string(want)) || !strings.Contains(err.Error(), "remove-peer") {
				t.Fatalf("%s data dir opened with %q: %v", want, tc.reopen, err)
			}
			if after := listing(t, dir); after != before {
				t.Fatalf("a refused open changed the data dir:\n%s\n%s", before, after)
			}
			continue
		}
		if err != nil {
			t.Fatalf("%s data dir opened with %q: %v", want, tc.reopen, err)
		}
		var l raft.Log
		if err := s.log.GetLog(1, &l); err != nil || string(l.Data) != "x" {
			t.Fatalf("reopened %s: entry %q, %v", want, l.Data, err)
		}
		if got, _ := DetectLogStore(dir); got != want {
			t.Fatalf("reopened %s, the data dir holds %s", want, got)
		}
		s.Close()
	}
}

func listing(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			b.WriteString(p + " " + fi.ModTime().String() + "\n")
		}
		return err
	})
	return b.String()
}
