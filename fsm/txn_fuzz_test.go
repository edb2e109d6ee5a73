package fsm

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// The limits must keep every operation inside bbolt's, or a write that
// passed Validate could still fail in the middle of a transaction.
func TestLimitsWithinBbolt(t *testing.T) {
	if MaxKeySize > bbolt.MaxKeySize || MaxValueSize+9+maxUIDSize > bbolt.MaxValueSize {
		t.Fatalf("limits key %d, value %d exceed bbolt's %d, %d", MaxKeySize, MaxValueSize, bbolt.MaxKeySize, bbolt.MaxValueSize)
	}
}

func TestValidateRefusesWhatTheStoreCannotHold(t *testing.T) {
	many := make([]Op, MaxTxnOps+1)
	for i := range many {
		many[i] = Check("/k", Cond{})
	}
	big := bytes.Repeat([]byte("v"), MaxValueSize)
	for name, tc := range map[string]struct {
		txn  Txn
		code Code
		msg  string
	}{
		"empty key":     {Txn{Ops: []Op{Put("", nil, "", Cond{})}}, CodeInvalid, "empty key"},
		"key too large": {Txn{Ops: []Op{Put("/kv/"+strings.Repeat("k", 40000), nil, "", Cond{})}}, CodeTooLarge, "the limit is 4096"},
		"value":         {Txn{Ops: []Op{Put("/a", append(big, 'x'), "", Cond{})}}, CodeTooLarge, "the limit is 1572864"},
		"ops":           {Txn{Ops: many}, CodeTooLarge, "the limit is 1024"},
		"total":         {Txn{Ops: []Op{Put("/a", big, "", Cond{}), Put("/b", big, "", Cond{})}}, CodeTooLarge, "over 2097152 bytes"},
		"uid":           {Txn{Ops: []Op{Put("/a", nil, strings.Repeat("u", 256), Cond{})}}, CodeInvalid, "uid longer"},
		"type":          {Txn{Ops: []Op{{Type: 9, Key: "/a"}}}, CodeInvalid, "unknown operation"},
	} {
		err := tc.txn.Validate()
		te, ok := err.(*TxnError)
		if !ok || te.Code != tc.code || !strings.Contains(te.Message, tc.msg) || len(te.Key) > 260 {
			t.Errorf("%s: got %v, want %s with %q", name, err, tc.code, tc.msg)
		}
	}
	if err := (&Txn{Ops: []Op{Put("/a", big, "", Cond{MustNotExist: true}), Check("/ns", Cond{MustExist: true})}}).Validate(); err != nil {
		t.Errorf("the largest object with a precondition: %v", err)
	}
}

// The entry that once crashed every server for good: a 40,000-byte key
// committed to the log is refused on apply, the store stays as it was and
// the next entry applies.
func TestOversizedKeyInTheLogIsRefused(t *testing.T) {
	s := openTest(t, 100)
	apply(t, s, 1, Put("/a", []byte("1"), "", Cond{}))
	_, before, _ := s.Digest()
	wantCode(t, apply(t, s, 2, Put("/kv/"+strings.Repeat("k", 40000), []byte("x"), "", Cond{})), CodeTooLarge)
	if _, after, _ := s.Digest(); after != before {
		t.Fatal("a refused entry changed the store")
	}
	if res := apply(t, s, 3, Put("/b", []byte("2"), "", Cond{})); res.Err != nil {
		t.Fatalf("the entry after a refused one: %v", res.Err)
	}
}

// FuzzApply feeds arbitrary log entries to the store: each is either
// refused, or applied; two fresh stores that apply it end byte-identical
// and give the same result, and nothing panics.
func FuzzApply(f *testing.F) {
	f.Add((&Txn{Ops: []Op{Put("/kv/"+strings.Repeat("k", 40000), []byte("v"), "", Cond{})}}).Marshal())
	f.Add((&Txn{Ops: []Op{Put("/a", []byte("v"), "uid", Cond{MustNotExist: true}), Delete("/seed", Cond{}), Check("/b", Cond{})}}).Marshal())
	f.Add((&Txn{Ops: []Op{Put("/seed", []byte("v"), "u", Cond{ModRevision: 1, UID: "seed"}), Put("/seed", nil, "", Cond{}), Delete("/seed", Cond{})}}).Marshal())
	f.Add([]byte{txnVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add((&RestoreEntry{Kind: RestoreBegin, ID: 7}).Marshal())
	f.Add((&RestoreEntry{Kind: RestoreChunk, ID: 7, Records: []Record{{Key: []byte("/r"), Value: encodeRecord(3, "u", []byte("v"))}}}).Marshal())
	f.Fuzz(func(t *testing.T, data []byte) {
		var results [2]any
		var digests [2][32]byte
		for i := range results {
			s := openTest(t, 100)
			apply(t, s, 1, Put("/seed", []byte("seed"), "seed", Cond{}))
			results[i] = s.ApplyBatch([]*raft.Log{{Index: 2, Term: 1, Type: raft.LogCommand, Data: data}})[0]
			index, sum, err := s.Digest()
			if err != nil || index != 2 {
				t.Fatalf("after the entry: index %d, %v", index, err)
			}
			digests[i] = sum
		}
		if digests[0] != digests[1] || !reflect.DeepEqual(results[0], results[1]) {
			t.Fatalf("two stores diverged on one entry: %v and %v", results[0], results[1])
		}
		res := results[0].(*Result)
		var err error
		if isRestore(data) {
			_, err = unmarshalRestore(data)
		} else {
			var txn *Txn
			if txn, err = UnmarshalTxn(data); err == nil {
				err = txn.Validate()
			}
		}
		if err != nil && res.Err == nil {
			t.Fatalf("an entry that fails validation (%v) was applied", err)
		}
	})
}
