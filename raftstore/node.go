// Package raftstore is the Raft node of a Pontoon server: hashicorp/raft
// with its log in raft-wal (or raft-boltdb, see LogStoreKind), its
// snapshots on disk and fsm.Store as its state machine.
//
// It gives the rest of the server four things:
//   - Apply: a transaction from any server. A follower forwards it to the
//     leader over an internal HTTP endpoint and returns the leader's verdict;
//     it never retries a request that may have reached the log, so nothing
//     is applied twice.
//   - ReadIndex: a linearizable read barrier on any server. hashicorp/raft has
//     none built in (its issues #359, #603), so the leader confirms its
//     leadership with VerifyLeader and hands out its commit index; the reader
//     waits until its own store has applied that index, then reads locally.
//   - Leader duties: functions that run while this server is leader, started
//     after the new leader has applied an entry of its own term and stopped
//     (and waited for) when leadership is lost.
//   - Membership management: bootstrap with --bootstrap-expect, joining
//     servers added as non-voters and promoted once caught up, dead servers
//     removed after a grace period (autopilot, as Consul calls it).
package raftstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/membership"
)

// Errors returned by Apply and ReadIndex. The API layer maps them to 503s
// (no leader) and 504s (unknown outcome).
var (
	// ErrNoLeader: no leader could be reached in time; nothing was sent.
	ErrNoLeader = errors.New("no Raft leader is known")
	// ErrUnknownOutcome: the transaction may or may not have been applied
	// (leadership was lost after it entered the log, or the connection to
	// the leader broke after it was sent).
	ErrUnknownOutcome = errors.New("outcome unknown: the write may or may not have been applied")
	// ErrRemoved: this server was removed from the cluster.
	ErrRemoved = errors.New("this server was removed from the Raft configuration")
)

// Reserved keys the node writes. Everything under /pontoon/ belongs to it.
const (
	keyClusterID = "/pontoon/cluster/id"
	keyLeader    = "/pontoon/raft/leader"
	// prefixRemoved holds a tombstone per removed server: its node ID, so
	// autopilot does not add it back while it still gossips.
	prefixRemoved = "/pontoon/raft/removed/"
)

// Config configures a Node.
type Config struct {
	Identity Identity
	DataDir  string
	// InternalKey is the cluster's key for the forwarding between its
	// servers (jointoken.InternalKey): a forwarded write or read barrier
	// without it is refused. Empty refuses every one.
	InternalKey []byte
	// RaftAddr is where Raft listens; AdvertiseRaft is the address others
	// dial (and the source address of this server's own dials).
	RaftAddr, AdvertiseRaft string
	// LocalIP is the address outgoing HTTP to other servers leaves from.
	LocalIP string
	// BootstrapExpect is the number of servers that form a new cluster
	// together; zero means wait to be added to an existing one.
	BootstrapExpect int

	Store   *fsm.Store
	Members *membership.Pool
	Logger  *slog.Logger
	Metrics prometheus.Registerer

	// HeartbeatTimeout is Raft's heartbeat and election timeout; the leader
	// lease is half of it.
	HeartbeatTimeout time.Duration
	// SnapshotThreshold is the fewest log entries between snapshots; a
	// store holding more objects waits for longer (snapshotThreshold).
	SnapshotThreshold uint64
	TrailingLogs      uint64
	SnapshotInterval  time.Duration
	// DeadServerGrace is how long a server must be dead in gossip before
	// autopilot may remove it.
	DeadServerGrace time.Duration
	// ApplyTimeout bounds every Apply and ReadIndex call, whatever its
	// deadline.
	ApplyTimeout time.Duration
	// RebuildStore says OpenStore set the store aside: Raft restores its
	// latest snapshot into the empty store at start and replays the log.
	RebuildStore bool
	// LogStore is the log store a new data dir gets; "" means
	// LogStoreWAL. An existing data dir must agree with it when set.
	LogStore LogStoreKind
	// ReadyMaxLag is how many committed entries a server may have left
	// to apply and still call itself ready.
	ReadyMaxLag uint64
	// DataDirReserve is the free space kept in the data dir besides room
	// for a snapshot and a log segment; below it writes are refused.
	DataDirReserve uint64
	// WALSegmentSize is the size of raft-wal's segment files, each
	// allocated whole when it is started; zero is raft-wal's 64 MiB.
	WALSegmentSize int
	// LogVerifyInterval is how often the leader appends a checkpoint for
	// the log verifier; zero or less turns verification off.
	LogVerifyInterval time.Duration
}

func (c *Config) setDefaults() {
	if c.HeartbeatTimeout == 0 {
		c.HeartbeatTimeout = 500 * time.Millisecond
	}
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 16384
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 32768
	}
	if c.SnapshotInterval == 0 {
		c.SnapshotInterval = 5 * time.Second
	}
	if c.DeadServerGrace == 0 {
		c.DeadServerGrace = 2 * time.Minute
	}
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = 10 * time.Second
	}
	if c.ReadyMaxLag == 0 {
		c.ReadyMaxLag = DefaultReadyMaxLag
	}
	if c.AdvertiseRaft == "" {
		c.AdvertiseRaft = c.RaftAddr
	}
}

// sealedCheckInterval is how often the server looks for raft-wal segments
// sealed since it last read them back.
const sealedCheckInterval = 10 * time.Second

// DefaultReadyMaxLag is Config.ReadyMaxLag's default: a few batches of
// writes under load, far below a backlog worth keeping clients from.
const DefaultReadyMaxLag = 1000

// LeaderDuty runs while this server is leader, until ctx is cancelled.
// Requests made with a context derived from ctx (or passed through Fenced)
// are fenced by the leadership term.
type LeaderDuty func(ctx context.Context)

// Node is a running Raft member.
type Node struct {
	cfg       Config
	raft      *raft.Raft
	transport *raft.NetworkTransport
	logStore  *logStore
	snapshots raft.SnapshotStore
	logger    *slog.Logger
	client    *http.Client
	metrics   *metrics

	// transferMu is held for writing while leadership is handed over, so
	// that no Apply enters the log meanwhile.
	transferMu sync.RWMutex
	// restoring is held by the snapshot restore that runs.
	restoring sync.Mutex

	mu        sync.Mutex
	duties    []LeaderDuty
	ready     bool          // leader and its marker entry applied
	readyWake chan struct{} // closed when ready or the leader changes
	leaderErr error         // why the last attempt to become ready failed
	// dutyCtx and dutyRunning are the running duties' context and group
	// while ready, so that a duty added then starts at once.
	dutyCtx     context.Context
	dutyRunning *sync.WaitGroup
	// polled is what autopilot last heard from each other server.
	polled map[string]polled

	space *space
	// othersLow is why another server's data dir is short of space, as
	// last polled; nil when none is.
	othersLow atomic.Pointer[error]

	fwd       *forwarder
	submitter *submitter
	observed  chan raft.Observation
	removed   chan struct{}
	stopping  atomic.Bool
	bootstrap atomic.Bool // true once this server has Raft state
	wg        sync.WaitGroup
	stop      context.CancelFunc
}

// Open opens the data dir's Raft state and starts the node. It refuses a
// data dir whose store and log disagree, and never rewrites one.
func Open(cfg Config) (*Node, error) {
	cfg.setDefaults()
	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("create raft dir: %w", err)
	}
	logStore, err := openLogStore(raftDir, cfg.LogStore, cfg.WALSegmentSize, cfg.Logger)
	if err != nil {
		return nil, err
	}
	space := &space{dir: cfg.DataDir, reserve: cfg.DataDirReserve, store: cfg.Store, segment: logStore.segmentSize}
	if err := space.measure(); err != nil {
		logStore.Close()
		return nil, err
	}
	n := &Node{cfg: cfg, logStore: logStore, space: space, logger: cfg.Logger.With("component", "raft"),
		readyWake: make(chan struct{}), removed: make(chan struct{}), polled: map[string]polled{}}
	ok := false
	defer func() {
		if !ok {
			n.closeStores()
		}
	}()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, newHCLog(cfg.Logger, "raft-snapshots"))
	if err != nil {
		return nil, fmt.Errorf("open raft snapshots: %w", err)
	}
	n.snapshots = snaps
	hasState, err := raft.HasExistingState(logStore.log, logStore.stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("read raft state: %w", err)
	}
	if err := checkConsistent(cfg.Store, logStore.log, snaps); err != nil {
		return nil, fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	stream, err := newStreamLayer(cfg.RaftAddr, cfg.AdvertiseRaft)
	if err != nil {
		return nil, err
	}
	n.transport = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 8,
		Timeout: 10 * time.Second,
		Logger:  newHCLog(cfg.Logger, "raft-net"),
	})

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.Identity.Name)
	rc.Logger = newHCLog(cfg.Logger, "raft")
	rc.HeartbeatTimeout = cfg.HeartbeatTimeout
	rc.ElectionTimeout = cfg.HeartbeatTimeout
	rc.LeaderLeaseTimeout = cfg.HeartbeatTimeout / 2
	rc.SnapshotThreshold = cfg.SnapshotThreshold
	rc.TrailingLogs = cfg.TrailingLogs
	rc.SnapshotInterval = cfg.SnapshotInterval
	// Followers learn the commit index only from AppendEntries (not from
	// heartbeats), sent when there is something new or every CommitTimeout.
	// A linearizable read on a follower waits for that, so the default
	// 50 ms would be the floor of every follower read.
	rc.CommitTimeout = 5 * time.Millisecond
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	// The store keeps its own applied index in bbolt; restoring the last
	// snapshot at start would throw that away and rewrite the whole file,
	// unless the store was set aside and must be rebuilt.
	rc.NoSnapshotRestoreOnStart = !cfg.RebuildStore
	rc.NoLegacyTelemetry = true

	cache, err := raft.NewLogCache(512, logStore.log)
	if err != nil {
		return nil, fmt.Errorf("raft log cache: %w", err)
	}
	r, err := raft.NewRaft(rc, cfg.Store, cache, logStore.stable, snaps, n.transport)
	if err != nil {
		n.transport.Close()
		return nil, fmt.Errorf("start raft: %w", err)
	}
	n.raft = r
	n.submitter = &submitter{raft: r, transferMu: &n.transferMu}
	n.bootstrap.Store(hasState)
	n.client = newHTTPClient(cfg.LocalIP)
	n.metrics = newMetrics(n, cfg.Metrics)

	n.observed = make(chan raft.Observation, 64)
	r.RegisterObserver(raft.NewObserver(n.observed, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	}))
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	n.fwd = &forwarder{reqs: make(chan *forwardReq), maxLinger: maxLinger}
	n.wg.Add(6 + forwardSenders)
	go func() {
		defer n.wg.Done()
		n.space.run(ctx, n.logger)
	}()
	go func() {
		defer n.wg.Done()
		if n.logStore.checker != nil {
			every(ctx, sealedCheckInterval, n.logStore.verifySealed)
		}
	}()
	go n.observe(ctx)
	go n.leadership(ctx)
	go n.watchRemoval(ctx)
	go n.paceSnapshots(ctx)
	for range forwardSenders {
		go n.runForwarder(ctx)
	}
	if hasState {
		n.setBootstrapped(ctx)
	} else if cfg.BootstrapExpect > 0 {
		n.wg.Add(1)
		go n.runBootstrap(ctx)
	}
	n.AddLeaderDuty(n.autopilot)
	n.AddLeaderDuty(n.appendCheckpoints)
	n.AddLeaderDuty(n.advertiseLeadership)
	ok = true
	return n, nil
}

// checkConsistent refuses a store that is ahead of everything the Raft log
// and snapshots know: a store copied from another server or cluster.
func checkConsistent(store *fsm.Store, logs raft.LogStore, snaps raft.SnapshotStore) error {
	last, err := logs.LastIndex()
	if err != nil {
		return fmt.Errorf("read raft log: %w", err)
	}
	list, err := snaps.List()
	if err != nil {
		return fmt.Errorf("list raft snapshots: %w", err)
	}
	for _, s := range list {
		last = max(last, s.Index)
	}
	if applied := store.Applied(); applied > last {
		return fmt.Errorf("the store has applied entry %d but the Raft log ends at %d: the store is not this log's (copied from another server or cluster?)", applied, last)
	}
	return nil
}

func (n *Node) closeStores() {
	if n.logStore != nil {
		n.logStore.Close()
	}
}

// AddLeaderDuty registers fn to run whenever this server leads; when it
// leads already, fn starts at once.
func (n *Node) AddLeaderDuty(fn LeaderDuty) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.duties = append(n.duties, fn)
	if n.ready {
		n.startDuty(fn)
	}
}

// startDuty runs fn under the current leadership; n.mu is held and the
// node is ready.
func (n *Node) startDuty(fn LeaderDuty) {
	ctx, running := n.dutyCtx, n.dutyRunning
	if ctx.Err() != nil {
		return // leadership is being given up; its wait may have begun
	}
	running.Add(1)
	go func() {
		defer running.Done()
		fn(ctx)
	}()
}

// observe wakes waiters on leader changes, and advertises that this server
// has Raft state once it has seen a leader.
func (n *Node) observe(ctx context.Context) {
	defer n.wg.Done()
	for {
		select {
		case <-ctx.Done():
			return
		case o := <-n.observed:
			if d := o.Data.(raft.LeaderObservation); d.LeaderID != "" && !n.bootstrap.Swap(true) {
				n.setBootstrapped(ctx)
			}
			n.mu.Lock()
			n.wakeLocked()
			n.mu.Unlock()
		}
	}
}

// watchRemoval closes Removed when the store holds this node's tombstone.
// hashicorp/raft tells only the leader about a removal, but the tombstone
// is written before the server leaves the configuration, so the removed
// server always applies it.
func (n *Node) watchRemoval(ctx context.Context) {
	defer n.wg.Done()
	key := prefixRemoved + n.cfg.Identity.Name
	for ctx.Err() == nil {
		w, err := n.cfg.Store.Watch(key, n.cfg.Store.Applied())
		if kv, found, _, _ := n.cfg.Store.Get(key); found && string(kv.Value) == n.cfg.Identity.NodeID {
			n.logger.Warn("this server was removed from the cluster")
			close(n.removed)
			return
		}
		if err == nil {
			w.Next(ctx, 1)
		}
	}
}

func (n *Node) wakeLocked() {
	close(n.readyWake)
	n.readyWake = make(chan struct{})
}

// leadership starts the leader duties when this server becomes leader and
// stops them, waiting until they have returned, when it stops being one.
func (n *Node) leadership(ctx context.Context) {
	defer n.wg.Done()
	var cancel context.CancelFunc = func() {}
	var running sync.WaitGroup
	notReady := func() {
		n.mu.Lock()
		n.ready = false
		n.wakeLocked()
		n.mu.Unlock()
	}
	stopDuties := func() {
		// Not ready before the wait, so that readers stop counting on
		// this leader; again after it, in case lead became ready
		// meanwhile. No duty starts once ctx is cancelled (startDuty).
		notReady()
		cancel()
		running.Wait()
		notReady()
	}
	defer stopDuties()
	for {
		select {
		case <-ctx.Done():
			return
		case leader := <-n.raft.LeaderCh():
			stopDuties()
			if !leader {
				n.logger.Info("lost leadership")
				continue
			}
			dctx, dcancel := context.WithCancel(ctx)
			cancel = dcancel
			running.Add(1)
			go func() {
				defer running.Done()
				n.lead(dctx, &running)
			}()
		}
	}
}

// lead makes a new leader ready: it applies a marker entry of its own term
// (which, as raft.Barrier would, waits until every earlier entry is applied,
// and gives readers an index their store will reach), records the cluster
// ID on a new cluster, then starts the duties.
func (n *Node) lead(ctx context.Context, running *sync.WaitGroup) {
	start := time.Now()
	for {
		_, err := n.applyLocal(ctx, (&fsm.Txn{Ops: []fsm.Op{fsm.Put(keyLeader, []byte(n.cfg.Identity.Name), "", fsm.Cond{})}}).Marshal())
		if err == nil {
			break
		}
		n.mu.Lock()
		n.leaderErr = err
		n.mu.Unlock()
		if ctx.Err() != nil || n.raft.State() != raft.Leader {
			return
		}
		n.logger.Warn("leader marker not applied, retrying", "err", err)
	}
	if err := n.ensureClusterID(ctx); err != nil {
		n.logger.Warn("cannot record the cluster ID", "err", err)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	n.ready = true
	n.dutyCtx, n.dutyRunning = context.WithValue(ctx, fenceKey{}, n.raft.CurrentTerm()), running
	n.wakeLocked()
	n.logger.Info("leader ready", "term", n.raft.CurrentTerm(), "after", time.Since(start))
	for _, d := range n.duties {
		n.startDuty(d)
	}
}

// ensureClusterID writes a new random cluster ID if the store has none:
// the first leader of a new cluster does this once.
func (n *Node) ensureClusterID(ctx context.Context) error {
	if _, found, _, err := n.cfg.Store.Get(keyClusterID); err != nil || found {
		return err
	}
	id := newID()
	_, err := n.applyLocal(ctx, (&fsm.Txn{Ops: []fsm.Op{fsm.Put(keyClusterID, []byte(id), "", fsm.Cond{MustNotExist: true})}}).Marshal())
	var te *fsm.TxnError
	if errors.As(err, &te) && te.Code == fsm.CodeExists {
		return nil
	}
	return err
}

// ClusterID returns the cluster's ID once this server's store holds it.
func (n *Node) ClusterID() string { return StoredClusterID(n.cfg.Store) }

// StoredClusterID returns the cluster ID a store holds, or "".
func StoredClusterID(store *fsm.Store) string {
	kv, found, _, err := store.Get(keyClusterID)
	if err != nil || !found {
		return ""
	}
	return string(kv.Value)
}

// IsLeader reports whether this server is the leader and ready to serve.
func (n *Node) IsLeader() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ready && n.raft.State() == raft.Leader
}

// Removed is closed when this server is removed from the cluster.
func (n *Node) Removed() <-chan struct{} { return n.removed }

// hasOtherVoter reports whether leadership can go to another server.
func (n *Node) hasOtherVoter() bool {
	f := n.raft.GetConfiguration()
	if f.Error() != nil {
		return false
	}
	for _, s := range f.Configuration().Servers {
		if s.Suffrage == raft.Voter && s.ID != raft.ServerID(n.cfg.Identity.Name) {
			return true
		}
	}
	return false
}

// Shutdown stops the node. A leader first hands leadership to an
// up-to-date follower, so that clients see no election timeout. The server
// stays in the Raft configuration: a restarted server takes its place again.
func (n *Node) Shutdown(ctx context.Context) error {
	n.stopping.Store(true)
	if n.raft.State() == raft.Leader && n.hasOtherVoter() {
		n.transferMu.Lock()
		f := n.raft.LeadershipTransfer()
		done := make(chan error, 1)
		go func() { done <- f.Error() }()
		select {
		case err := <-done:
			if err != nil {
				n.logger.Warn("leadership transfer failed", "err", err)
			} else {
				n.logger.Info("leadership transferred")
			}
		case <-ctx.Done():
		}
		n.transferMu.Unlock()
	}
	n.stop()
	err := n.raft.Shutdown().Error()
	n.wg.Wait()
	n.transport.Close()
	n.closeStores()
	return err
}

// every calls fn every interval until ctx ends, the first time an
// interval from now.
func every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fn()
	}
}
