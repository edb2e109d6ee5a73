package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pontoon-dev/pontoon/jointoken"
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
		{"--bootstrap-expect 1 --encryption-provider-config /nonexistent.yaml", "--encryption-provider-config /nonexistent.yaml: error while parsing file"},
		{"--bootstrap-expect 0", "--token or --token-file is required to join a cluster"},
		{"--bootstrap-expect 3", "--token or --token-file is required: the servers that bootstrap a cluster together share one"},
		{"--bootstrap-expect 1 --token short", "--token: a token has at least 16 characters"},
		{"--bootstrap-expect 1 --token-file /nonexistent", "--token-file: open /nonexistent"},
		{"--bootstrap-expect 1 --gossip-key c2hvcnQ=", "--gossip-key: a gossip key is 16, 24 or 32 bytes, not 5"},
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

// A server keeps its token in its data dir and refuses another one; a
// server that bootstraps alone makes one.
func TestServerToken(t *testing.T) {
	dir := t.TempDir()
	made, keep, err := serverToken(tokenOptions{}, dir, 1)
	if err != nil || !keep || jointoken.Check(made) != nil {
		t.Fatalf("a lone bootstrap server's token: %q %v %v", made, keep, err)
	}
	if err := jointoken.Write(filepath.Join(dir, tokenFileName), made); err != nil {
		t.Fatal(err)
	}
	if got, keep, err := serverToken(tokenOptions{}, dir, 0); err != nil || keep || got != made {
		t.Fatalf("a restart without flags: %q %v %v", got, keep, err)
	}
	if got, _, err := serverToken(tokenOptions{token: made}, dir, 3); err != nil || got != made {
		t.Fatalf("the same token given: %q %v", got, err)
	}
	if _, _, err := serverToken(tokenOptions{token: strings.Repeat("x", 20)}, dir, 3); err == nil || !strings.Contains(err.Error(), "not the one of the cluster") {
		t.Fatalf("another token given: %v", err)
	}
}

// An agent is refused without the cluster's token or a gossip key, with
// one line, before it starts anything.
func TestAgentNeedsTheToken(t *testing.T) {
	for _, tc := range []struct{ flags, want string }{
		{"", "--token or --token-file is required"},
		{"--token short", "--token: a token has at least 16 characters"},
		{"--token abcdefghijklmnopqrstuvwxyz --token-file /x", "--token and --token-file: give one"},
	} {
		dataDir := filepath.Join(t.TempDir(), "data")
		cmd := agentCommand()
		cmd.SilenceErrors, cmd.SilenceUsage = true, true
		cmd.SetArgs(append([]string{"--data-dir", dataDir, "--node-ip", "127.0.0.1", "--join", "127.0.0.1:7946"}, strings.Fields(tc.flags)...))
		if err := cmd.Execute(); err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%q: err %v, want one starting %q", tc.flags, err, tc.want)
		}
		if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
			t.Errorf("%q: the data dir was created", tc.flags)
		}
	}
}
