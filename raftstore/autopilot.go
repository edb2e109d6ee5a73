package raftstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/membership"
)

// runBootstrap waits until BootstrapExpect servers without Raft state see
// each other in gossip, then bootstraps them as the first configuration.
// Every one of them computes the same configuration, so it does not matter
// which bootstraps first (hashicorp/raft accepts identical bootstraps). A
// server that sees a member with Raft state joins that cluster instead.
func (n *Node) runBootstrap(ctx context.Context) {
	defer n.wg.Done()
	for !n.bootstrap.Load() {
		changed := n.cfg.Members.Changed()
		var servers []raft.Server
		existing := false
		for _, m := range n.cfg.Members.Members() {
			if m.Role != membership.RoleServer || m.Status != membership.StatusAlive {
				continue
			}
			if m.Bootstrapped || m.ClusterID != "" {
				existing = true
				break
			}
			if m.Expect != n.cfg.BootstrapExpect {
				n.logger.Warn("server has a different --bootstrap-expect", "server", m.Name, "expect", m.Expect)
				continue
			}
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(m.Name), Address: raft.ServerAddress(m.RaftAddr)})
		}
		if existing {
			n.logger.Info("found a server of an existing cluster; waiting to be added to it")
			return
		}
		if len(servers) >= n.cfg.BootstrapExpect {
			n.logger.Info("bootstrapping", "servers", len(servers))
			err := n.raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error()
			if err != nil && !errors.Is(err, raft.ErrCantBootstrap) {
				n.logger.Error("bootstrap failed", "err", err)
			} else {
				n.bootstrap.Store(true)
				n.setBootstrapped(ctx)
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

// setBootstrapped tells the gossip pool this server has Raft state, and
// its cluster ID as soon as the store holds it.
func (n *Node) setBootstrapped(ctx context.Context) {
	n.updateMeta(ctx, func(m *membership.Meta) { m.Bootstrapped = true })
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		for ctx.Err() == nil {
			if id := n.ClusterID(); id != "" {
				n.updateMeta(ctx, func(m *membership.Meta) { m.ClusterID = id })
				return
			}
			w, err := n.cfg.Store.Watch(keyClusterID, n.cfg.Store.Applied())
			if err != nil {
				continue
			}
			w.Next(ctx, 1)
		}
	}()
}

// advertiseLeadership is a leader duty: the server's gossip metadata
// says it leads while it does, so agents prefer the followers.
func (n *Node) advertiseLeadership(ctx context.Context) {
	n.updateMeta(ctx, func(m *membership.Meta) { m.Leader = true })
	<-ctx.Done()
	n.updateMeta(context.WithoutCancel(ctx), func(m *membership.Meta) { m.Leader = false })
}

func (n *Node) updateMeta(ctx context.Context, f func(*membership.Meta)) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := n.cfg.Members.UpdateMeta(ctx, f); err != nil {
		n.logger.Warn("cannot update gossip metadata", "err", err)
	}
}

// autopilot is a leader duty that keeps the Raft configuration in line with
// the servers gossip sees: new servers join as non-voters and become voters
// once caught up; servers dead for longer than the grace period are removed,
// never taking the voters below BootstrapExpect.
//
// Every round it also asks each server for its Raft status, as Consul's
// autopilot does, so that the leader can tell which are healthy.
func (n *Node) autopilot(ctx context.Context) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	// lastCommit is the commit index at the previous round: a non-voter
	// that has applied it has caught up with where the cluster was then.
	var lastCommit uint64
	for {
		commit := n.raft.CommitIndex()
		n.pollServers(ctx)
		if err := n.reconcile(ctx, lastCommit); err != nil && ctx.Err() == nil {
			n.logger.Warn("autopilot", "err", err)
		}
		lastCommit = commit
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-n.cfg.Members.Changed():
		}
	}
}

func (n *Node) reconcile(ctx context.Context, caughtUpAt uint64) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return err
	}
	config := f.Configuration()
	inConfig := map[raft.ServerID]raft.Server{}
	voters := 0
	for _, s := range config.Servers {
		inConfig[s.ID] = s
		if s.Suffrage == raft.Voter {
			voters++
		}
	}
	members := map[string]membership.Member{}
	clusterID := n.ClusterID()
	for _, m := range n.cfg.Members.Members() {
		if m.Role != membership.RoleServer || (m.ClusterID != "" && m.ClusterID != clusterID) {
			continue
		}
		members[m.Name] = m
		s, ok := inConfig[raft.ServerID(m.Name)]
		if m.Status != membership.StatusAlive || m.RaftAddr == "" || n.removedNode(m) {
			continue
		}
		switch {
		case !ok:
			n.logger.Info("adding server as non-voter", "server", m.Name, "addr", m.RaftAddr)
			if err := n.raft.AddNonvoter(raft.ServerID(m.Name), raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("add %s: %w", m.Name, err)
			}
		case s.Address != raft.ServerAddress(m.RaftAddr):
			n.logger.Info("server's address changed", "server", m.Name, "from", s.Address, "to", m.RaftAddr)
			add := n.raft.AddNonvoter
			if s.Suffrage == raft.Voter {
				add = n.raft.AddVoter
			}
			if err := add(s.ID, raft.ServerAddress(m.RaftAddr), 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("update %s: %w", m.Name, err)
			}
		case s.Suffrage == raft.Nonvoter && caughtUpAt > 0 && n.caughtUp(m.Name, caughtUpAt):
			n.logger.Info("promoting caught-up server to voter", "server", m.Name)
			if err := n.raft.AddVoter(s.ID, s.Address, 0, 10*time.Second).Error(); err != nil {
				return fmt.Errorf("promote %s: %w", m.Name, err)
			}
			voters++
		}
	}
	for _, s := range config.Servers {
		if s.ID == raft.ServerID(n.cfg.Identity.Name) {
			continue
		}
		m, ok := members[string(s.ID)]
		if !ok || (m.Status != membership.StatusDead && m.Status != membership.StatusLeft) || time.Since(m.Since) < n.cfg.DeadServerGrace {
			continue
		}
		if s.Suffrage == raft.Voter && voters-1 < n.cfg.BootstrapExpect {
			continue
		}
		n.logger.Info("removing dead server", "server", s.ID, "dead_for", time.Since(m.Since).Round(time.Second))
		if err := n.raft.RemoveServer(s.ID, 0, 10*time.Second).Error(); err != nil {
			return fmt.Errorf("remove %s: %w", s.ID, err)
		}
		if s.Suffrage == raft.Voter {
			voters--
		}
	}
	return nil
}

// caughtUp reports whether the server's applied index, as last polled,
// has reached index.
func (n *Node) caughtUp(name string, index uint64) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.polled[name]
	return ok && p.err == nil && p.status.AppliedIndex >= index
}

// polled is what the leader last heard from a server.
type polled struct {
	at     time.Time // when the last answer came; zero if none ever did
	status Status    // that answer
	err    error     // why the last poll failed, nil if it answered
}

// pollServers asks every other server of the configuration for its
// status, all at once, each within a second.
func (n *Node) pollServers(ctx context.Context) {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return
	}
	apis := map[string]string{}
	for _, m := range n.cfg.Members.Members() {
		if m.Role == membership.RoleServer {
			apis[m.Name] = m.APIAddr
		}
	}
	inConfig := map[string]bool{}
	var wg sync.WaitGroup
	for _, s := range f.Configuration().Servers {
		name := string(s.ID)
		inConfig[name] = true
		if name == n.cfg.Identity.Name {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(ctx, time.Second)
			defer cancel()
			err := fmt.Errorf("%s is not in the gossip pool", name)
			var st Status
			if api := apis[name]; api != "" {
				st, err = n.statusOf(ctx, api)
			}
			n.mu.Lock()
			defer n.mu.Unlock()
			p := n.polled[name]
			p.err = err
			if err == nil {
				p.at, p.status = time.Now(), st
			}
			n.polled[name] = p
		}()
	}
	wg.Wait()
	n.mu.Lock()
	defer n.mu.Unlock()
	for name := range n.polled {
		if !inConfig[name] {
			delete(n.polled, name)
		}
	}
	n.noteOthersSpace()
}

// removedNode reports whether m is a node an operator removed.
func (n *Node) removedNode(m membership.Member) bool {
	kv, found, _, err := n.cfg.Store.Get(prefixRemoved + m.Name)
	return err == nil && found && string(kv.Value) == m.NodeID
}

// Peer is one server of the Raft configuration, as the leader sees it.
type Peer struct {
	Name    string `json:"name"`
	Address string `json:"address"`
	State   string `json:"state"`
	Voter   bool   `json:"voter"`
	// Healthy: alive in gossip, answering, in the leader's term, in
	// contact with the leader and caught up (as Consul's autopilot
	// judges a server).
	Healthy bool `json:"healthy"`
	// LastContact is how long ago the server last heard from the leader,
	// as it last said: "-" for the leader, "never" for a server that has
	// never answered.
	LastContact string `json:"last_contact"`
}

// Peers returns the Raft configuration with each server's health. It runs
// on the leader, which polls the others (see autopilot).
func (n *Node) Peers() ([]Peer, error) {
	if !n.IsLeader() {
		return nil, ErrNotLeader
	}
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	alive := map[string]bool{}
	for _, m := range n.cfg.Members.Members() {
		alive[m.Name] = m.Role == membership.RoleServer && m.Status == membership.StatusAlive
	}
	term, commit := n.raft.CurrentTerm(), n.raft.CommitIndex()
	n.mu.Lock()
	defer n.mu.Unlock()
	var out []Peer
	for _, s := range f.Configuration().Servers {
		p := Peer{Name: string(s.ID), Address: string(s.Address), State: "follower", Voter: s.Suffrage == raft.Voter}
		if p.Name == n.cfg.Identity.Name {
			p.State, p.Healthy, p.LastContact = "leader", true, "-"
			out = append(out, p)
			continue
		}
		polled := n.polled[p.Name]
		if polled.at.IsZero() || polled.status.SinceContact < 0 {
			p.LastContact = "never"
		} else {
			p.LastContact = (polled.status.SinceContact + time.Since(polled.at)).Round(time.Millisecond).String()
		}
		st := polled.status
		p.Healthy = alive[p.Name] && polled.err == nil && st.Term == term &&
			st.SinceContact >= 0 && st.SinceContact < n.cfg.HeartbeatTimeout && st.AppliedIndex+n.cfg.ReadyMaxLag >= commit
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b Peer) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	return out, nil
}

// ErrNotLeader is returned by leader-only operations on another server.
var ErrNotLeader = errors.New("not the leader")

// ErrUnknownPeer is returned by RemovePeer for a name not in the configuration.
var ErrUnknownPeer = errors.New("no such server in the Raft configuration")

// RemovePeer removes a server from the Raft configuration for good. It must
// run on the leader. A tombstone in the store keeps autopilot from adding the
// server back while it still gossips; a new server under the same name (a
// fresh data dir) is welcome.
func (n *Node) RemovePeer(ctx context.Context, name string) error {
	if !n.IsLeader() {
		return ErrNotLeader
	}
	peers, err := n.Peers()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(peers, func(p Peer) bool { return p.Name == name }) {
		return fmt.Errorf("%w: %s", ErrUnknownPeer, name)
	}
	m, _ := n.cfg.Members.Member(name)
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	if _, err := n.applyLeader(ctx, &fsm.Txn{Ops: []fsm.Op{fsm.Put(prefixRemoved+name, []byte(m.NodeID), "", fsm.Cond{})}}); err != nil {
		return fmt.Errorf("record removal: %w", err)
	}
	return n.raft.RemoveServer(raft.ServerID(name), 0, time.Until(deadline(ctx))).Error()
}
