package main

import (
	"context"
	"fmt"
	"log"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// etcd is a three-member etcd cluster on 127.0.0.31-33.
type etcd struct {
	r       *cluster.Runner
	dir     string
	procs   []*exec.Cmd
	clients []*clientv3.Client
}

func newEtcd(r *cluster.Runner) *etcd {
	return &etcd{r: r, dir: r.TempDir(), procs: make([]*exec.Cmd, 3)}
}

func etcdVersion() string {
	out, err := exec.Command("etcd", "--version").Output()
	if err != nil {
		return "?"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	return strings.TrimSpace(strings.TrimPrefix(first, "etcd Version:"))
}

func (e *etcd) name() string { return "etcd" }

func (e *etcd) ip(i int) string { return fmt.Sprintf("127.0.0.%d", 31+i) }

func (e *etcd) start() {
	for i := range 3 {
		e.restart(i)
	}
	for i := range 3 {
		c, err := clientv3.New(clientv3.Config{Endpoints: []string{e.ip(i) + ":2379"}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
		if err != nil {
			log.Fatalf("etcd client: %v", err)
		}
		e.clients = append(e.clients, c)
	}
	for i := range 3 {
		for !e.ready(i) {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (e *etcd) restart(i int) {
	var cluster []string
	for j := range 3 {
		cluster = append(cluster, fmt.Sprintf("e%d=http://%s:2380", j, e.ip(j)))
	}
	ip := e.ip(i)
	cmd := exec.Command("etcd", "--name", fmt.Sprintf("e%d", i), "--data-dir", fmt.Sprintf("%s/e%d", e.dir, i),
		"--listen-client-urls", "http://"+ip+":2379", "--advertise-client-urls", "http://"+ip+":2379",
		"--listen-peer-urls", "http://"+ip+":2380", "--initial-advertise-peer-urls", "http://"+ip+":2380",
		"--initial-cluster", strings.Join(cluster, ","), "--initial-cluster-state", "new",
		"--initial-cluster-token", "bench", "--log-level", "error", "--logger", "zap")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		log.Fatalf("start etcd: %v (is etcd-server installed?)", err)
	}
	e.procs[i] = cmd
	e.r.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
}

func (e *etcd) put(ctx context.Context, i int, key string, value []byte) error {
	_, err := e.clients[i].Put(ctx, key, string(value))
	return err
}

func (e *etcd) get(ctx context.Context, i int, key string) error {
	_, err := e.clients[i].Get(ctx, key)
	return err
}

func (e *etcd) leader() int {
	for {
		for i := range 3 {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := e.clients[i].Status(ctx, e.ip(i)+":2379")
			cancel()
			if err == nil && st.Leader != 0 && st.Leader == st.Header.MemberId {
				return i
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (e *etcd) kill(i int) {
	e.procs[i].Process.Kill()
	e.procs[i].Wait()
}

func (e *etcd) ready(i int) bool {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	return e.get(ctx, i, "ready") == nil
}

func (e *etcd) rss(i int) memory { return memoryOf(e.procs[i].Process.Pid) }

func (e *etcd) stop() {
	for _, c := range e.clients {
		c.Close()
	}
	for i := range 3 {
		e.kill(i)
	}
	os.RemoveAll(e.dir)
}
