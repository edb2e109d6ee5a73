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
// an agent needs no server address of its own. It prefers followers, so
// the nodes' watches and status writes do not load the leader (which
// runs the scheduler and the controllers), keeps to the follower it
// reached last, and moves to another server when that one stops
// answering (a client's watches then start again on the new one).
type APIDialer struct {
	pool *Pool
	mu   sync.Mutex
	last string
}

// APIDialer returns a dialer of the servers' API.
func (p *Pool) APIDialer() *APIDialer { return &APIDialer{pool: p} }

// DialContext dials a server's API address, whatever address it is asked
// for, in the order dialOrder gives.
func (d *APIDialer) DialContext(ctx context.Context, network, _ string) (net.Conn, error) {
	d.mu.Lock()
	last := d.last
	d.mu.Unlock()
	addrs := dialOrder(d.pool.apiServers(), last, rand.Shuffle)
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

// dialOrder orders the servers' API addresses to try: the followers
// before the leader, the one reached last first among its kind, the
// others shuffled so that agents spread over the servers.
func dialOrder(servers []Member, last string, shuffle func(n int, swap func(i, j int))) []string {
	var followers, leaders []string
	for _, m := range servers {
		if m.APIAddr == last {
			continue
		}
		if m.Leader {
			leaders = append(leaders, m.APIAddr)
		} else {
			followers = append(followers, m.APIAddr)
		}
	}
	shuffle(len(followers), func(i, j int) { followers[i], followers[j] = followers[j], followers[i] })
	for _, m := range servers {
		if m.APIAddr == last {
			if m.Leader {
				leaders = append([]string{last}, leaders...)
			} else {
				followers = append([]string{last}, followers...)
			}
		}
	}
	return append(followers, leaders...)
}
