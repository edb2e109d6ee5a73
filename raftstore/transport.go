package raftstore

import (
	"fmt"
	"net"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is Raft's TCP transport with every outgoing connection bound
// to this server's own address. Several servers on one machine (127.0.0.21,
// .22, …) then really talk from their own addresses, so a partition made
// with iptables between two addresses cuts exactly the traffic it should.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	dialer    net.Dialer
}

func newStreamLayer(bind, advertise string) (*streamLayer, error) {
	adv, err := net.ResolveTCPAddr("tcp", advertise)
	if err != nil {
		return nil, fmt.Errorf("raft advertise address %q: %w", advertise, err)
	}
	if adv.IP == nil || adv.IP.IsUnspecified() {
		return nil, fmt.Errorf("raft advertise address %q must name a host others can reach", advertise)
	}
	ln, err := net.Listen("tcp", bind)
	if err != nil {
		return nil, fmt.Errorf("raft listen on %s: %w", bind, err)
	}
	return &streamLayer{
		Listener:  ln,
		advertise: adv,
		dialer:    net.Dialer{LocalAddr: &net.TCPAddr{IP: adv.IP}},
	}, nil
}

func (s *streamLayer) Addr() net.Addr { return s.advertise }

func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := s.dialer
	d.Timeout = timeout
	return d.Dial("tcp", string(address))
}
