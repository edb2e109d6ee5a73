// Package membership is Pontoon's gossip pool (hashicorp/memberlist). Servers
// and agents are members of one pool; each member's metadata says its role
// and addresses. Servers use the pool to bootstrap (--bootstrap-expect), to
// find the leader's API address and to notice dead servers; agents use it to
// find API servers.
//
// A pool refuses to merge with members of another cluster: a server started
// on the data dir of one cluster and pointed at another stops with a reason
// instead of mixing the two.
package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/memberlist"
)

// Role is what a member runs.
type Role string

// The roles.
const (
	RoleServer Role = "server"
	RoleAgent  Role = "agent"
)

// Status is a member's state as gossip sees it.
type Status string

// The statuses.
const (
	StatusAlive   Status = "alive"
	StatusSuspect Status = "suspect"
	StatusDead    Status = "dead"
	StatusLeft    Status = "left"
)

// Meta is what a member says about itself. It travels in every gossip
// message, so it stays small (memberlist allows 512 bytes).
type Meta struct {
	Role     Role   `json:"role"`
	APIAddr  string `json:"api,omitempty"`
	RaftAddr string `json:"raft,omitempty"`
	// NodeID is generated with the member's data dir: a server that comes
	// back with a new data dir under the same name is a different node.
	NodeID string `json:"id,omitempty"`
	// ClusterID is the cluster the member's data belongs to, once known.
	ClusterID string `json:"cluster,omitempty"`
	// Bootstrapped says that a server has Raft state already.
	Bootstrapped bool `json:"boot,omitempty"`
	// Expect is a server's --bootstrap-expect.
	Expect int `json:"expect,omitempty"`
	// Leaving is gossiped just before a graceful leave, so the others
	// tell a member that left from one that died.
	Leaving bool `json:"leaving,omitempty"`
	// Leader says that a server leads the Raft cluster: agents prefer
	// the others, so the leader's work is not also every node's watches.
	Leader bool `json:"leader,omitempty"`
}

// Member is one member of the pool.
type Member struct {
	Name       string
	GossipAddr string
	Status     Status
	// Since is when the member entered its status, as seen locally.
	Since time.Time
	Meta
}

// Config configures a Pool.
type Config struct {
	Name string
	// BindAddr is the gossip host:port to listen on.
	BindAddr string
	// AdvertiseAddr is the host:port others reach this member at; empty
	// means BindAddr.
	AdvertiseAddr string
	Meta          Meta
	Logger        *slog.Logger
	// SecretKey encrypts and authenticates every gossip message (AES-GCM,
	// memberlist's keyring): a process without it can neither read the
	// pool nor join it. Nil gossips in the clear.
	SecretKey []byte
}

// Pool is this process's membership in the gossip pool.
type Pool struct {
	ml     *memberlist.Memberlist
	logger *slog.Logger
	// updating serializes UpdateMeta: two updates at once would lose one
	// of their changes, and memberlist's UpdateNode is not safe to call
	// concurrently (it reads the local node's state unlocked).
	updating sync.Mutex

	mu       sync.Mutex
	meta     Meta
	metaJSON []byte
	members  map[string]*Member
	mismatch error
	wake     chan struct{}
}

// ErrOtherCluster is returned by Join when the members reached belong to
// another cluster than this member's data.
var ErrOtherCluster = errors.New("members belong to another cluster")

// Create starts listening for gossip.
func Create(cfg Config) (*Pool, error) {
	host, port, err := splitHostPort(cfg.BindAddr)
	if err != nil {
		return nil, fmt.Errorf("gossip address: %w", err)
	}
	p := &Pool{logger: cfg.Logger, members: map[string]*Member{}, wake: make(chan struct{})}
	if err := p.setMeta(cfg.Meta); err != nil {
		return nil, err
	}
	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Name
	mc.BindAddr, mc.BindPort = host, port
	mc.AdvertiseAddr, mc.AdvertisePort = host, port
	if cfg.AdvertiseAddr != "" {
		if mc.AdvertiseAddr, mc.AdvertisePort, err = splitHostPort(cfg.AdvertiseAddr); err != nil {
			return nil, fmt.Errorf("gossip advertise address: %w", err)
		}
	}
	mc.Delegate = (*delegate)(p)
	mc.Events = (*delegate)(p)
	mc.Merge = (*delegate)(p)
	mc.Alive = (*delegate)(p)
	mc.Logger = newStdLogger(cfg.Logger)
	mc.SecretKey = cfg.SecretKey
	ml, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("start gossip on %s: %w", cfg.BindAddr, err)
	}
	p.ml = ml
	return p, nil
}

func splitHostPort(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("port %q: %w", port, err)
	}
	return host, n, nil
}

func (p *Pool) setMeta(m Meta) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if len(b) > memberlist.MetaMaxSize {
		return fmt.Errorf("member metadata is %d bytes, more than %d", len(b), memberlist.MetaMaxSize)
	}
	p.mu.Lock()
	p.meta, p.metaJSON = m, b
	p.mu.Unlock()
	return nil
}

// UpdateMeta changes this member's metadata and gossips it.
func (p *Pool) UpdateMeta(ctx context.Context, update func(*Meta)) error {
	p.updating.Lock()
	defer p.updating.Unlock()
	p.mu.Lock()
	m := p.meta
	p.mu.Unlock()
	update(&m)
	if err := p.setMeta(m); err != nil {
		return err
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = time.Until(d)
	}
	return p.ml.UpdateNode(timeout)
}

// LocalMeta returns this member's metadata.
func (p *Pool) LocalMeta() Meta {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.meta
}

// TryJoin contacts the given gossip addresses once. It reports whether any
// answered, and fails with ErrOtherCluster when they belong to another
// cluster.
func (p *Pool) TryJoin(addrs []string) (bool, error) {
	if len(addrs) == 0 {
		return true, nil
	}
	n, err := p.ml.Join(addrs)
	if mm := p.mismatchErr(); mm != nil {
		return false, mm
	}
	return n > 0, err
}

// Join contacts the given gossip addresses until one answers or ctx ends.
// It fails at once with ErrOtherCluster when they belong to another cluster.
func (p *Pool) Join(ctx context.Context, addrs []string) error {
	delay := 100 * time.Millisecond
	var warned time.Time
	for {
		joined, err := p.TryJoin(addrs)
		if joined || errors.Is(err, ErrOtherCluster) {
			return err
		}
		if wrongKey(err) && time.Since(warned) > 30*time.Second {
			p.logger.Warn("cannot join the gossip pool: its members do not take this process's messages; they likely have another --token (or --gossip-key)", "addrs", addrs, "err", err)
			warned = time.Now()
		} else {
			p.logger.Debug("gossip join failed, retrying", "addrs", addrs, "err", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join %v: %w (last error: %v)", addrs, ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(2*delay, 2*time.Second)
	}
}

// wrongKey says whether a failed join looks like one to members with
// another gossip key: a member that cannot decrypt a message closes the
// connection without an answer, and one that answers in another key
// cannot be read.
func wrongKey(err error) bool {
	if err == nil {
		return false
	}
	msg := err.Error()
	return strings.Contains(msg, "EOF") || strings.Contains(msg, "decrypt") || strings.Contains(msg, "encrypt")
}

func (p *Pool) mismatchErr() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.mismatch
}

// Members returns every member seen, dead and left ones included, by name.
func (p *Pool) Members() []Member {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]Member, 0, len(p.members))
	for _, m := range p.members {
		out = append(out, *m)
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	return out
}

// APIServers returns the API addresses of the servers alive.
func (p *Pool) APIServers() []string {
	var out []string
	for _, m := range p.apiServers() {
		out = append(out, m.APIAddr)
	}
	return out
}

func (p *Pool) apiServers() []Member {
	var out []Member
	for _, m := range p.Members() {
		if m.Role == RoleServer && m.Status == StatusAlive && m.APIAddr != "" && !m.Leaving {
			out = append(out, m)
		}
	}
	return out
}

// Member returns the named member.
func (p *Pool) Member(name string) (Member, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[name]
	if !ok {
		return Member{}, false
	}
	return *m, true
}

// DeadNodes returns the agents the pool has found dead (failed, not left),
// by name, with when this server saw each one die. An agent gossips under
// its Node's name, so these are nodes whose agent stopped answering.
func (p *Pool) DeadNodes() map[string]time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	dead := map[string]time.Time{}
	for _, m := range p.members {
		if m.Role == RoleAgent && m.Status == StatusDead {
			dead[m.Name] = m.Since
		}
	}
	return dead
}

// Changed returns a channel closed at the next change of any member.
func (p *Pool) Changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.wake
}

// Leave tells the others this member is leaving, then stops gossiping.
func (p *Pool) Leave(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout/2)
	defer cancel()
	p.UpdateMeta(ctx, func(m *Meta) { m.Leaving = true })
	err := p.ml.Leave(timeout / 2)
	if serr := p.ml.Shutdown(); err == nil {
		err = serr
	}
	return err
}

// Shutdown stops gossiping without a goodbye, as a crash would.
func (p *Pool) Shutdown() error {
	return p.ml.Shutdown()
}

// delegate implements memberlist's delegate interfaces for the pool.
type delegate Pool

func (d *delegate) pool() *Pool { return (*Pool)(d) }

func (d *delegate) NodeMeta(limit int) []byte {
	p := d.pool()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.metaJSON
}

func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

func (d *delegate) NotifyJoin(n *memberlist.Node)   { d.update(n, false) }
func (d *delegate) NotifyLeave(n *memberlist.Node)  { d.update(n, true) }
func (d *delegate) NotifyUpdate(n *memberlist.Node) { d.update(n, false) }

// update records a member. memberlist does not keep the Node's own State
// field current, so the status comes from which callback fired.
func (d *delegate) update(n *memberlist.Node, gone bool) {
	p := d.pool()
	var meta Meta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		p.logger.Warn("ignoring member with unreadable metadata", "member", n.Name, "err", err)
		return
	}
	status := StatusAlive
	switch {
	case gone && meta.Leaving:
		status = StatusLeft
	case gone:
		status = StatusDead
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m, ok := p.members[n.Name]
	if !ok || m.Status != status {
		m = &Member{Name: n.Name, Status: status, Since: time.Now()}
		p.members[n.Name] = m
	}
	m.GossipAddr = n.Address()
	m.Meta = meta
	close(p.wake)
	p.wake = make(chan struct{})
}

// NotifyMerge refuses to merge with a pool whose servers belong to another
// cluster than ours, and remembers why for Join.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, n := range peers {
		if err := d.NotifyAlive(n); err != nil {
			p := d.pool()
			p.mu.Lock()
			p.mismatch = err
			p.mu.Unlock()
			return err
		}
	}
	return nil
}

// NotifyAlive refuses a member that belongs to another cluster.
func (d *delegate) NotifyAlive(n *memberlist.Node) error {
	var meta Meta
	if err := json.Unmarshal(n.Meta, &meta); err != nil {
		return fmt.Errorf("member %s: unreadable metadata: %w", n.Name, err)
	}
	mine := d.pool().LocalMeta().ClusterID
	if mine != "" && meta.ClusterID != "" && meta.ClusterID != mine {
		return fmt.Errorf("%w: %s is in cluster %s, this data dir is in cluster %s", ErrOtherCluster, n.Name, meta.ClusterID, mine)
	}
	return nil
}
