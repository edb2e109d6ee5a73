package e2e

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

// peersTable runs `pontoon operator raft list-peers` and returns its rows.
func peersTable(c *cluster.Cluster, s *cluster.Server) ([][]string, error) {
	out, stderr, code := c.CLI(s, "operator", "raft", "list-peers")
	if code != 0 {
		return nil, fmt.Errorf("list-peers: exit %d: %s", code, stderr)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if got := strings.Join(strings.Fields(lines[0]), " "); got != "NAME ADDRESS STATE VOTER HEALTHY LAST CONTACT" {
		return nil, fmt.Errorf("list-peers header %q", got)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return rows, nil
}

func mustPeers(t *testing.T, c *cluster.Cluster, s *cluster.Server) [][]string {
	t.Helper()
	rows, err := peersTable(c, s)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

// waitVoters waits until list-peers on s shows exactly the named servers,
// all voters, with one leader.
func waitVoters(t *testing.T, c *cluster.Cluster, s *cluster.Server, names ...string) {
	t.Helper()
	cluster.Eventually(t, 30*time.Second, func() error {
		rows, err := peersTable(c, s)
		if err != nil {
			return err
		}
		var got []string
		leaders := 0
		for _, r := range rows {
			if r[3] != "true" || r[4] != "true" {
				return fmt.Errorf("%s is not a healthy voter yet: %v", r[0], rows)
			}
			if r[2] == "leader" {
				leaders++
			} else if r[2] != "follower" {
				return fmt.Errorf("state %q: %v", r[2], rows)
			}
			got = append(got, r[0])
		}
		if strings.Join(got, ",") != strings.Join(names, ",") || leaders != 1 {
			return fmt.Errorf("peers %v, want %v with one leader", rows, names)
		}
		return nil
	})
}

func names(c *cluster.Cluster) []string {
	var out []string
	for _, s := range c.Servers {
		out = append(out, s.Name)
	}
	return out
}

func permutations(n int) [][]int {
	if n == 1 {
		return [][]int{{0}}
	}
	var out [][]int
	for _, p := range permutations(n - 1) {
		for i := 0; i <= len(p); i++ {
			q := append(append(append([]int{}, p[:i]...), n-1), p[i:]...)
			out = append(out, q)
		}
	}
	return out
}

func TestThreeServersFormInEveryOrder(t *testing.T) {
	for _, order := range permutations(3) {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			c := newCluster(t, 3, 21)
			for _, i := range order {
				c.Servers[i].Start()
				time.Sleep(200 * time.Millisecond) // staggered starts are the point
			}
			leader := c.Leader(20 * time.Second)
			waitVoters(t, c, c.Servers[order[0]], names(c)...)
			ctx := context.Background()
			if _, err := leader.Client().Put(ctx, "formed", []byte("yes"), client.Cond{}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestFiveServersForm(t *testing.T) {
	for _, order := range [][]int{{0, 1, 2, 3, 4}, {4, 3, 2, 1, 0}, {2, 4, 0, 3, 1}} {
		t.Run(fmt.Sprint(order), func(t *testing.T) {
			c := newCluster(t, 5, 21)
			c.Start(order...)
			c.Leader(20 * time.Second)
			waitVoters(t, c, c.Servers[order[4]], names(c)...)
		})
	}
}

func TestRestartKeepsDataAndRejoins(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	leader := c.Leader(20 * time.Second)
	ctx := context.Background()
	rev, err := leader.Client().Put(ctx, "durable", []byte("v1"), client.Cond{})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range c.Servers {
		s.Kill()
	}
	c.Start(2, 0, 1)
	c.Leader(20 * time.Second)
	for _, s := range c.Servers {
		kv, err := s.Client().Get(ctx, "durable", false)
		if err != nil || string(kv.Value) != "v1" || kv.Revision != rev {
			t.Fatalf("%s after restart: %+v %v", s.Name, kv, err)
		}
	}
	waitVoters(t, c, c.Servers[0], names(c)...)
}

func TestNewServerJoinsAndBecomesVoter(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	leader := c.Leader(20 * time.Second)
	ctx := context.Background()
	for i := range 200 {
		if _, err := leader.Client().Put(ctx, fmt.Sprint("k", i), []byte("v"), client.Cond{}); err != nil {
			t.Fatal(err)
		}
	}
	s4 := c.AddServer()
	s4.Start()
	waitVoters(t, c, c.Servers[1], "s1", "s2", "s3", "s4")
	kv, err := s4.Client().Get(ctx, "k199", true)
	if err != nil || string(kv.Value) != "v" {
		t.Fatalf("new server's local read: %+v %v", kv, err)
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// startFails starts s and expects it to exit non-zero with a one-line
// reason containing want.
func startFails(t *testing.T, s *cluster.Server, want string) {
	t.Helper()
	s.Start()
	code, exited := s.Wait(20 * time.Second)
	if !exited || code == 0 {
		t.Fatalf("%s started (exited=%v code=%d); want a refusal", s.Name, exited, code)
	}
	log := s.Log()
	lines := strings.Split(strings.TrimSpace(log), "\n")
	last := lines[len(lines)-2] // the line before the harness's "=== exited"
	if !strings.HasPrefix(last, "pontoon: ") || !strings.Contains(last, want) {
		t.Fatalf("reason %q does not say %q", last, want)
	}
}

func TestRefusesDataDirOfAnotherCluster(t *testing.T) {
	a := cluster.New(t, cluster.Options{Bin: bin, Servers: 1, BaseIP: 41})
	// The same token: what refuses the join is the data.
	b := cluster.New(t, cluster.Options{Bin: bin, Servers: 1, BaseIP: 42, TokenFile: a.TokenFile()})
	a.Start()
	b.Start()
	a.Leader(20 * time.Second)
	b.Leader(20 * time.Second)
	sb := b.Servers[0]
	cluster.Eventually(t, 10*time.Second, func() error {
		st, err := sb.Client().Status(context.Background())
		if err != nil || st.ClusterID == "" {
			return fmt.Errorf("cluster id not known yet: %v", err)
		}
		return nil
	})
	sb.Stop()
	before := fileHash(t, filepath.Join(sb.DataDir, "fsm.db"))
	sb.Args = []string{"--join", a.Servers[0].GossipAddr()}
	startFails(t, sb, "another cluster")
	if fileHash(t, filepath.Join(sb.DataDir, "fsm.db")) != before {
		t.Fatal("the refused data dir was changed")
	}
}

// TestWrongTokenNeverJoins: a server with another token than the
// cluster's cannot enter its gossip pool, so autopilot never sees it and
// it never becomes a voter; it says why. A server whose data dir belongs
// to a cluster with another token refuses to start.
func TestWrongTokenNeverJoins(t *testing.T) {
	a := cluster.New(t, cluster.Options{Bin: bin, Servers: 1, BaseIP: 41})
	a.Start()
	leader := a.Leader(20 * time.Second)
	stranger := cluster.New(t, cluster.Options{Bin: bin, Servers: 1, BaseIP: 42, Expect: 1})
	x := stranger.Servers[0]
	x.Name = "x1"
	x.Args = []string{"--bootstrap-expect", "0", "--join", leader.GossipAddr()}
	x.Start()
	cluster.Eventually(t, 20*time.Second, func() error {
		if !strings.Contains(x.Log(), "another --token") {
			return errors.New("the stranger does not say why it cannot join")
		}
		return nil
	})
	peers, err := leader.Client().Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(peers) != 1 {
		t.Fatalf("the stranger entered the Raft configuration: %+v", peers)
	}
	members, err := leader.Client().Members(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range members {
		if m.Name == "x1" {
			t.Fatalf("the stranger is in the gossip pool: %+v", m)
		}
	}
	x.Stop()
	// Its data dir now keeps its own token: given the cluster's (the
	// last --token-file counts), it refuses to start.
	x.Args = append(x.Args, "--token-file", a.TokenFile())
	startFails(t, x, "not the one of the cluster this data dir belongs to")
}

func TestRefusesCorruptOrForeignDataDir(t *testing.T) {
	c := newCluster(t, 1, 43)
	s := c.Servers[0]
	s.Start()
	c.Leader(20 * time.Second)
	s.Stop()

	fsmPath := filepath.Join(s.DataDir, "fsm.db")
	good, _ := os.ReadFile(fsmPath)
	os.WriteFile(fsmPath, []byte(strings.Repeat("garbage!", 4096)), 0o600)
	before := fileHash(t, fsmPath)
	startFails(t, s, "fsm.db")
	if fileHash(t, fsmPath) != before {
		t.Fatal("the corrupt store was rewritten")
	}
	os.WriteFile(fsmPath, good, 0o600)

	// The same token: what refuses the start is the server's identity.
	other := cluster.New(t, cluster.Options{Bin: bin, Servers: 1, BaseIP: 44, TokenFile: c.TokenFile()})
	other.Servers[0].Name = "x1"
	other.Servers[0].DataDir = s.DataDir
	startFails(t, other.Servers[0], `belongs to server "s1"`)
}

func TestSIGTERMHandsOverLeadershipAndStaysInConfiguration(t *testing.T) {
	c := newCluster(t, 3, 21)
	c.Start()
	leader := c.Leader(20 * time.Second)
	leader.Stop()
	if !strings.Contains(leader.Log(), "leadership transferred") {
		t.Fatal("the leader did not transfer leadership before stopping")
	}
	newLeader := c.Leader(5 * time.Second)
	rows := mustPeers(t, c, newLeader)
	if len(rows) != 3 {
		t.Fatalf("a stopped server left the configuration: %v", rows)
	}
	leader.Start()
	waitVoters(t, c, leader, names(c)...)
}

func TestRemovePeerAndDeadServerCleanup(t *testing.T) {
	c := newCluster(t, 3, 21, "--dead-server-grace", "2s")
	c.Start()
	leader := c.Leader(20 * time.Second)
	ctx := context.Background()

	// A dead server stays while removing it would take the voters below
	// --bootstrap-expect.
	waitVoters(t, c, leader, names(c)...)
	dead := c.Others(leader)[0]
	dead.Kill()
	// Held over more than twice the grace period, checked all along.
	cluster.Consistently(t, 5*time.Second, func() error {
		peers, err := leader.Client().Peers(ctx)
		if err == nil && len(peers) != 3 {
			err = fmt.Errorf("dead server removed without a replacement: %v", peers)
		}
		return err
	})
	// Asked through a follower, the leader says which server is dead and
	// since when, and gossip agrees.
	var follower0 *cluster.Server
	for _, s := range c.Others(leader) {
		if s != dead {
			follower0 = s
		}
	}
	cluster.Eventually(t, 10*time.Second, func() error {
		rows, err := peersTable(c, follower0)
		if err != nil {
			return err
		}
		for _, r := range rows {
			if healthy := r[4] == "true"; healthy == (r[0] == dead.Name) {
				return fmt.Errorf("%s healthy=%s: %v", r[0], r[4], rows)
			}
			if r[0] == leader.Name && r[5] != "-" {
				return fmt.Errorf("the leader's last contact is %q", r[5])
			}
			if r[0] == dead.Name {
				if d, err := time.ParseDuration(r[5]); err != nil || d < time.Second {
					return fmt.Errorf("the dead server's last contact is %q", r[5])
				}
			}
		}
		out, _, _ := c.CLI(follower0, "members")
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 2 && f[0] == dead.Name && f[2] == "alive" {
				return fmt.Errorf("members says %s is alive:\n%s", dead.Name, out)
			}
		}
		return nil
	})
	// Once a replacement has joined, the dead one goes.
	repl := c.AddServer()
	repl.Start()
	var want []string
	for _, s := range c.Servers {
		if s != dead {
			want = append(want, s.Name)
		}
	}
	waitVoters(t, c, leader, want...)

	// remove-peer through a follower removes a live server for good; it
	// stops itself and is not added back.
	victim := c.Others(c.Leader(10 * time.Second))[0]
	if victim == dead {
		victim = repl
	}
	follower := c.Others(victim)[0]
	if follower == dead {
		follower = c.Others(victim)[1]
	}
	if _, stderr, code := c.CLI(follower, "operator", "raft", "remove-peer", victim.Name); code != 0 {
		t.Fatalf("remove-peer: %s", stderr)
	}
	code, exited := victim.Wait(20 * time.Second)
	if !exited || code == 0 {
		t.Fatalf("removed server still running (exited=%v code=%d)", exited, code)
	}
	var rest []string
	for _, n := range want {
		if n != victim.Name {
			rest = append(rest, n)
		}
	}
	waitVoters(t, c, follower, rest...)
	if _, stderr, code := c.CLI(follower, "operator", "raft", "remove-peer", "nosuch"); code == 0 || strings.TrimSpace(stderr) != "pontoon: no such server in the Raft configuration: nosuch" {
		t.Fatalf("remove-peer of an unknown server: exit %d: %s", code, stderr)
	}
	if _, err := follower.Client().Put(ctx, "still", []byte("works"), client.Cond{}); err != nil {
		t.Fatal(err)
	}
}
