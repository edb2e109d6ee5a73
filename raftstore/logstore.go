package raftstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	walmetrics "github.com/hashicorp/raft-wal/metrics"
	"github.com/hashicorp/raft-wal/verifier"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/bbolt"

	"github.com/pontoon-dev/pontoon/fsm"
)

// LogStoreKind names how a data dir keeps its Raft log and stable store.
type LogStoreKind string

// The log stores. A new data dir gets LogStoreWAL: segment files with one
// write and one fsync per append, where raft-boltdb's bbolt commit costs
// two fsyncs (docs/store.md measures the difference). A data dir keeps
// the store it was made with; moving a server to the other one means
// removing it and letting it rejoin with an empty data dir.
const (
	LogStoreWAL    LogStoreKind = "wal"
	LogStoreBoltDB LogStoreKind = "boltdb"
)

// ParseLogStoreKind checks a --raft-log-store value; "" leaves the choice
// to the data dir (LogStoreWAL when it is new).
func ParseLogStoreKind(s string) (LogStoreKind, error) {
	switch k := LogStoreKind(s); k {
	case "", LogStoreWAL, LogStoreBoltDB:
		return k, nil
	}
	return "", fmt.Errorf("--raft-log-store %q: want %s or %s", s, LogStoreWAL, LogStoreBoltDB)
}

// Where each store lives under the data dir's raft/ directory.
const (
	boltLogFile = "raft.db"
	walLogDir   = "wal"
)

// DetectLogStore returns the log store a data dir's raft/ directory holds,
// or "" when it holds none yet.
func DetectLogStore(raftDir string) (LogStoreKind, error) {
	bolt := fileExists(filepath.Join(raftDir, boltLogFile))
	wal := fileExists(filepath.Join(raftDir, walLogDir))
	switch {
	case bolt && wal:
		return "", fmt.Errorf("%s holds both a raft-boltdb log (%s) and a raft-wal log (%s/): remove the one this server did not write", raftDir, boltLogFile, walLogDir)
	case bolt:
		return LogStoreBoltDB, nil
	case wal:
		return LogStoreWAL, nil
	}
	return "", nil
}

func fileExists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// logStore is a data dir's Raft log and stable store. The log is read and
// written through raft-wal's verifier, as Consul runs it: the leader
// appends a checkpoint now and then, and every server checks that what it
// stored since the last one is what the leader wrote.
type logStore struct {
	// segmentSize is the space each new segment takes at once (raft-wal
	// preallocates it); zero for raft-boltdb.
	segmentSize uint64
	log         *verifier.LogStore // closes the store under it
	stable      raft.StableStore
	// checker reads raft-wal's segments back; nil for raft-boltdb.
	checker *logChecker
	// verifications counts the verifier's reports by result.
	verifications *prometheus.CounterVec
	logger        *slog.Logger
}

// openLogStore opens the log store in raftDir. want is the --raft-log-store
// value: "" takes what the data dir holds (LogStoreWAL when new); anything
// else must agree with it. segmentSize is raft-wal's, 0 for its default.
func openLogStore(raftDir string, want LogStoreKind, segmentSize int, logger *slog.Logger) (*logStore, error) {
	have, err := DetectLogStore(raftDir)
	if err != nil {
		return nil, err
	}
	kind := have
	switch {
	case have == "" && want == "":
		kind = LogStoreWAL
	case have == "":
		kind = want
	case want != "" && want != have:
		return nil, fmt.Errorf("the Raft log in %s is kept in %s, not --raft-log-store %s; a data dir keeps the store it was made with: to move this server, remove it (pontoon operator raft remove-peer), start it with an empty data dir and let it rejoin (docs/store.md)", raftDir, have, want)
	}
	s := &logStore{logger: logger.With("component", "raft-log"),
		verifications: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "pontoon_raft_log_verifications_total",
			Help: "Ranges of the Raft log checked against the leader's checksum, by result: ok, mismatch (what was stored is not what the leader wrote), unverifiable (the range is no longer held) or error; damaged counts raft-wal segments whose entries' checksums failed when read back.",
		}, []string{"result"}),
	}
	var store interface {
		raft.LogStore
		raft.StableStore
	}
	switch kind {
	case LogStoreWAL:
		dir := filepath.Join(raftDir, walLogDir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create %s: %w", dir, err)
		}
		if segmentSize <= 0 {
			segmentSize = wal.DefaultSegmentSize
		}
		w, err := wal.Open(dir, wal.WithLogger(newHCLog(logger, "raft-wal")), wal.WithSegmentSize(segmentSize))
		if err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", dir, err)
		}
		checked := CheckedLog{w}
		s.checker = &logChecker{w: checked, raftDir: raftDir, walDir: dir}
		if err := s.checker.check(true); err != nil {
			w.Close()
			return nil, err
		}
		store, s.segmentSize = checked, uint64(segmentSize)
	case LogStoreBoltDB:
		path := filepath.Join(raftDir, boltLogFile)
		b, err := raftboltdb.New(raftboltdb.Options{
			Path: path,
			BoltOptions: &bbolt.Options{
				Timeout: time.Second,
				// Vault's lesson: syncing the freelist makes every commit
				// of a large log store slow; the map freelist is rebuilt
				// quickly at open instead.
				NoFreelistSync: true,
				FreelistType:   bbolt.FreelistMapType,
			},
		})
		if err != nil {
			return nil, fmt.Errorf("open raft log %s: %w", path, err)
		}
		store = b
	}
	s.stable = store
	s.log = verifier.NewLogStore(store, isCheckpoint, s.report, &walmetrics.NoOpCollector{})
	return s, nil
}

// checkpoint is the entry the leader appends for the verifier: an empty
// transaction, which the store applies as nothing.
var checkpoint = (&fsm.Txn{}).Marshal()

func isCheckpoint(l *raft.Log) (bool, error) {
	return l.Type == raft.LogCommand && bytes.Equal(l.Data, checkpoint), nil
}

func (s *logStore) report(r verifier.VerificationReport) {
	var mismatch verifier.ErrChecksumMismatch
	switch {
	case r.Err == nil:
		s.verifications.WithLabelValues("ok").Inc()
		s.logger.Info("raft log verified", "range", r.Range.String(), "took", r.Elapsed)
	case errors.As(r.Err, &mismatch):
		s.verifications.WithLabelValues("mismatch").Inc()
		s.logger.Error("raft log verification failed: what this server stored is not what the leader wrote",
			"range", r.Range.String(), "err", r.Err)
	case errors.Is(r.Err, verifier.ErrRangeMismatch):
		s.verifications.WithLabelValues("unverifiable").Inc()
		s.logger.Warn("raft log range not verifiable: this server does not hold all of it", "range", r.Range.String(), "err", r.Err)
	default:
		s.verifications.WithLabelValues("error").Inc()
		s.logger.Warn("raft log verification could not be made", "range", r.Range.String(), "err", r.Err)
	}
}

func (s *logStore) Close() error {
	return s.log.Close()
}

// appendCheckpoints is a leader duty: a checkpoint entry every interval,
// which every server's verifier checks its log against.
func (n *Node) appendCheckpoints(ctx context.Context) {
	if n.cfg.LogVerifyInterval <= 0 {
		return
	}
	every(ctx, n.cfg.LogVerifyInterval, func() {
		actx, cancel := n.withTimeout(ctx)
		defer cancel()
		if _, err := n.applyLocal(actx, checkpoint); err != nil && ctx.Err() == nil {
			n.logger.Warn("appending a log verification checkpoint", "err", err)
		}
	})
}
