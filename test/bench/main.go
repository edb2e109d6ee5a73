// Command bench measures Pontoon's replicated store against etcd 3.4 (from
// Debian's etcd-server) on the same machine in one run, and writes the
// results to docs/benchmarks.md. `make bench` runs it.
//
// Both clusters have three members on loopback addresses and fsync every
// commit. Clients are spread over all members for writes, as etcd's own
// benchmark tool spreads them; linearizable reads go to one follower.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

func main() {
	out := flag.String("out", "", "write the Markdown report here (default: stdout)")
	duration := flag.Duration("duration", 8*time.Second, "how long each throughput measurement runs")
	keys := flag.Int("restart-keys", 100000, "keys loaded before the restart and memory measurements")
	rounds := flag.Int("failover-rounds", 20, "leader kills in the failover measurement")
	writeRounds := flag.Int("write-rounds", 3, "rounds of the write loads; each system runs once a round, in turn")
	suites := flag.String("suites", "store,kube,sched,node,network", "what to measure: store (against etcd), kube (the Kubernetes API), sched (the scheduler and controllers), node (pods on a node, against CRI directly), network (Services and DNS across nodes, against CoreDNS)")
	flag.Parse()
	bin := os.Getenv("PONTOON_BIN")
	if bin == "" {
		log.Fatal("bench: set PONTOON_BIN to the pontoon binary (make bench does)")
	}
	r := cluster.NewRunner("pontoon-bench-")
	defer r.Close()
	// Ctrl-C removes what the run started: processes, nodes, namespaces.
	interrupted := make(chan os.Signal, 1)
	signal.Notify(interrupted, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-interrupted
		r.Fatalf("interrupted")
	}()
	cfg := config{duration: *duration, keys: *keys, rounds: *rounds, writeRounds: *writeRounds}
	var report report
	start := time.Now()
	if strings.Contains(*suites, "store") {
		report.results = measureStores(cfg, []storeSystem{
			{func() system { return newPontoon(r, bin, "wal") }, true},
			{func() system { return newPontoon(r, bin, "boltdb") }, false},
			{func() system { return newEtcd(r) }, true},
		})
	}
	if strings.Contains(*suites, "kube") {
		log.Printf("== Kubernetes API")
		k := measureKube(r, bin, cfg)
		report.kube = &k
	}
	if strings.Contains(*suites, "sched") {
		log.Printf("== scheduler and controllers")
		s := measureSched(r, bin, cfg)
		report.sched = &s
	}
	if strings.Contains(*suites, "node") {
		log.Printf("== pods on a node")
		n := measureNode(r, bin)
		report.node = &n
	}
	if strings.Contains(*suites, "network") {
		log.Printf("== Services and DNS across nodes")
		n := measureNetwork(r, bin)
		report.network = &n
	}
	text := report.markdown(cfg, time.Since(start))
	if *out == "" {
		fmt.Print(text)
		return
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s", *out)
}

type config struct {
	duration    time.Duration
	keys        int
	rounds      int
	writeRounds int
}

// system is a three-member cluster under test.
type system interface {
	name() string
	start()
	// put writes through member i; get reads linearizably through member i.
	put(ctx context.Context, i int, key string, value []byte) error
	get(ctx context.Context, i int, key string) error
	leader() int
	// kill kills member i with SIGKILL; restart starts it again.
	kill(i int)
	restart(i int)
	// ready reports whether member i serves linearizable reads.
	ready(i int) bool
	rss(i int) memory
	stop()
}

// result is what one system measured.
type result struct {
	name string
	// rounds are the write loads of each round, by client count; writes
	// are their medians.
	rounds [][]latency
	writes []latency
	// The rest is measured once, for the systems measured in full.
	full     bool
	reads    latency
	restart  time.Duration
	rss      memory
	failover []time.Duration
}

// storeSystem is a system the store suite measures; full ones also get
// the reads, restart, memory and failover measurements.
type storeSystem struct {
	new  func() system
	full bool
}

type latency struct {
	clients  int
	perSec   float64
	p50, p99 time.Duration
}

var clientCounts = []int{1, 16, 128}

// measureStores runs the write loads of every system in rounds, each
// system once a round on a fresh cluster, in turn, so that what changes on
// the machine over the run falls on all of them alike; each figure is the
// median of its rounds. Then the systems measured in full get the rest
// (measureRest).
func measureStores(cfg config, systems []storeSystem) []result {
	results := make([]result, len(systems))
	for round := range cfg.writeRounds {
		for i, s := range systems {
			sys := s.new()
			results[i].name, results[i].full = sys.name(), s.full
			log.Printf("== %s, write round %d", sys.name(), round+1)
			results[i].rounds = append(results[i].rounds, measureWrites(sys, cfg))
		}
	}
	for i, s := range systems {
		results[i].writes = medians(results[i].rounds)
		if s.full {
			measureRest(s.new(), cfg, &results[i])
		}
	}
	return results
}

// measureWrites runs the write loads on a fresh cluster, one client count
// after another.
func measureWrites(sys system, cfg config) []latency {
	sys.start()
	defer sys.stop()
	value := make([]byte, 1024)
	var out []latency
	for _, n := range clientCounts {
		l := load(n, cfg.duration, func(ctx context.Context, c, seq int) error {
			return sys.put(ctx, c%3, fmt.Sprintf("w/%d/%d", c, seq%1000), value)
		})
		log.Printf("%s: %d clients: %.0f writes/s, p50 %v, p99 %v", sys.name(), n, l.perSec, l.p50, l.p99)
		out = append(out, l)
	}
	return out
}

// medians takes, for each client count, the median of the rounds'
// throughputs and latencies, each on its own.
func medians(rounds [][]latency) []latency {
	var out []latency
	for i := range clientCounts {
		var per []float64
		var p50s, p99s []time.Duration
		for _, r := range rounds {
			per, p50s, p99s = append(per, r[i].perSec), append(p50s, r[i].p50), append(p99s, r[i].p99)
		}
		sort.Float64s(per)
		p50, _ := durations(p50s)
		p99, _ := durations(p99s)
		out = append(out, latency{clients: clientCounts[i], perSec: per[len(per)/2], p50: p50, p99: p99})
	}
	return out
}

// measureRest loads cfg.keys keys into a fresh cluster, so the memory
// figure is that of a server holding exactly those, then measures
// linearizable reads on a follower, its memory and restart, and failover.
func measureRest(sys system, cfg config, res *result) {
	log.Printf("== %s, reads, restart, memory and failover", sys.name())
	sys.start()
	defer sys.stop()
	follower := (sys.leader() + 1) % 3
	value := make([]byte, 1024)
	loadKeys(sys, cfg.keys, value)
	res.reads = load(16, cfg.duration, func(ctx context.Context, c, seq int) error {
		return sys.get(ctx, follower, fmt.Sprintf("load/%08d", (c*7919+seq*16)%cfg.keys))
	})
	log.Printf("%s: linearizable reads on a follower: %.0f/s, p50 %v, p99 %v", sys.name(), res.reads.perSec, res.reads.p50, res.reads.p99)
	res.rss = sys.rss(follower)
	sys.kill(follower)
	t0 := time.Now()
	sys.restart(follower)
	for !sys.ready(follower) {
		time.Sleep(5 * time.Millisecond)
	}
	res.restart = time.Since(t0)
	log.Printf("%s: %d keys: follower RSS %d MiB (anonymous %d, file-backed %d), restart to first linearizable read %v",
		sys.name(), cfg.keys, res.rss.rss>>20, res.rss.anon>>20, res.rss.file>>20, res.restart)
	for round := range cfg.rounds {
		res.failover = append(res.failover, failover(sys))
		log.Printf("%s: failover %d: %v", sys.name(), round+1, res.failover[round])
	}
}

// load runs n clients for d, each calling op in a loop, and measures.
func load(n int, d time.Duration, op func(ctx context.Context, client, seq int) error) latency {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var mu sync.Mutex
	var all []time.Duration
	var wg sync.WaitGroup
	start := time.Now()
	for c := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			for seq := 0; ctx.Err() == nil; seq++ {
				t := time.Now()
				octx, ocancel := context.WithTimeout(context.Background(), 5*time.Second)
				err := op(octx, c, seq)
				ocancel()
				if err != nil {
					if ctx.Err() == nil {
						log.Printf("client %d: %v", c, err)
					}
					continue
				}
				mine = append(mine, time.Since(t))
			}
			mu.Lock()
			all = append(all, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	return latency{clients: n, perSec: float64(len(all)) / elapsed.Seconds(), p50: pct(all, 50), p99: pct(all, 99)}
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, len(sorted)*p/100)]
}

// loadKeys writes n 1 KiB keys with 64 clients.
func loadKeys(sys system, n int, value []byte) {
	var wg sync.WaitGroup
	const clients = 64
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := c; k < n; k += clients {
				for {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := sys.put(ctx, c%3, fmt.Sprintf("load/%08d", k), value)
					cancel()
					if err == nil {
						break
					}
				}
			}
		}()
	}
	wg.Wait()
}

// failover kills the leader and measures the time to the first write
// acknowledged through a surviving member; then it restarts the old leader
// and waits until every member serves reads again.
func failover(sys system) time.Duration {
	l := sys.leader()
	survivor := (l + 1) % 3
	value := []byte("failover")
	sys.kill(l)
	t0 := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := sys.put(ctx, survivor, "failover", value)
		cancel()
		if err == nil {
			break
		}
	}
	d := time.Since(t0)
	sys.restart(l)
	for i := range 3 {
		for !sys.ready(i) {
			time.Sleep(10 * time.Millisecond)
		}
	}
	return d
}

type report struct {
	results []result
	kube    *kubeResult
	sched   *schedResult
	node    *nodeResult
	network *networkResult
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b float64) string {
	if b == 0 {
		return "–"
	}
	return fmt.Sprintf("%.2fx", a/b)
}

func durations(ds []time.Duration) (p50, p99 time.Duration) {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return pct(s, 50), pct(s, 99)
}

func (r *report) markdown(cfg config, took time.Duration) string {
	var b strings.Builder
	host, _ := os.Hostname()
	fmt.Fprintf(&b, "# Benchmarks\n\nProduced by `make bench` (`cd test && go run ./bench -out ../docs/benchmarks.md`) on %s, %d cores, %s, in %v.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), host, took.Round(time.Second))
	if len(r.results) == 3 {
		r.storeMarkdown(&b, cfg)
	}
	if r.kube != nil {
		r.kube.markdown(&b)
	}
	if r.sched != nil {
		r.sched.markdown(&b)
	}
	if r.node != nil {
		r.node.markdown(&b)
	}
	if r.network != nil {
		r.network.markdown(&b)
	}
	return b.String()
}

// storeMarkdown reports Pontoon on raft-wal (the default), Pontoon on
// raft-boltdb and etcd, in that order in r.results.
func (r *report) storeMarkdown(b *strings.Builder, cfg config) {
	w, bolt, e := r.results[0], r.results[1], r.results[2]
	b.WriteString("## Replicated store against etcd (issues 2 and 20)\n\n")
	fmt.Fprintf(b, "All three ran in the same invocation on the same machine: Pontoon with 3 servers on 127.0.0.21-23 and its Raft log in raft-wal (the default) or raft-boltdb, etcd %s (Debian's `etcd-server`) with 3 members on 127.0.0.31-33, all fsyncing every commit. ", etcdVersion())
	fmt.Fprintf(b, "Values are 1 KiB; each throughput figure is %v of closed-loop clients spread over the three members. ", cfg.duration)
	fmt.Fprintf(b, "The write loads ran in %d rounds, each system once a round on a fresh cluster, in turn (%s, %s, %s); each figure is the median of its rounds (throughput, p50 and p99 each on its own). Ratios are Pontoon / etcd.\n\n", len(w.rounds), w.name, bolt.name, e.name)

	b.WriteString("### Writes (medians)\n\n| clients | wal writes/s | boltdb writes/s | etcd writes/s | wal / etcd | boltdb / etcd | wal p50 / p99 | boltdb p50 / p99 | etcd p50 / p99 |\n|---|---|---|---|---|---|---|---|---|\n")
	for i := range w.writes {
		ww, bw, ew := w.writes[i], bolt.writes[i], e.writes[i]
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %.0f | %s | %s | %s / %s | %s / %s | %s / %s |\n", ww.clients, ww.perSec, bw.perSec, ew.perSec,
			ratio(ww.perSec, ew.perSec), ratio(bw.perSec, ew.perSec), ms(ww.p50), ms(ww.p99), ms(bw.p50), ms(bw.p99), ms(ew.p50), ms(ew.p99))
	}
	b.WriteString("\n### Writes, round by round\n\n| round | clients | wal writes/s (p50 / p99) | boltdb writes/s (p50 / p99) | etcd writes/s (p50 / p99) |\n|---|---|---|---|---|\n")
	for round := range w.rounds {
		for i, n := range clientCounts {
			cell := func(l latency) string { return fmt.Sprintf("%.0f (%s / %s)", l.perSec, ms(l.p50), ms(l.p99)) }
			fmt.Fprintf(b, "| %d | %d | %s | %s | %s |\n", round+1, n, cell(w.rounds[round][i]), cell(bolt.rounds[round][i]), cell(e.rounds[round][i]))
		}
	}
	fmt.Fprintf(b, "\n### Linearizable reads on a follower (16 clients, %d keys stored)\n\n| | reads/s | p50 | p99 |\n|---|---|---|---|\n| Pontoon (wal) | %.0f | %s | %s |\n| etcd | %.0f | %s | %s |\n| ratio | %s | | |\n",
		cfg.keys, w.reads.perSec, ms(w.reads.p50), ms(w.reads.p99), e.reads.perSec, ms(e.reads.p50), ms(e.reads.p99), ratio(w.reads.perSec, e.reads.perSec))
	fmt.Fprintf(b, "\n### Restart and memory with %d keys of 1 KiB\n\nMeasured on a fresh cluster that holds only these keys (the write loads above ran on others). Resident memory right after loading, split into anonymous memory (heap, stacks) and file-backed pages (mapped bbolt files: clean page cache the kernel can drop and read again).\n\n| | follower restart to first linearizable read | resident | anonymous | file-backed |\n|---|---|---|---|---|\n| Pontoon (wal) | %s | %d MiB | %d MiB | %d MiB |\n| etcd | %s | %d MiB | %d MiB | %d MiB |\n| ratio | %s | %s | %s | %s |\n",
		cfg.keys, ms(w.restart), w.rss.rss>>20, w.rss.anon>>20, w.rss.file>>20, ms(e.restart), e.rss.rss>>20, e.rss.anon>>20, e.rss.file>>20,
		ratio(float64(w.restart), float64(e.restart)), ratio(float64(w.rss.rss), float64(e.rss.rss)), ratio(float64(w.rss.anon), float64(e.rss.anon)), ratio(float64(w.rss.file), float64(e.rss.file)))
	wp50, wp99 := durations(w.failover)
	ep50, ep99 := durations(e.failover)
	fmt.Fprintf(b, "\n### Leader failover (%d rounds)\n\nTime from `kill -9` of the leader to the first write acknowledged through a surviving member.\n\n| | median | p99 (slowest of %d) |\n|---|---|---|\n| Pontoon (wal) | %s | %s |\n| etcd | %s | %s |\n",
		len(w.failover), len(w.failover), ms(wp50), ms(wp99), ms(ep50), ms(ep99))
	b.WriteString("\n### Goals (issues 2 and 20, on the medians, for the default log store, raft-wal)\n\n")
	goal := func(ok bool, text string) { writeGoal(b, ok, text) }
	for i, n := range clientCounts {
		if n == 1 {
			goal(w.writes[i].p50 <= e.writes[i].p50*3/2, fmt.Sprintf("1 client: latency within 1.5x of etcd's (p50 %s vs %s)", ms(w.writes[i].p50), ms(e.writes[i].p50)))
			continue
		}
		goal(w.writes[i].perSec >= 1.5*e.writes[i].perSec && w.writes[i].p99 <= e.writes[i].p99,
			fmt.Sprintf("%d clients: throughput at least 1.5x etcd's with p99 no higher (%s, p99 %s vs %s)", n, ratio(w.writes[i].perSec, e.writes[i].perSec), ms(w.writes[i].p99), ms(e.writes[i].p99)))
	}
	goal(wp99 < 2*time.Second, fmt.Sprintf("failover p99 under 2 s (%s)", ms(wp99)))
	goal(w.rss.rss < 400<<20, fmt.Sprintf("resident memory with %d objects under 400 MiB (%d MiB)", cfg.keys, w.rss.rss>>20))
}

// writeGoal writes one goal of an issue and whether it is met.
func writeGoal(b *strings.Builder, ok bool, text string) {
	mark := "met"
	if !ok {
		mark = "**not met**"
	}
	fmt.Fprintf(b, "- %s: %s\n", text, mark)
}
