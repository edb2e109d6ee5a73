package fsm

import (
	"bytes"
	"context"
	"fmt"
	"sort"
)

// ListOptions select a page of keys.
type ListOptions struct {
	// Prefix limits the listing to keys that start with it.
	Prefix string
	// After starts the page after this key (a continue token's key).
	After string
	// Limit is the most keys returned; zero means all.
	Limit int
	// Revision lists the state as of this revision; zero means the latest.
	// Revisions older than the watch history give ErrCompacted.
	Revision uint64
}

// ListResult is one page of a listing.
type ListResult struct {
	KVs []KV
	// Revision is the revision the page was read at; later pages of the same
	// listing pass it back as ListOptions.Revision.
	Revision uint64
	// More says that keys remain after the last one returned.
	More bool
}

// ErrFutureRevision is returned for a listing at a revision not applied yet.
var ErrFutureRevision = fmt.Errorf("revision not applied yet")

// List returns the keys under opts.Prefix in key order. A listing at an
// older revision is the current state with the changes made since then
// undone from the watch history, so every page of a paginated listing shows
// the same revision without keeping old versions on disk.
func (s *Store) List(ctx context.Context, opts ListOptions) (ListResult, error) {
	tx, current, err := s.beginRead(opts.Prefix)
	if err != nil {
		return ListResult{}, err
	}
	defer tx.Rollback()
	rev := opts.Revision
	if rev == 0 {
		rev = current
	}
	if rev > current {
		return ListResult{}, fmt.Errorf("%w: %d > %d", ErrFutureRevision, rev, current)
	}
	var changed map[string]KV
	var changedKeys []string
	if rev < current {
		// The transaction may be ahead of the hub by the batch being
		// published right now.
		if err := s.hub.waitPublished(ctx, current); err != nil {
			return ListResult{}, err
		}
		if changed, err = s.hub.changedSince(rev, current, opts.Prefix); err != nil {
			return ListResult{}, err
		}
		for k := range changed {
			if k > opts.After {
				changedKeys = append(changedKeys, k)
			}
		}
		sort.Strings(changedKeys)
	}

	res := ListResult{Revision: rev}
	c := tx.Bucket(bucketKV).Cursor()
	prefix := []byte(opts.Prefix)
	var k, v []byte
	if opts.After != "" && opts.After >= opts.Prefix {
		k, v = c.Seek([]byte(opts.After))
		if k != nil && string(k) == opts.After {
			k, v = c.Next()
		}
	} else {
		k, v = c.Seek(prefix)
	}
	emit := func(kv KV) bool {
		if opts.Limit > 0 && len(res.KVs) == opts.Limit {
			res.More = true
			return false
		}
		res.KVs = append(res.KVs, kv)
		return true
	}
	for {
		if k != nil && !bytes.HasPrefix(k, prefix) {
			k = nil
		}
		// The next key in order comes from the bucket or from the keys
		// changed since rev, whichever sorts first.
		if len(changedKeys) > 0 && (k == nil || changedKeys[0] <= string(k)) {
			key := changedKeys[0]
			changedKeys = changedKeys[1:]
			if k != nil && key == string(k) {
				k, v = c.Next()
			}
			if old := changed[key]; old.ModRevision != 0 {
				old.Key = key
				if !emit(old) {
					break
				}
			}
			continue
		}
		if k == nil {
			break
		}
		if _, ok := changed[string(k)]; !ok {
			kv, err := decodeRecord(k, v)
			if err != nil {
				return ListResult{}, err
			}
			if !emit(kv) {
				break
			}
		}
		k, v = c.Next()
	}
	return res, nil
}
