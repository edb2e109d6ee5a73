package netproxy

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/coreos/go-iptables/iptables"
)

// IPTables is the node's iptables: go-iptables for single rules, and
// iptables-restore beside the iptables command it found for whole
// syncs, so both use the backend (nft or legacy) that `iptables` is on
// this machine, as the CNI portmap plugin does.
type IPTables struct {
	ipt     *iptables.IPTables
	restore string
}

// NewIPTables finds the machine's iptables.
func NewIPTables() (*IPTables, error) {
	ipt, err := iptables.New(iptables.Timeout(5))
	if err != nil {
		return nil, fmt.Errorf("iptables: %w", err)
	}
	path, err := exec.LookPath("iptables")
	if err != nil {
		return nil, err
	}
	return &IPTables{ipt: ipt, restore: filepath.Join(filepath.Dir(path), "iptables-restore")}, nil
}

// Restore loads input with iptables-restore --noflush.
func (t *IPTables) Restore(ctx context.Context, input []byte) error {
	cmd := exec.CommandContext(ctx, t.restore, "--noflush", "--wait")
	cmd.Stdin = bytes.NewReader(input)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Chains lists the chains of a table.
func (t *IPTables) Chains(_ context.Context, table string) ([]string, error) {
	return t.ipt.ListChains(table)
}

// EnsureFirst inserts rule first in the chain unless the chain has it.
func (t *IPTables) EnsureFirst(_ context.Context, table, chain string, rule ...string) error {
	return t.ipt.InsertUnique(table, chain, 1, rule...)
}

// Exists reports whether the chain has the rule.
func (t *IPTables) Exists(_ context.Context, table, chain string, rule ...string) (bool, error) {
	return t.ipt.Exists(table, chain, rule...)
}

// RemoveRules removes every rule and chain the proxy made, as `pontoon
// agent cleanup` does: the jumps from the built-in chains, then the
// chains themselves.
func RemoveRules(ctx context.Context, t *IPTables) error {
	existing := map[string][]string{}
	for _, table := range []string{"nat", "filter"} {
		chains, err := t.Chains(ctx, table)
		if err != nil {
			return err
		}
		existing[table] = chains
	}
	for _, j := range jumps() {
		// A jump to a chain that does not exist cannot be there, and
		// iptables cannot even look for it: a node whose proxy never
		// synced, or cleaned up before, has none.
		if !slices.Contains(existing[j[0]], j[len(j)-1]) {
			continue
		}
		if err := t.ipt.DeleteIfExists(j[0], j[1], j[2:]...); err != nil {
			return fmt.Errorf("jump from %s %s: %w", j[0], j[1], err)
		}
	}
	if input := restoreInput(Rules{NAT: newTable(), Filter: newTable()}, nil, existing); len(input) > 0 {
		return t.Restore(ctx, input)
	}
	return nil
}
