package api

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"github.com/pontoon-dev/pontoon/fsm"
)

// The raw key space: /pontoon/v1/kv/{key} reads and writes opaque values
// under the store prefix /kv/, apart from everything the Kubernetes API
// stores. Benchmarks and the chaos tests use it to exercise the replicated
// store alone, as etcd's own benchmarks use its KV API.
const kvPrefix = "/kv/"

// KV is a key as the raw key space returns it.
type KV struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
	// Revision is the key's modification revision.
	Revision uint64 `json:"revision"`
}

// KVList is a page of keys.
type KVList struct {
	Items []KV `json:"items"`
	// Revision is the revision the page was read at.
	Revision uint64 `json:"revision"`
	// Continue, when set, fetches the next page at the same revision.
	Continue string `json:"continue,omitempty"`
}

// KVWrite is the answer to a write.
type KVWrite struct {
	Revision uint64 `json:"revision"`
}

func (s *Server) routeKV() {
	s.mux.HandleFunc("GET /pontoon/v1/kv/{key...}", s.getKV)
	s.mux.HandleFunc("PUT /pontoon/v1/kv/{key...}", s.putKV)
	s.mux.HandleFunc("DELETE /pontoon/v1/kv/{key...}", s.deleteKV)
	s.mux.HandleFunc("GET /pontoon/v1/kv", s.listKV)
}

// cond reads the write preconditions: ?create=true (must not exist),
// ?update=true (must exist), ?revision=N (modification revision equals).
func cond(r *http.Request) (fsm.Cond, error) {
	rev, err := queryUint(r, "revision")
	q := r.URL.Query()
	return fsm.Cond{MustNotExist: q.Get("create") == "true", MustExist: q.Get("update") == "true", ModRevision: rev}, err
}

// linearize runs the read barrier unless the client asked for local state
// (?consistency=local, like resourceVersion=0 in Kubernetes).
func (s *Server) linearize(r *http.Request) error {
	if r.URL.Query().Get("consistency") == "local" {
		return nil
	}
	return s.cfg.Node.ReadIndex(r.Context())
}

func (s *Server) getKV(w http.ResponseWriter, r *http.Request) {
	if err := s.linearize(r); err != nil {
		writeError(w, err)
		return
	}
	key := r.PathValue("key")
	kv, found, _, err := s.cfg.Store.Get(kvPrefix + key)
	switch {
	case err != nil:
		writeError(w, err)
	case !found:
		writeError(w, apierrors.NewNotFound(pontoonResource, key))
	default:
		writeJSON(w, http.StatusOK, KV{Key: key, Value: kv.Value, Revision: kv.ModRevision})
	}
}

func (s *Server) putKV(w http.ResponseWriter, r *http.Request) {
	c, err := cond(r)
	if err != nil {
		writeError(w, err)
		return
	}
	value, err := io.ReadAll(io.LimitReader(r.Body, fsm.MaxValueSize+1))
	if err != nil {
		if !errors.Is(err, os.ErrDeadlineExceeded) { // a body slower than the request timeout
			err = apierrors.NewBadRequest(err.Error())
		}
		writeError(w, err)
		return
	}
	s.write(w, r, fsm.Put(kvPrefix+r.PathValue("key"), value, "", c))
}

func (s *Server) deleteKV(w http.ResponseWriter, r *http.Request) {
	c, err := cond(r)
	if err != nil {
		writeError(w, err)
		return
	}
	s.write(w, r, fsm.Delete(kvPrefix+r.PathValue("key"), c))
}

func (s *Server) write(w http.ResponseWriter, r *http.Request, op fsm.Op) {
	rev, err := s.cfg.Node.Apply(r.Context(), &fsm.Txn{Ops: []fsm.Op{op}})
	var te *fsm.TxnError
	if errors.As(err, &te) {
		te.Key = strings.TrimPrefix(te.Key, kvPrefix)
	}
	if err != nil {
		writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, KVWrite{Revision: rev})
}

// continueToken is the opaque continue value of a page: the revision and
// the last key, as Kubernetes' tokens are.
type continueToken struct {
	Revision uint64 `json:"rv"`
	After    string `json:"start"`
}

func (s *Server) listKV(w http.ResponseWriter, r *http.Request) {
	limit, err := queryUint(r, "limit")
	if err != nil {
		writeError(w, err)
		return
	}
	opts := fsm.ListOptions{Prefix: kvPrefix + r.URL.Query().Get("prefix"), Limit: int(limit)}
	if c := r.URL.Query().Get("continue"); c != "" {
		var tok continueToken
		b, err := base64.RawURLEncoding.DecodeString(c)
		if err == nil {
			err = json.Unmarshal(b, &tok)
		}
		if err != nil || !strings.HasPrefix(tok.After, opts.Prefix) {
			writeError(w, apierrors.NewBadRequest("invalid continue token"))
			return
		}
		// A token from a server that is ahead of this one is good once
		// this one has caught up; a revision nothing has committed came
		// from no token of ours.
		if tok.Revision > s.cfg.Store.Applied() {
			if err := s.cfg.Node.ReadIndex(r.Context()); err != nil {
				writeError(w, err)
				return
			}
		}
		if applied := s.cfg.Store.Applied(); tok.Revision > applied {
			writeError(w, apierrors.NewBadRequest(fmt.Sprintf("invalid continue token: revision %d is ahead of everything committed (%d)", tok.Revision, applied)))
			return
		}
		opts.Revision, opts.After = tok.Revision, tok.After
	} else if err := s.linearize(r); err != nil {
		writeError(w, err)
		return
	}
	res, err := s.cfg.Store.List(r.Context(), opts)
	if err != nil {
		writeError(w, err)
		return
	}
	out := KVList{Revision: res.Revision, Items: make([]KV, 0, len(res.KVs))}
	for _, kv := range res.KVs {
		out.Items = append(out.Items, KV{Key: strings.TrimPrefix(kv.Key, kvPrefix), Value: kv.Value, Revision: kv.ModRevision})
	}
	if res.More {
		b, _ := json.Marshal(continueToken{Revision: res.Revision, After: res.KVs[len(res.KVs)-1].Key})
		out.Continue = base64.RawURLEncoding.EncodeToString(b)
	}
	writeJSON(w, http.StatusOK, out)
}
