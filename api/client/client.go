// Package client calls a Pontoon server's operator endpoints and raw key
// space over HTTP. The pontoon CLI, the end-to-end tests and the benchmarks
// use it; Kubernetes resources are for client-go.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/pontoon-dev/pontoon/api"
	"github.com/pontoon-dev/pontoon/fsm"
	"github.com/pontoon-dev/pontoon/raftstore"
)

// Client talks to one server.
type Client struct {
	base string
	http *http.Client
}

// New returns a client of the server at base (http://host:port). hc may be
// nil for http.DefaultClient.
func New(base string, hc *http.Client) *Client {
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Client{base: strings.TrimRight(base, "/"), http: hc}
}

// StatusError is a Status the server answered with.
type StatusError struct {
	Status metav1.Status
}

func (e *StatusError) Error() string {
	if e.Status.Message != "" {
		return e.Status.Message
	}
	return fmt.Sprintf("server answered %d %s", e.Status.Code, e.Status.Reason)
}

// Reason returns the Status reason of err, or "" when err is not a Status.
func Reason(err error) metav1.StatusReason {
	if se, ok := err.(*StatusError); ok {
		return se.Status.Reason
	}
	return ""
}

func (c *Client) do(ctx context.Context, method, path string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return err
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var st metav1.Status
		if json.Unmarshal(b, &st) != nil || st.Kind != "Status" {
			st = metav1.Status{Code: int32(resp.StatusCode), Message: fmt.Sprintf("%s: %s", resp.Status, bytes.TrimSpace(b))}
		}
		return &StatusError{Status: st}
	}
	if w, ok := out.(io.Writer); ok {
		_, err = io.Copy(w, resp.Body)
		return err
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// Peers lists the Raft configuration.
func (c *Client) Peers(ctx context.Context) ([]raftstore.Peer, error) {
	var out []raftstore.Peer
	return out, c.do(ctx, http.MethodGet, "/pontoon/v1/raft/peers", nil, &out)
}

// RemovePeer removes a server from the Raft configuration.
func (c *Client) RemovePeer(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodDelete, "/pontoon/v1/raft/peers/"+url.PathEscape(name), nil, nil)
}

// Members lists the gossip pool.
func (c *Client) Members(ctx context.Context) ([]api.Member, error) {
	var out []api.Member
	return out, c.do(ctx, http.MethodGet, "/pontoon/v1/members", nil, &out)
}

// Status returns the server's Raft status.
func (c *Client) Status(ctx context.Context) (raftstore.Status, error) {
	var out raftstore.Status
	return out, c.do(ctx, http.MethodGet, "/pontoon/internal/status", nil, &out)
}

// Digest returns the server's applied index and state hash.
func (c *Client) Digest(ctx context.Context) (api.Digest, error) {
	var out api.Digest
	return out, c.do(ctx, http.MethodGet, "/pontoon/v1/digest", nil, &out)
}

// SaveSnapshot writes a consistent snapshot to w.
func (c *Client) SaveSnapshot(ctx context.Context, w io.Writer) error {
	return c.do(ctx, http.MethodGet, "/pontoon/v1/snapshot", nil, w)
}

// RestoreSnapshot restores the cluster to the snapshot read from r.
func (c *Client) RestoreSnapshot(ctx context.Context, r io.Reader) (fsm.SnapshotInfo, error) {
	var out fsm.SnapshotInfo
	return out, c.do(ctx, http.MethodPost, "/pontoon/v1/snapshot", r, &out)
}

// Cond is a raw write's precondition.
type Cond struct {
	Create   bool   // the key must not exist
	Update   bool   // the key must exist
	Revision uint64 // the key's revision must equal this
}

func (cd Cond) query() string {
	q := url.Values{}
	if cd.Create {
		q.Set("create", "true")
	}
	if cd.Update {
		q.Set("update", "true")
	}
	if cd.Revision != 0 {
		q.Set("revision", strconv.FormatUint(cd.Revision, 10))
	}
	if len(q) == 0 {
		return ""
	}
	return "?" + q.Encode()
}

func kvPath(key string) string { return "/pontoon/v1/kv/" + strings.TrimPrefix(key, "/") }

// Put writes value at key and returns the write's revision.
func (c *Client) Put(ctx context.Context, key string, value []byte, cond Cond) (uint64, error) {
	var out api.KVWrite
	return out.Revision, c.do(ctx, http.MethodPut, kvPath(key)+cond.query(), bytes.NewReader(value), &out)
}

// Delete removes key and returns the write's revision.
func (c *Client) Delete(ctx context.Context, key string, cond Cond) (uint64, error) {
	var out api.KVWrite
	return out.Revision, c.do(ctx, http.MethodDelete, kvPath(key)+cond.query(), nil, &out)
}

// Get reads key linearizably, or from local state with local set.
func (c *Client) Get(ctx context.Context, key string, local bool) (api.KV, error) {
	var out api.KV
	q := ""
	if local {
		q = "?consistency=local"
	}
	return out, c.do(ctx, http.MethodGet, kvPath(key)+q, nil, &out)
}

// List reads a page of keys under prefix; pass the previous page's Continue
// for the next one.
func (c *Client) List(ctx context.Context, prefix string, limit int, cont string, local bool) (api.KVList, error) {
	q := url.Values{"prefix": {prefix}}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	if cont != "" {
		q.Set("continue", cont)
	}
	if local {
		q.Set("consistency", "local")
	}
	var out api.KVList
	return out, c.do(ctx, http.MethodGet, "/pontoon/v1/kv?"+q.Encode(), nil, &out)
}
