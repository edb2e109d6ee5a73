package raftstore

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"time"

	"github.com/hashicorp/raft"

	"github.com/pontoon-dev/pontoon/fsm"
)

func newID() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// withTimeout bounds ctx by the node's apply timeout: a request may allow
// a minute, but a write or read that has found no leader in ten seconds
// answers so.
func (n *Node) withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, n.cfg.ApplyTimeout)
}

// Apply commits txn through the leader and returns its revision (the Raft
// index of its entry). A refused transaction returns a *fsm.TxnError.
func (n *Node) Apply(ctx context.Context, txn *fsm.Txn) (uint64, error) {
	if err := txn.Validate(); err != nil {
		return 0, err
	}
	if err := n.checkSpace(txn); err != nil {
		return 0, err
	}
	start := time.Now()
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	rev, err := n.apply(ctx, txn)
	n.metrics.observeApply(start, err)
	return rev, err
}

func (n *Node) apply(ctx context.Context, txn *fsm.Txn) (uint64, error) {
	if _, fenced := fenceTerm(ctx); fenced {
		return n.applyFenced(ctx, txn)
	}
	for {
		if n.IsLeader() {
			rev, err := n.applyLeader(ctx, txn)
			if !errors.Is(err, raft.ErrNotLeader) {
				return rev, err
			}
			// Not appended: safe to send it to whoever leads now.
		}
		api, err := n.waitLeaderAPI(ctx)
		if err != nil {
			return 0, err
		}
		if api == "" {
			continue // this server became the leader meanwhile
		}
		rev, err := n.forward(ctx, api, txn)
		if errors.Is(err, errNotLeaderThere) {
			// The server we asked did nothing: it has stepped down, or
			// was elected and is not ready yet. Ask again shortly.
			if err := pause(ctx); err != nil {
				return 0, err
			}
			continue
		}
		return rev, err
	}
}

// applyLeader appends txn to the log on this (leader) server, in a group
// with the other writes of the moment.
func (n *Node) applyLeader(ctx context.Context, txn *fsm.Txn) (uint64, error) {
	res, err := n.submitter.submit(ctx, [][]byte{txn.Marshal()})
	if err != nil {
		return 0, err
	}
	return res[0].rev, res[0].err
}

// applyLocal appends an entry this (leader) server makes itself, past
// the submitter and the checks a client's write goes through, and waits
// for it within ctx.
func (n *Node) applyLocal(ctx context.Context, data []byte) (uint64, error) {
	return await(ctx, n.raft.Apply(data, time.Until(deadline(ctx))))
}

// await waits for an entry submitted with raft.Apply. raft.ApplyFuture has
// no context: it is waited for in the background so that a cancelled caller
// returns at once; the entry's fate is then unknown.
func await(ctx context.Context, f raft.ApplyFuture) (uint64, error) {
	done := make(chan applyResult, 1)
	go func() {
		rev, err := outcome(f)
		done <- applyResult{rev: rev, err: err}
	}()
	select {
	case res := <-done:
		return res.rev, res.err
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: %v", ErrUnknownOutcome, ctx.Err())
	}
}

// outcome waits for an entry submitted with raft.Apply and returns its
// revision or the error that refused it; raft.ErrNotLeader means it was
// never appended and may be sent again.
func outcome(f raft.ApplyFuture) (uint64, error) {
	switch err := f.Error(); {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout):
		return 0, raft.ErrNotLeader
	default:
		return 0, fmt.Errorf("%w: %v", ErrUnknownOutcome, err)
	}
	res := f.Response().(*fsm.Result)
	return res.Revision, res.Err
}

func deadline(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// leaderAPI returns the API address of the current leader, "" with a nil
// error when this server is the leader, or ErrNoLeader.
func (n *Node) leaderAPI() (string, error) {
	_, id := n.raft.LeaderWithID()
	switch {
	case id == "":
		return "", ErrNoLeader
	case id == raft.ServerID(n.cfg.Identity.Name):
		if n.IsLeader() {
			return "", nil
		}
		return "", ErrNoLeader // elected, not ready yet
	}
	m, ok := n.cfg.Members.Member(string(id))
	if !ok || m.APIAddr == "" {
		return "", fmt.Errorf("%w: leader %s is not in the gossip pool", ErrNoLeader, id)
	}
	return m.APIAddr, nil
}

// waitLeaderAPI waits, within ctx, until a ready leader is known.
func (n *Node) waitLeaderAPI(ctx context.Context) (string, error) {
	for {
		n.mu.Lock()
		wake := n.readyWake
		n.mu.Unlock()
		api, err := n.leaderAPI()
		if err == nil {
			return api, nil
		}
		if n.stopping.Load() {
			return "", fmt.Errorf("%w: server is shutting down", ErrNoLeader)
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w: %v", err, ctx.Err())
		case <-wake:
		case <-n.cfg.Members.Changed():
		case <-time.After(50 * time.Millisecond):
			// A leader elsewhere that becomes ready raises no event here.
		}
	}
}

// pause waits a moment before asking the leader again.
func pause(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrNoLeader, ctx.Err())
	case <-time.After(20 * time.Millisecond):
		return nil
	}
}

// ReadIndex returns once this server's store has applied everything that
// was committed when ReadIndex was called: a read from the store afterwards
// is linearizable.
func (n *Node) ReadIndex(ctx context.Context) error {
	if err := n.checkFence(ctx); err != nil {
		return err
	}
	start := time.Now()
	ctx, cancel := n.withTimeout(ctx)
	defer cancel()
	index, err := n.readIndex(ctx)
	if err == nil {
		err = n.cfg.Store.WaitApplied(ctx, index)
	}
	n.metrics.observeRead(start, err)
	return err
}

func (n *Node) readIndex(ctx context.Context) (uint64, error) {
	for {
		if n.IsLeader() {
			index, err := n.leaderReadIndex(ctx)
			if !errors.Is(err, raft.ErrNotLeader) {
				return index, err
			}
		}
		api, err := n.waitLeaderAPI(ctx)
		if err != nil {
			return 0, err
		}
		if api == "" {
			continue
		}
		index, err := n.forwardReadIndex(ctx, api)
		if errors.Is(err, errNotLeaderThere) {
			if err := pause(ctx); err != nil {
				return 0, err
			}
			continue
		}
		return index, err
	}
}

// leaderReadIndex is the leader's half of ReadIndex: the commit index, once
// a heartbeat round has confirmed that no other leader can have committed
// anything newer.
func (n *Node) leaderReadIndex(ctx context.Context) (uint64, error) {
	index := n.raft.CommitIndex()
	f := n.raft.VerifyLeader()
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return 0, raft.ErrNotLeader
		}
		return index, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("%w: leadership not confirmed: %v", ErrNoLeader, ctx.Err())
	}
}

// The internal endpoints, on every server's API address.
const (
	pathApply     = "/pontoon/internal/apply"
	pathReadIndex = "/pontoon/internal/readindex"
	pathStatus    = "/pontoon/internal/status"
)

// errNotLeaderThere is the forwarding target's answer that it is not the
// leader and did nothing.
var errNotLeaderThere = errors.New("target is not the leader")

func newHTTPClient(localIP string) *http.Client {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if ip := net.ParseIP(localIP); ip != nil && !ip.IsUnspecified() {
		dialer.LocalAddr = &net.TCPAddr{IP: ip}
	}
	return &http.Client{Transport: &http.Transport{
		DialContext:         dialer.DialContext,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
	}}
}

// post sends an internal request to the leader at api. The request is
// abandoned, with errDeposed, as soon as this server learns that another
// server leads: a leader that was paused or cut off may never answer, and
// waiting for it until the deadline held up every write through this
// server long after the new leader could take them. Closing the response
// body releases the request.
func (n *Node) post(ctx context.Context, api, path string, body []byte) (*http.Response, error) {
	ctx, cancel := n.untilDeposed(ctx, api)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+api+path, bytes.NewReader(body))
	if err != nil {
		cancel(nil)
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(InternalAuthHeader, hex.EncodeToString(n.cfg.InternalKey))
	if d, ok := ctx.Deadline(); ok {
		req.Header.Set("Pontoon-Timeout", strconv.FormatInt(time.Until(d).Milliseconds(), 10))
	}
	resp, err := n.client.Do(req)
	if err != nil {
		if cause := context.Cause(ctx); errors.Is(cause, errDeposed) {
			err = cause
		}
		cancel(nil)
		return nil, err
	}
	resp.Body = releasingBody{resp.Body, cancel}
	return resp, nil
}

// errDeposed: the server a request was sent to no longer leads.
var errDeposed = errors.New("another server became the leader before this one answered")

// untilDeposed returns ctx, cancelled with errDeposed once a leader other
// than the one at api (this server included) has been known for a
// heartbeat timeout: a former leader that is alive, as after a leadership
// transfer, answers within that time. cancel releases it.
func (n *Node) untilDeposed(ctx context.Context, api string) (context.Context, context.CancelCauseFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go n.abandonIfDeposed(ctx, cancel, api)
	return ctx, cancel
}

// abandonIfDeposed is untilDeposed's watch; it returns when ctx is done.
func (n *Node) abandonIfDeposed(ctx context.Context, cancel context.CancelCauseFunc, api string) {
	for {
		n.mu.Lock()
		wake := n.readyWake
		n.mu.Unlock()
		if cur, err := n.leaderAPI(); err == nil && cur != api {
			grace := time.NewTimer(n.cfg.HeartbeatTimeout)
			defer grace.Stop()
			select {
			case <-grace.C:
				cancel(errDeposed)
			case <-ctx.Done():
			}
			return
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return
		}
	}
}

// releasingBody cancels its request's context when closed.
type releasingBody struct {
	io.ReadCloser
	cancel context.CancelCauseFunc
}

func (b releasingBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

func (n *Node) forwardReadIndex(ctx context.Context, api string) (uint64, error) {
	resp, err := n.post(ctx, api, pathReadIndex, nil)
	if errors.Is(err, errDeposed) {
		return 0, errNotLeaderThere // a read index can be asked again of the new leader
	}
	if err != nil {
		return 0, fmt.Errorf("%w: asking the leader at %s: %v", ErrNoLeader, api, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusMisdirectedRequest:
		return 0, errNotLeaderThere
	case resp.StatusCode != http.StatusOK || len(body) != 8:
		return 0, fmt.Errorf("%w: leader at %s answered %s: %s", ErrNoLeader, api, resp.Status, bytes.TrimSpace(body))
	}
	return binary.BigEndian.Uint64(body), nil
}

// Handler serves the internal endpoints other servers forward to.
func (n *Node) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+pathApply, n.fromServer(n.serveApply))
	mux.HandleFunc("POST "+pathReadIndex, n.fromServer(n.serveReadIndex))
	mux.HandleFunc("GET "+pathStatus, n.serveStatus)
	return mux
}

// InternalAuthHeader carries the cluster's internal key, hex, on a forwarded
// request.
const InternalAuthHeader = "Pontoon-Internal-Key"

// fromServer lets through only the requests of the cluster's servers:
// those that carry its internal key (Config.InternalKey), which is
// derived from the join token. Anyone else would otherwise write raw
// entries into the log.
func (n *Node) fromServer(h http.HandlerFunc) http.HandlerFunc {
	want := []byte(hex.EncodeToString(n.cfg.InternalKey))
	return func(w http.ResponseWriter, r *http.Request) {
		if len(n.cfg.InternalKey) == 0 || subtle.ConstantTimeCompare([]byte(r.Header.Get(InternalAuthHeader)), want) != 1 {
			http.Error(w, "internal endpoint: only the cluster's servers may call it", http.StatusForbidden)
			return
		}
		h(w, r)
	}
}

// requestContext bounds a forwarded request by the sender's remaining time.
func requestContext(r *http.Request) (context.Context, context.CancelFunc) {
	if ms, err := strconv.ParseInt(r.Header.Get("Pontoon-Timeout"), 10, 64); err == nil && ms > 0 {
		return context.WithTimeout(r.Context(), time.Duration(ms)*time.Millisecond)
	}
	return context.WithTimeout(r.Context(), 10*time.Second)
}

func (n *Node) serveReadIndex(w http.ResponseWriter, r *http.Request) {
	if !n.IsLeader() {
		http.Error(w, "not the leader", http.StatusMisdirectedRequest)
		return
	}
	ctx, cancel := requestContext(r)
	defer cancel()
	index, err := n.leaderReadIndex(ctx)
	switch {
	case errors.Is(err, raft.ErrNotLeader):
		http.Error(w, "not the leader", http.StatusMisdirectedRequest)
	case err != nil:
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
	default:
		w.Write(binary.BigEndian.AppendUint64(nil, index))
	}
}

// Status is a server's view of its own Raft state.
type Status struct {
	Name         string `json:"name"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	LastIndex    uint64 `json:"last_index"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	Leader       string `json:"leader"`
	ClusterID    string `json:"cluster_id"`
	// SpaceLow says writes are refused for lack of space in this
	// server's data dir, which has FreeBytes free.
	SpaceLow  bool   `json:"space_low,omitempty"`
	FreeBytes uint64 `json:"free_bytes"`
	// SinceContact is how long ago this server last heard from the
	// leader: zero on the leader, -1 before it ever heard from one. A
	// duration rather than a time, so no two servers' clocks are compared.
	SinceContact time.Duration `json:"since_contact"`
}

// Status returns this server's Raft state.
func (n *Node) Status() Status {
	_, leader := n.raft.LeaderWithID()
	return Status{
		Name:         n.cfg.Identity.Name,
		State:        n.raft.State().String(),
		Term:         n.raft.CurrentTerm(),
		LastIndex:    n.raft.LastIndex(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.cfg.Store.Applied(),
		Leader:       string(leader),
		ClusterID:    n.ClusterID(),
		SinceContact: n.sinceContact(),
		SpaceLow:     n.space.low.Load(),
		FreeBytes:    n.space.free.Load(),
	}
}

func (n *Node) sinceContact() time.Duration {
	switch last := n.raft.LastContact(); {
	case n.raft.State() == raft.Leader:
		return 0
	case last.IsZero():
		return -1
	default:
		return time.Since(last)
	}
}

// statusOf asks the server at api for its Status.
func (n *Node) statusOf(ctx context.Context, api string) (Status, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+api+pathStatus, nil)
	if err != nil {
		return Status{}, err
	}
	resp, err := n.client.Do(req)
	if err != nil {
		return Status{}, err
	}
	defer resp.Body.Close()
	var st Status
	if resp.StatusCode != http.StatusOK {
		return st, fmt.Errorf("%s answered %s", api, resp.Status)
	}
	return st, json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st)
}

func (n *Node) serveStatus(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(n.Status())
}

// Ready reports whether this server can serve: a leader is known and the
// store has applied what the leader has committed, give or take
// Config.ReadyMaxLag entries. A follower asks the leader: its own commit
// index only covers what it has received, and one that was paused or cut
// off receives its backlog a batch at a time.
func (n *Node) Ready(ctx context.Context) error {
	if err := n.space.status(); err != nil {
		return err
	}
	api, err := n.leaderAPI()
	if err != nil {
		return err
	}
	commit := n.raft.CommitIndex()
	if api != "" {
		ctx, cancel := context.WithTimeout(ctx, readyTimeout)
		defer cancel()
		st, err := n.statusOf(ctx, api)
		if err != nil {
			return fmt.Errorf("cannot reach the leader: %w", err)
		}
		commit = st.CommitIndex
	}
	if applied := n.cfg.Store.Applied(); applied+n.cfg.ReadyMaxLag < commit {
		return fmt.Errorf("catching up: applied %d of the %d entries the leader has committed", applied, commit)
	}
	return nil
}

// readyTimeout bounds Ready's question to the leader: a load balancer's
// check must not hang on a leader that does not answer.
const readyTimeout = time.Second

// LeaderOnly serves h on the leader and proxies the request to the leader
// from any other server, so operator commands work against any server.
// fail writes the error when no leader can be reached, or when the leader
// does not answer (then the outcome is unknown); a request to a leader
// that another replaced is abandoned, as post does.
func (n *Node) LeaderOnly(h http.Handler, fail func(http.ResponseWriter, error)) http.Handler {
	proxy := &httputil.ReverseProxy{
		Rewrite:   func(r *httputil.ProxyRequest) { r.Out.Header.Set(headerForwarded, n.cfg.Identity.Name) },
		Transport: n.client.Transport,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if cause := context.Cause(r.Context()); errors.Is(cause, errDeposed) {
				err = cause
			}
			fail(w, fmt.Errorf("%w: the leader at %s did not answer: %v", ErrUnknownOutcome, r.URL.Host, err))
		},
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.IsLeader() {
			h.ServeHTTP(w, r)
			return
		}
		if r.Header.Get(headerForwarded) != "" {
			fail(w, fmt.Errorf("%w: leadership moved while the request was forwarded", ErrNoLeader))
			return
		}
		ctx, cancel := n.withTimeout(r.Context())
		defer cancel()
		api, err := n.waitLeaderAPI(ctx)
		if err != nil {
			fail(w, err)
			return
		}
		if api == "" {
			h.ServeHTTP(w, r)
			return
		}
		pctx, abandon := n.untilDeposed(r.Context(), api)
		defer abandon(nil)
		r = r.Clone(pctx)
		r.URL.Scheme, r.URL.Host = "http", api
		proxy.ServeHTTP(w, r)
	})
}

// headerForwarded marks a request proxied to the leader, so it is never
// proxied twice.
const headerForwarded = "Pontoon-Forwarded-By"
