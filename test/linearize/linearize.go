// Package linearize records what clients of the raw key space saw and checks
// the history for linearizability with porcupine, one register per key.
//
// A write whose outcome is unknown (a timeout, a broken connection) is kept
// as an operation that never returned: it may have taken effect at any time
// after it was called, or never.
package linearize

import (
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/anishathalye/porcupine"
)

// Input is one operation on one key.
type Input struct {
	Put   bool
	Key   string
	Value string // for a put
}

// History collects operations from any number of clients.
type History struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

// NewHistory starts an empty history.
func NewHistory() *History { return &History{start: time.Now()} }

// Now is the timestamp to record as an operation's call or return.
func (h *History) Now() int64 { return int64(time.Since(h.start)) }

// Put records a write of value to key, called at call. ok says the write
// was acknowledged; unknown says its outcome is not known. A write that
// definitely failed is not recorded.
func (h *History) Put(client int, key, value string, call int64, ok, unknown bool) {
	if !ok && !unknown {
		return
	}
	ret := h.Now()
	if unknown {
		ret = math.MaxInt64
	}
	h.add(porcupine.Operation{ClientId: client, Input: Input{Put: true, Key: key, Value: value}, Call: call, Return: ret})
}

// Get records a successful read of key that returned value ("" for absent).
func (h *History) Get(client int, key, value string, call int64) {
	h.add(porcupine.Operation{ClientId: client, Input: Input{Key: key}, Output: value, Call: call, Return: h.Now()})
}

func (h *History) add(op porcupine.Operation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, op)
}

// Resolve settles writes whose outcome was unknown against the committed
// log: one whose value was never committed did not happen and is dropped.
// One that was committed stays open-ended (it took effect at some time
// after its call).
func (h *History) Resolve(committed func(key, value string) bool) (dropped int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	kept := h.ops[:0]
	for _, op := range h.ops {
		in := op.Input.(Input)
		if in.Put && op.Return == math.MaxInt64 && !committed(in.Key, in.Value) {
			dropped++
			continue
		}
		kept = append(kept, op)
	}
	h.ops = kept
	return dropped
}

// Len returns the number of recorded operations.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

// model is a register per key, every key starting absent ("").
var model = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(Input).Key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(Input)
		if in.Put {
			return true, in.Value
		}
		return output.(string) == state.(string), state
	},
	DescribeOperation: func(input, output any) string {
		in := input.(Input)
		if in.Put {
			return fmt.Sprintf("put(%s, %s)", in.Key, in.Value)
		}
		return fmt.Sprintf("get(%s) -> %v", in.Key, output)
	},
}

// Check returns nil when the history is linearizable.
func (h *History) Check(timeout time.Duration) error {
	h.mu.Lock()
	ops := append([]porcupine.Operation(nil), h.ops...)
	h.mu.Unlock()
	switch res := porcupine.CheckOperationsTimeout(model, ops, timeout); res {
	case porcupine.Ok:
		return nil
	case porcupine.Illegal:
		return fmt.Errorf("history of %d operations is not linearizable", len(ops))
	default:
		return fmt.Errorf("linearizability check of %d operations timed out after %v", len(ops), timeout)
	}
}
