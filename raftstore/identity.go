package raftstore

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Identity is who a data dir belongs to. It is written when the data dir is
// first used and checked on every start, so a data dir is never picked up
// by a server of another name.
type Identity struct {
	Name string `json:"name"`
	// NodeID is random per data dir: the same name with a fresh data dir
	// is a new node as far as the cluster is concerned.
	NodeID string `json:"node_id"`
}

const identityFile = "server.json"

// LoadIdentity reads the identity of dataDir, creating the directory and the
// identity on first use. It fails when the data dir belongs to another name.
func LoadIdentity(dataDir, name string) (Identity, error) {
	path := filepath.Join(dataDir, identityFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		var id Identity
		if err := json.Unmarshal(b, &id); err != nil || id.Name == "" || id.NodeID == "" {
			return Identity{}, fmt.Errorf("data dir %s: %s is damaged", dataDir, identityFile)
		}
		if id.Name != name {
			return Identity{}, fmt.Errorf("data dir %s belongs to server %q, not %q", dataDir, id.Name, name)
		}
		return id, nil
	case !errors.Is(err, os.ErrNotExist):
		return Identity{}, fmt.Errorf("data dir %s: %w", dataDir, err)
	}
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return Identity{}, fmt.Errorf("data dir %s is not empty and has no %s: not a Pontoon data dir", dataDir, identityFile)
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return Identity{}, fmt.Errorf("create data dir: %w", err)
	}
	raw := make([]byte, 16)
	rand.Read(raw)
	id := Identity{Name: name, NodeID: hex.EncodeToString(raw)}
	b, _ = json.Marshal(id)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return Identity{}, fmt.Errorf("write identity: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return Identity{}, fmt.Errorf("write identity: %w", err)
	}
	return id, nil
}
