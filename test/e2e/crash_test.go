package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pontoon-dev/pontoon/api/client"
)

// TestStoreRebuiltAfterMachineCrash: the store's commits are not fsynced,
// so after a machine crash (seen as a store marker from another boot) a
// server must rebuild its store from the Raft snapshot and log rather than
// trust the file, which here is garbage.
func TestStoreRebuiltAfterMachineCrash(t *testing.T) {
	c := newCluster(t, 3, 21, "--raft-snapshot-threshold", "64", "--raft-trailing-logs", "16", "--raft-snapshot-interval", "200ms")
	c.Start()
	leader := c.Leader(20 * time.Second)
	ctx := context.Background()
	for i := range 300 {
		if _, err := leader.Client().Put(ctx, fmt.Sprint("k", i), []byte(fmt.Sprint("v", i)), client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.Others(leader)[0]
	victim.Kill()
	os.WriteFile(filepath.Join(victim.DataDir, "fsm.open"), []byte("a-boot-before-the-crash\n"), 0o600)
	os.WriteFile(filepath.Join(victim.DataDir, "fsm.db"), []byte(strings.Repeat("torn", 8192)), 0o600)
	for i := 300; i < 400; i++ {
		if _, err := leader.Client().Put(ctx, fmt.Sprint("k", i), []byte(fmt.Sprint("v", i)), client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	victim.Start()
	waitConverged(t, c)
	if !strings.Contains(victim.Log(), "rebuilding it from the Raft snapshot and log") {
		t.Fatal("the server trusted a store left by a machine crash")
	}
	for _, i := range []int{0, 150, 299, 399} {
		kv, err := victim.Client().Get(ctx, fmt.Sprint("k", i), true)
		if err != nil || string(kv.Value) != fmt.Sprint("v", i) {
			t.Fatalf("k%d on the rebuilt server: %q %v", i, kv.Value, err)
		}
	}
	// A clean stop leaves no marker: the next start trusts the store.
	victim.Stop()
	if _, err := os.Stat(filepath.Join(victim.DataDir, "fsm.open")); !os.IsNotExist(err) {
		t.Fatalf("marker after a clean stop: %v", err)
	}
}

// TestDamagedRaftLog: a follower's raft-wal log damaged in a segment
// before the last refuses its start with one line and is left as it is; a
// torn end of the last segment, as a machine crash in the middle of an
// append leaves it, is cut off, and the server catches up with the others.
func TestDamagedRaftLog(t *testing.T) {
	c := newCluster(t, 3, 21, "--raft-wal-segment-size", "1Mi", "--raft-snapshot-threshold", "1000000", "--raft-trailing-logs", "1000000")
	c.Start()
	leader := c.Leader(20 * time.Second)
	ctx := context.Background()
	value := []byte(strings.Repeat("v", 1024))
	for i := range 3000 {
		if _, err := leader.Client().Put(ctx, fmt.Sprint("k", i%500), value, client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	victim := c.Others(leader)[0]
	segmentFiles := func() []string {
		files, _ := filepath.Glob(filepath.Join(victim.DataDir, "raft", "wal", "*.wal"))
		slices.Sort(files)
		return files
	}
	written := func(file string) int {
		b, _ := os.ReadFile(file)
		return len(bytes.TrimRight(b, "\x00"))
	}
	// The last segment must hold a few entries to tear.
	for i := 0; written(segmentFiles()[len(segmentFiles())-1]) < 64<<10; i++ {
		if _, err := leader.Client().Put(ctx, fmt.Sprint("more", i), value, client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	waitConverged(t, c)
	victim.Kill()
	segments := segmentFiles()
	if len(segments) < 3 {
		t.Fatalf("%d log segments, want several", len(segments))
	}

	// Damage to a segment not read back yet: each sealed segment is read
	// back once, within seconds of being sealed, and recorded.
	middle := segments[1]
	good, _ := os.ReadFile(middle)
	bad := slices.Clone(good)
	copy(bad[len(bad)/3:], "DAMAGED")
	os.WriteFile(middle, bad, 0o644)
	os.Remove(filepath.Join(victim.DataDir, "raft", "wal-verified.json"))
	before := fileHash(t, middle)
	startFails(t, victim, "is damaged at entry")
	if fileHash(t, middle) != before {
		t.Fatal("the damaged segment was changed")
	}
	os.WriteFile(middle, good, 0o644)

	// A torn append comes with a machine crash, after which the store,
	// never fsynced, is rebuilt from the log (see
	// TestStoreRebuiltAfterMachineCrash): a marker of another boot says so.
	tail := segments[len(segments)-1]
	b, _ := os.ReadFile(tail)
	last := bytes.LastIndex(b, value[:64])
	if last < 0 {
		t.Fatal("no value in the last segment")
	}
	copy(b[last:], "TORN")
	os.WriteFile(tail, b, 0o644)
	os.WriteFile(filepath.Join(victim.DataDir, "fsm.open"), []byte("a-boot-before-the-crash\n"), 0o600)
	victim.Start()
	if _, err := leader.Client().Put(ctx, "after", value, client.Cond{}); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, c)
}
