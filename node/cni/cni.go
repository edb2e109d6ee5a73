// Package cni writes the node's CNI network config, which the container
// runtime reads when it sets up a pod's network: a bridge with the node's
// end of every pod's veth, host-local addresses from the node's pod CIDR,
// and portmap for hostPorts. The runtime adds the loopback itself.
//
// The config lives in a directory of the agent's own: nothing outside the
// agent's data dir is written but what the plugins themselves make (the
// bridge, iptables chains of portmap).
package cni

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"

	"github.com/vishvananda/netlink"
)

// BinDir is where Debian's containernetworking-plugins installs the
// plugins.
const BinDir = "/usr/lib/cni"

// Network is what the config is made from.
type Network struct {
	// ConfDir is the runtime's CNI config directory; DataDir is
	// host-local's, one per node (two nodes on a machine must not share
	// it, or they hand out the same addresses).
	ConfDir, DataDir string
	// Bridge is the name of the bridge device.
	Bridge string
	// PodCIDR is the node's spec.podCIDR.
	PodCIDR *net.IPNet
	// MTU of the pods' interfaces; 0 leaves the plugin's default.
	MTU int
}

// ConfigFile is the name of the config in ConfDir.
const ConfigFile = "10-pontoon.conflist"

// Write writes the config, replacing the file in one rename so the runtime
// never reads half of it. It reports whether the file changed.
func Write(n Network) (bool, error) {
	if n.PodCIDR == nil {
		return false, fmt.Errorf("no pod CIDR")
	}
	b, err := json.MarshalIndent(config(n), "", "  ")
	if err != nil {
		return false, err
	}
	path := filepath.Join(n.ConfDir, ConfigFile)
	if old, err := os.ReadFile(path); err == nil && string(old) == string(b) {
		return false, nil
	}
	if err := os.MkdirAll(n.ConfDir, 0o700); err != nil {
		return false, err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return false, err
	}
	return true, os.Rename(tmp, path)
}

func config(n Network) map[string]any {
	bridge := map[string]any{
		"type":         "bridge",
		"bridge":       n.Bridge,
		"isGateway":    true,
		"hairpinMode":  true,
		"forceAddress": true,
		"ipMasq":       false,
		"ipam": map[string]any{
			"type":    "host-local",
			"dataDir": n.DataDir,
			"ranges":  [][]map[string]string{{{"subnet": n.PodCIDR.String()}}},
			"routes":  []map[string]string{{"dst": "0.0.0.0/0"}},
		},
	}
	if n.MTU > 0 {
		bridge["mtu"] = n.MTU
	}
	return map[string]any{
		"cniVersion": "1.0.0",
		"name":       "pontoon",
		"plugins": []map[string]any{
			bridge,
			{"type": "portmap", "capabilities": map[string]bool{"portMappings": true}, "snat": true},
		},
	}
}

// RemoveBridge deletes the pod bridge, if there is one.
func RemoveBridge(name string) error {
	l, err := netlink.LinkByName(name)
	if errors.As(err, new(netlink.LinkNotFoundError)) {
		return nil
	} else if err != nil {
		return err
	}
	return netlink.LinkDel(l)
}
