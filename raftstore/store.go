package raftstore

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/pontoon-dev/pontoon/fsm"
)

// The store's commits are not fsynced. The Raft log is the durable record
// (it is fsynced before an entry commits) and the store never runs ahead of
// it, so the store only has to be consistent after a restart, not durable:
//
//   - after a process crash (kill -9) the kernel's page cache still holds
//     every commit, so the unsynced bbolt file is intact; what the store
//     had applied but not committed yet (it commits in groups, see package
//     fsm) is replayed from the log;
//   - after a machine crash unsynced pages may be lost or land out of order,
//     so the file cannot be trusted. A marker holding the kernel's boot ID
//     is written while the store is open and removed when it closes cleanly:
//     a start that finds a marker from another boot sets the store aside
//     and rebuilds it from the latest Raft snapshot and the log.
//
// This takes two fdatasyncs off every write's path, as etcd keeps its bbolt
// backend's commits off the request path.
const (
	storeFile   = "fsm.db"
	storeMarker = "fsm.open"
)

// OpenStore opens the data dir's store. rebuild reports that the store was
// set aside after a machine crash; pass it on in Config.RebuildStore.
func OpenStore(dataDir string, opts fsm.Options, logger *slog.Logger) (store *fsm.Store, rebuild bool, err error) {
	boot, err := bootID()
	if err != nil {
		return nil, false, err
	}
	path := filepath.Join(dataDir, storeFile)
	marker := filepath.Join(dataDir, storeMarker)
	prev, err := os.ReadFile(marker)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, false, fmt.Errorf("read %s: %w", marker, err)
	case strings.TrimSpace(string(prev)) != boot:
		if _, err := os.Stat(path); err == nil {
			aside := path + ".crashed"
			logger.Warn("the machine crashed while the store was open; rebuilding it from the Raft snapshot and log", "set_aside", aside)
			if err := os.Rename(path, aside); err != nil {
				return nil, false, fmt.Errorf("set aside %s: %w", path, err)
			}
			rebuild = true
		}
	}
	if err := writeSynced(marker, []byte(boot+"\n")); err != nil {
		return nil, false, err
	}
	opts.NoSync = true
	store, err = fsm.Open(path, opts)
	if err != nil {
		return nil, false, err
	}
	return store, rebuild, nil
}

// CloseStore syncs and closes the store and removes the marker: the next
// start trusts it.
func CloseStore(dataDir string, store *fsm.Store) error {
	if err := store.Close(); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(dataDir, storeMarker)); err != nil {
		return err
	}
	return syncDir(dataDir)
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", fmt.Errorf("read boot id: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
