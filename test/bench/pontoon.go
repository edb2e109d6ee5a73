package main

import (
	"context"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pontoon-dev/pontoon/api/client"
	"github.com/pontoon-dev/pontoon/test/cluster"
)

type pontoon struct {
	r        *cluster.Runner
	c        *cluster.Cluster
	clients  []*client.Client
	logStore string
}

// newPontoon prepares three servers whose data dirs keep the Raft log in
// logStore (wal or boltdb).
func newPontoon(r *cluster.Runner, bin, logStore string) *pontoon {
	c := cluster.New(r, cluster.Options{Bin: bin, Servers: 3, BaseIP: 21, Args: []string{"--log-level", "warn", "--raft-log-store", logStore}})
	hc := cluster.HTTPClient()
	hc.Transport.(*http.Transport).MaxIdleConnsPerHost = 512
	p := &pontoon{r: r, c: c, logStore: logStore}
	for _, s := range c.Servers {
		p.clients = append(p.clients, client.New(s.API(), hc))
	}
	return p
}

func (p *pontoon) name() string { return "Pontoon (" + p.logStore + ")" }
func (p *pontoon) start()       { p.c.Start(); p.c.Leader(30 * time.Second) }

func (p *pontoon) put(ctx context.Context, i int, key string, value []byte) error {
	_, err := p.clients[i].Put(ctx, key, value, client.Cond{})
	return err
}

func (p *pontoon) get(ctx context.Context, i int, key string) error {
	_, err := p.clients[i].Get(ctx, key, false)
	if client.Reason(err) == "NotFound" {
		return nil
	}
	return err
}

func (p *pontoon) leader() int {
	l := p.c.Leader(30 * time.Second)
	for i, s := range p.c.Servers {
		if s == l {
			return i
		}
	}
	return 0
}

func (p *pontoon) kill(i int)    { p.c.Servers[i].Kill() }
func (p *pontoon) restart(i int) { p.c.Servers[i].Start() }

func (p *pontoon) ready(i int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return p.get(ctx, i, "ready") == nil
}

func (p *pontoon) rss(i int) memory { return memoryOf(p.c.Servers[i].PID()) }

// stop kills the servers and removes their data: the rounds would
// otherwise leave gigabytes behind until the end of the run.
func (p *pontoon) stop() {
	for _, s := range p.c.Servers {
		s.Kill()
		os.RemoveAll(s.DataDir)
	}
}

// memory is a process's resident set: in all, and the parts that are
// anonymous (heap, stacks) and file-backed (mapped files such as bbolt's,
// clean pages the kernel can drop and read again).
type memory struct {
	rss, anon, file int64
}

// memoryOf reads a process's resident set from /proc.
func memoryOf(pid int) memory {
	var m memory
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return m
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "RssAnon:":
			m.anon = kb << 10
		case "RssFile:":
			m.file = kb << 10
		}
	}
	return m
}
