// Package e2e tests Pontoon servers as real processes over real loopback
// networking: cluster formation, failures, partitions, snapshots.
package e2e

import (
	"fmt"
	"os"
	"testing"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// bin is the pontoon binary under test, built once for the package.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pontoon-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, err = cluster.Binary(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func newCluster(t *testing.T, n, baseIP int, args ...string) *cluster.Cluster {
	return cluster.New(t, cluster.Options{Bin: bin, Servers: n, BaseIP: baseIP, Args: args})
}
