package netproxy

import (
	"bytes"
	"maps"
	"slices"
	"strings"
)

func (r Rules) table(name string) Table {
	if name == "nat" {
		return r.NAT
	}
	return r.Filter
}

// restoreInput is the iptables-restore (--noflush) input that makes the
// tables hold rules, and only touches the proxy's chains. With prev, the
// rules the last sync wrote, it writes the chains that changed and
// deletes those no longer wanted (a partial sync); with existing instead
// (the proxy's chains the tables hold, by table), it writes every chain
// and deletes the others.
func restoreInput(rules Rules, prev *Rules, existing map[string][]string) []byte {
	var b bytes.Buffer
	for _, name := range []string{"nat", "filter"} {
		want := rules.table(name).Chains
		var write, remove []string
		for _, c := range slices.Sorted(maps.Keys(want)) {
			if prev != nil {
				if old, ok := prev.table(name).Chains[c]; ok && slices.Equal(old, want[c]) {
					continue
				}
			}
			write = append(write, c)
		}
		var had []string
		if prev != nil {
			had = slices.Collect(maps.Keys(prev.table(name).Chains))
		} else {
			had = existing[name]
		}
		for _, c := range had {
			if _, ok := want[c]; !ok && strings.HasPrefix(c, chainPrefix) {
				remove = append(remove, c)
			}
		}
		slices.Sort(remove)
		if len(write) == 0 && len(remove) == 0 {
			continue
		}
		b.WriteString("*" + name + "\n")
		// A chain declared is flushed; one to delete is flushed first, so
		// that what it jumps to may go too.
		for _, c := range append(append([]string{}, write...), remove...) {
			b.WriteString(":" + c + " - [0:0]\n")
		}
		for _, c := range write {
			for _, rule := range want[c] {
				b.WriteString(rule + "\n")
			}
		}
		for _, c := range remove {
			b.WriteString("-X " + c + "\n")
		}
		b.WriteString("COMMIT\n")
	}
	return b.Bytes()
}
