package membership

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// APIDialer dials the Kubernetes API of a live server found by gossip, so
// an agent needs no server address of its own: it keeps to the server it
// reached last and moves to another when that one stops answering (a
// client's watches then start again on the new one).
type APIDialer struct {
	pool *Pool
	mu   sync.Mutex
	last string
}

// APIDialer returns a dialer of the servers' API.
func (p *Pool) APIDialer() *APIDialer { return &APIDialer{pool: p} }

// DialContext dials a server's API address, whatever address it is asked
// for: the last server that answered first, then the others alive.
func (d *APIDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	d.mu.Lock()
	last := d.last
	d.mu.Unlock()
	var addrs []string
	for _, a := range d.pool.APIServers() {
		if a != last {
			addrs = append(addrs, a)
		}
	}
	rand.Shuffle(len(addrs), func(i, j int) { addrs[i], addrs[j] = addrs[j], addrs[i] })
	if last != "" {
		addrs = append([]string{last}, addrs...)
	}
	if len(addrs) == 0 {
		return nil, errors.New("no server found by gossip yet")
	}
	var errs []error
	dialer := net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	for _, a := range addrs {
		conn, err := dialer.DialContext(ctx, network, a)
		if err == nil {
			d.mu.Lock()
			d.last = a
			d.mu.Unlock()
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("no server answers: %w", errors.Join(errs...))
}
