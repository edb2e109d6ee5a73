package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
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
