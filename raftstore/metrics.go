package raftstore

import (
	"errors"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/pontoon-dev/pontoon/fsm"
)

// metrics are the node's Prometheus metrics. Raft's gauges are read when
// scraped; latencies are observed as requests finish.
type metrics struct {
	apply *prometheus.HistogramVec
	read  *prometheus.HistogramVec
}

func newMetrics(n *Node, reg prometheus.Registerer) *metrics {
	buckets := prometheus.ExponentialBuckets(0.0005, 2, 16)
	m := &metrics{
		apply: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pontoon_raft_apply_duration_seconds",
			Help:    "Time from a transaction's submission to its commit and apply, by result.",
			Buckets: buckets,
		}, []string{"result"}),
		read: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "pontoon_raft_read_index_duration_seconds",
			Help:    "Time a linearizable read waits for the read index and the local apply, by result.",
			Buckets: buckets,
		}, []string{"result"}),
	}
	if reg == nil {
		return m
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, f)
	}
	reg.MustRegister(m.apply, m.read, n.logStore.verifications,
		gauge("pontoon_raft_is_leader", "1 when this server is the ready Raft leader.", func() float64 { return boolFloat(n.IsLeader()) }),
		gauge("pontoon_raft_state", "Raft state: 0 follower, 1 candidate, 2 leader, 3 shutdown.", func() float64 { return float64(n.raft.State()) }),
		gauge("pontoon_raft_term", "Current Raft term.", func() float64 { return float64(n.raft.CurrentTerm()) }),
		gauge("pontoon_raft_last_index", "Index of the last entry in the local Raft log.", func() float64 { return float64(n.raft.LastIndex()) }),
		gauge("pontoon_raft_commit_index", "Commit index known to this server.", func() float64 { return float64(n.raft.CommitIndex()) }),
		gauge("pontoon_raft_snapshot_threshold", "Log entries after which Raft takes a snapshot: twice as many as the store holds objects, at least --raft-snapshot-threshold.",
			func() float64 { return float64(n.raft.ReloadableConfig().SnapshotThreshold) }),
		gauge("pontoon_raft_last_snapshot_index", "Index of the last entry in the newest Raft snapshot; 0 before the first.", func() float64 { return float64(n.lastSnapshotIndex()) }),
		gauge("pontoon_data_dir_free_bytes", "Free space in the data dir's file system.", func() float64 { return float64(n.space.free.Load()) }),
		gauge("pontoon_data_dir_space_low", "1 while writes are refused because the data dir is low on space.", func() float64 { return boolFloat(n.space.low.Load()) }),
		gauge("pontoon_fsm_applied_index", "Index of the last entry applied to the store.", func() float64 { return float64(n.cfg.Store.Applied()) }),
		gauge("pontoon_fsm_keys", "Number of keys in the store.", func() float64 { return float64(n.cfg.Store.Stats().Keys) }),
		gauge("pontoon_fsm_file_bytes", "Size of the store's bbolt file.", func() float64 { return float64(n.cfg.Store.Stats().FileSize) }),
		gauge("pontoon_fsm_last_batch_apply_seconds", "Time the last batch of entries took to apply.", func() float64 { return n.cfg.Store.Stats().LastApply.Seconds() }),
		gauge("pontoon_watch_history_events", "Events held in the watch history.", func() float64 { return float64(n.cfg.Store.Stats().WatchHistory.Events) }),
		gauge("pontoon_watch_history_compacted_revision", "Newest revision whose events are no longer in the watch history.", func() float64 {
			return float64(n.cfg.Store.Stats().WatchHistory.Compacted)
		}),
	)
	return m
}

func boolFloat(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func result(err error) string {
	var te *fsm.TxnError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &te):
		return "refused"
	case errors.Is(err, ErrNoLeader), errors.Is(err, raft.ErrNotLeader):
		return "no_leader"
	default:
		return "error"
	}
}

func (m *metrics) observeApply(start time.Time, err error) {
	m.apply.WithLabelValues(result(err)).Observe(time.Since(start).Seconds())
}

func (m *metrics) observeRead(start time.Time, err error) {
	m.read.WithLabelValues(result(err)).Observe(time.Since(start).Seconds())
}
