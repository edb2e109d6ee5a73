package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Flags a server cannot run with are refused with a message naming the
// flag, before the data dir is touched.
func TestServerRefusesBadFlags(t *testing.T) {
	for _, tc := range []struct{ flags, want string }{
		{"--bootstrap-expect -1", "--bootstrap-expect -1"},
		{"--watch-history 0", "--watch-history 0"},
		{"--dead-server-grace -1s", "--dead-server-grace -1s"},
		{"--name bad/name", `--name "bad/name"`},
		{"--name", `--name ""`},
		{"--service-cidr 10.96.0.0/8", "--service-cidr"},
		{"--raft-log-store etcd", `--raft-log-store "etcd"`},
		{"--ready-max-lag 0", "--ready-max-lag 0"},
		{"--request-timeout 0s", "--request-timeout 0s"},
		{"--data-dir-reserve lots", `--data-dir-reserve "lots"`},
		{"--raft-wal-segment-size 1Ki", `--raft-wal-segment-size "1Ki"`},
		{"--max-requests-inflight -1", "--request-timeout 1m0s, --max-requests-inflight -1"},
		{"--encryption-provider-config /nonexistent.yaml", "--encryption-provider-config /nonexistent.yaml: error while parsing file"},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		cmd := serverCommand()
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		args := append([]string{"--data-dir", dataDir}, strings.Fields(tc.flags)...)
		if tc.flags == "--name" {
			args = append(args, "")
		}
		cmd.SetArgs(args)
		err := cmd.Execute()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: err %v, want one starting %q", tc.flags, err, tc.want)
		}
		if _, serr := os.Stat(dataDir); !os.IsNotExist(serr) {
			t.Errorf("%s: the data dir was created", tc.flags)
		}
	}
}
