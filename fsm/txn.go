package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The limits of a transaction. Everything bbolt could refuse is inside
// them, so an entry that passes Validate always applies; one that does not
// is refused before it is proposed, and again, the same way on every
// server, if it reaches the log anyway.
const (
	// MaxValueSize is the largest value a single operation may write.
	// Kubernetes refuses objects over 1.5 MiB (etcd's default request
	// limit); so do we, so that one object can never stall the Raft log
	// for everyone else.
	MaxValueSize = 3 << 19 // 1.5 MiB
	// MaxKeySize is the longest key. bbolt refuses keys over 32 KiB;
	// Kubernetes' longest keys (a 253-byte name in a 63-byte namespace
	// under a group and resource) are well under a kilobyte.
	MaxKeySize = 4 << 10
	// MaxTxnOps bounds the operations of one transaction, as etcd's
	// --max-txn-ops does; the event expiry's batches are the largest.
	MaxTxnOps = 1024
	// MaxTxnSize bounds the keys, values and UIDs of one transaction
	// together: one largest object and its preconditions fit.
	MaxTxnSize = 2 << 20
	// maxUIDSize is what a record's one length byte can hold.
	maxUIDSize = 255
)

// txnVersion is the first byte of every encoded transaction, so that the log
// format can change without misreading old entries.
const txnVersion = 1

// OpType says what an operation does to its key.
type OpType uint8

// The operation types.
const (
	OpPut OpType = iota + 1
	OpDelete
	// OpCheck writes nothing: its precondition must hold for the
	// transaction to apply (a create conditioned on its namespace).
	OpCheck
)

// Cond is the precondition of one operation. The zero Cond always holds.
type Cond struct {
	// MustNotExist requires the key to be absent (a create).
	MustNotExist bool
	// MustExist requires the key to be present (an unconditional update).
	MustExist bool
	// ModRevision, when not zero, requires the key's current modification
	// revision (its resourceVersion) to equal it.
	ModRevision uint64
	// UID, when not empty, requires the stored UID to equal it.
	UID string
}

// Op is one write of a transaction.
type Op struct {
	Type  OpType
	Key   string
	Value []byte // OpPut only
	UID   string // OpPut only: stored beside the value for UID preconditions
	Cond  Cond
}

// Txn is a list of operations applied all or nothing: if any precondition
// fails, nothing is written. Everything non-deterministic (UIDs, timestamps)
// has been decided by the caller and is part of the values.
type Txn struct {
	Ops []Op
}

// Put returns an operation that writes value at key under cond.
func Put(key string, value []byte, uid string, cond Cond) Op {
	return Op{Type: OpPut, Key: key, Value: value, UID: uid, Cond: cond}
}

// Delete returns an operation that removes key under cond.
func Delete(key string, cond Cond) Op {
	return Op{Type: OpDelete, Key: key, Cond: cond}
}

// Check returns an operation that only requires cond to hold for key.
func Check(key string, cond Cond) Op {
	return Op{Type: OpCheck, Key: key, Cond: cond}
}

// Validate checks what can be checked without the store: the caller runs it
// before a transaction enters the log, and Apply runs it again so that a bad
// entry is refused the same way on every server.
func (t *Txn) Validate() error {
	if len(t.Ops) > MaxTxnOps {
		return tooManyOps(len(t.Ops))
	}
	size := 0
	for i, op := range t.Ops {
		// The key is reported cut short: an error naming a 40 KB key
		// would itself be too large to log or return.
		invalid := func(code Code, format string, args ...any) error {
			return &TxnError{Code: code, Op: i, Key: truncate(op.Key, 256), Message: fmt.Sprintf(format, args...)}
		}
		switch {
		case op.Key == "":
			return invalid(CodeInvalid, "empty key")
		case len(op.Key) > MaxKeySize:
			return invalid(CodeTooLarge, "key is %d bytes, the limit is %d", len(op.Key), MaxKeySize)
		case op.Type == OpPut && len(op.Value) > MaxValueSize:
			return invalid(CodeTooLarge, "value is %d bytes, the limit is %d", len(op.Value), MaxValueSize)
		case op.Type != OpPut && op.Type != OpDelete && op.Type != OpCheck:
			return invalid(CodeInvalid, "unknown operation type %d", op.Type)
		case len(op.UID) > maxUIDSize || len(op.Cond.UID) > maxUIDSize:
			return invalid(CodeInvalid, "uid longer than %d bytes", maxUIDSize)
		case op.Cond.MustExist && op.Cond.MustNotExist:
			return invalid(CodeInvalid, "key cannot both exist and not exist")
		}
		size += len(op.Key) + len(op.Value) + len(op.UID) + len(op.Cond.UID)
		if size > MaxTxnSize {
			return invalid(CodeTooLarge, "transaction is over %d bytes, the limit", MaxTxnSize)
		}
	}
	return nil
}

// tooManyOps refuses a transaction of n operations, over MaxTxnOps.
func tooManyOps(n int) *TxnError {
	return &TxnError{Code: CodeTooLarge, Op: MaxTxnOps,
		Message: fmt.Sprintf("transaction has %d operations, the limit is %d", n, MaxTxnOps)}
}

// truncate cuts s to at most n bytes, marking the cut.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Marshal encodes the transaction for the Raft log.
func (t *Txn) Marshal() []byte {
	n := 1 + binary.MaxVarintLen64
	for _, op := range t.Ops {
		n += 2 + 4*binary.MaxVarintLen64 + len(op.Key) + len(op.Value) + len(op.UID) + len(op.Cond.UID) + binary.MaxVarintLen64
	}
	b := make([]byte, 0, n)
	b = append(b, txnVersion)
	b = binary.AppendUvarint(b, uint64(len(t.Ops)))
	for _, op := range t.Ops {
		var flags byte
		if op.Cond.MustNotExist {
			flags |= 1
		}
		if op.Cond.MustExist {
			flags |= 2
		}
		b = append(b, byte(op.Type), flags)
		b = binary.AppendUvarint(b, op.Cond.ModRevision)
		b = appendBytes(b, []byte(op.Cond.UID))
		b = appendBytes(b, []byte(op.Key))
		b = appendBytes(b, []byte(op.UID))
		b = appendBytes(b, op.Value)
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

// errMalformed is wrapped by every decoding error.
var errMalformed = errors.New("malformed transaction")

// UnmarshalTxn decodes a transaction written by Marshal. Values alias b.
func UnmarshalTxn(b []byte) (*Txn, error) {
	d := decoder{b: b}
	if v := d.byte(); v != txnVersion {
		return nil, fmt.Errorf("%w: version %d", errMalformed, v)
	}
	n := d.uvarint()
	// An operation takes at least minOpSize bytes; more than MaxTxnOps
	// is refused before anything is allocated for them.
	const minOpSize = 7
	switch {
	case n > uint64(len(b))/minOpSize:
		return nil, fmt.Errorf("%w: %d operations in %d bytes", errMalformed, n, len(b))
	case n > MaxTxnOps:
		return nil, tooManyOps(int(n))
	}
	t := &Txn{Ops: make([]Op, 0, n)}
	for i := uint64(0); i < n && d.err == nil; i++ {
		var op Op
		op.Type = OpType(d.byte())
		flags := d.byte()
		op.Cond.MustNotExist = flags&1 != 0
		op.Cond.MustExist = flags&2 != 0
		op.Cond.ModRevision = d.uvarint()
		op.Cond.UID = string(d.bytes())
		op.Key = string(d.bytes())
		op.UID = string(d.bytes())
		op.Value = d.bytes()
		t.Ops = append(t.Ops, op)
	}
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%w: %d trailing bytes", errMalformed, len(d.b))
	}
	if d.err != nil {
		return nil, d.err
	}
	return t, nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(what string) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: truncated %s", errMalformed, what)
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) < 1 {
		d.fail("byte")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) bytes() []byte {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("field")
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

// Code classifies why a transaction was refused.
type Code string

// The refusal codes. The API layer maps them to Kubernetes reasons.
const (
	CodeExists   Code = "Exists"   // MustNotExist failed
	CodeNotFound Code = "NotFound" // MustExist or a delete of a missing key
	CodeConflict Code = "Conflict" // ModRevision or UID differs
	CodeTooLarge Code = "TooLarge" // over one of the limits above
	CodeInvalid  Code = "Invalid"  // malformed operation
)

// TxnError is a transaction refused by a precondition or by validation.
// Nothing of the transaction was written. It survives a JSON round trip, so a
// follower can return the leader's verdict unchanged.
type TxnError struct {
	Code Code `json:"code"`
	// Op is the index of the operation that failed.
	Op  int    `json:"op"`
	Key string `json:"key,omitempty"`
	// Current is the key's modification revision when it exists.
	Current uint64 `json:"current,omitempty"`
	Message string `json:"message,omitempty"`
}

func (e *TxnError) Error() string {
	s := fmt.Sprintf("operation %d on %q: %s", e.Op, e.Key, e.Code)
	if e.Current != 0 {
		s += fmt.Sprintf(" (current revision %d)", e.Current)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Result is what applying one log entry returns through raft.ApplyFuture.
type Result struct {
	// Revision is the entry's Raft index: the resourceVersion of everything
	// the transaction wrote.
	Revision uint64
	// Err is a *TxnError when the transaction was refused.
	Err error
}
