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
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

func main() {
	out := flag.String("out", "", "write the Markdown report here (default: stdout)")
	duration := flag.Duration("duration", 8*time.Second, "how long each throughput measurement runs")
	keys := flag.Int("restart-keys", 100000, "keys loaded before the restart and memory measurements")
	rounds := flag.Int("failover-rounds", 20, "leader kills in the failover measurement")
	suites := flag.String("suites", "store,kube,sched", "what to measure: store (against etcd), kube (the Kubernetes API), sched (the scheduler and controllers)")
	flag.Parse()
	bin := os.Getenv("PONTOON_BIN")
	if bin == "" {
		log.Fatal("bench: set PONTOON_BIN to the pontoon binary (make bench does)")
	}
	r := newRunner()
	defer r.cleanup()
	cfg := config{duration: *duration, keys: *keys, rounds: *rounds}
	var report report
	start := time.Now()
	if strings.Contains(*suites, "store") {
		for _, newSys := range []func() system{
			func() system { return newPontoon(r, bin) },
			func() system { return newEtcd(r) },
		} {
			report.add(measure(newSys, cfg))
		}
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
	duration time.Duration
	keys     int
	rounds   int
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
	name     string
	writes   []latency // by client count
	reads    latency
	restart  time.Duration
	rss      memory
	failover []time.Duration
}

type latency struct {
	clients  int
	perSec   float64
	p50, p99 time.Duration
}

var clientCounts = []int{1, 16, 128}

// measure runs the write and read loads on one fresh cluster, then the
// restart, memory and failover measurements on another that holds only the
// cfg.keys loaded keys, so the memory figure is that of a server holding
// exactly those (the write loads alone leave some 145,000 keys behind).
func measure(newSys func() system, cfg config) result {
	sys := newSys()
	log.Printf("== %s", sys.name())
	sys.start()
	res := result{name: sys.name()}
	value := make([]byte, 1024)
	for _, n := range clientCounts {
		l := load(n, cfg.duration, func(ctx context.Context, c, seq int) error {
			return sys.put(ctx, c%3, fmt.Sprintf("w/%d/%d", c, seq%1000), value)
		})
		log.Printf("%s: %d clients: %.0f writes/s, p50 %v, p99 %v", sys.name(), n, l.perSec, l.p50, l.p99)
		res.writes = append(res.writes, l)
	}
	follower := (sys.leader() + 1) % 3
	res.reads = load(16, cfg.duration, func(ctx context.Context, c, seq int) error {
		return sys.get(ctx, follower, fmt.Sprintf("w/%d/%d", c%16, seq%1000))
	})
	log.Printf("%s: linearizable reads on a follower: %.0f/s, p50 %v, p99 %v", sys.name(), res.reads.perSec, res.reads.p50, res.reads.p99)

	sys.stop()

	sys = newSys()
	sys.start()
	follower = (sys.leader() + 1) % 3
	loadKeys(sys, cfg.keys, value)
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
	sys.stop()
	return res
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
}

func (r *report) add(res result) { r.results = append(r.results, res) }

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
	if len(r.results) == 2 {
		r.storeMarkdown(&b, cfg)
	}
	if r.kube != nil {
		r.kube.markdown(&b)
	}
	if r.sched != nil {
		r.sched.markdown(&b)
	}
	return b.String()
}

func (r *report) storeMarkdown(b *strings.Builder, cfg config) {
	p, e := r.results[0], r.results[1]
	b.WriteString("## Replicated store against etcd (issue 2)\n\n")
	fmt.Fprintf(b, "Both systems ran in the same invocation on the same machine: Pontoon's store with 3 servers on 127.0.0.21-23, etcd %s (Debian's `etcd-server`) with 3 members on 127.0.0.31-33, both fsyncing every commit. ", etcdVersion())
	fmt.Fprintf(b, "Values are 1 KiB; each throughput figure is %v of closed-loop clients spread over the three members. Ratios are Pontoon / etcd.\n\n", cfg.duration)

	b.WriteString("### Writes\n\n| clients | Pontoon writes/s | etcd writes/s | throughput ratio | Pontoon p50 / p99 | etcd p50 / p99 | p99 ratio |\n|---|---|---|---|---|---|---|\n")
	for i := range p.writes {
		pw, ew := p.writes[i], e.writes[i]
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %s | %s / %s | %s / %s | %s |\n", pw.clients, pw.perSec, ew.perSec, ratio(pw.perSec, ew.perSec),
			ms(pw.p50), ms(pw.p99), ms(ew.p50), ms(ew.p99), ratio(float64(pw.p99), float64(ew.p99)))
	}
	fmt.Fprintf(b, "\n### Linearizable reads on a follower (16 clients)\n\n| | reads/s | p50 | p99 |\n|---|---|---|---|\n| Pontoon | %.0f | %s | %s |\n| etcd | %.0f | %s | %s |\n| ratio | %s | | |\n",
		p.reads.perSec, ms(p.reads.p50), ms(p.reads.p99), e.reads.perSec, ms(e.reads.p50), ms(e.reads.p99), ratio(p.reads.perSec, e.reads.perSec))
	fmt.Fprintf(b, "\n### Restart and memory with %d keys of 1 KiB\n\nMeasured on a fresh cluster that holds only these keys (the write loads above ran on another). Resident memory right after loading, split into anonymous memory (heap, stacks) and file-backed pages (mapped bbolt files: clean page cache the kernel can drop and read again).\n\n| | follower restart to first linearizable read | resident | anonymous | file-backed |\n|---|---|---|---|---|\n| Pontoon | %s | %d MiB | %d MiB | %d MiB |\n| etcd | %s | %d MiB | %d MiB | %d MiB |\n| ratio | %s | %s | %s | %s |\n",
		cfg.keys, ms(p.restart), p.rss.rss>>20, p.rss.anon>>20, p.rss.file>>20, ms(e.restart), e.rss.rss>>20, e.rss.anon>>20, e.rss.file>>20,
		ratio(float64(p.restart), float64(e.restart)), ratio(float64(p.rss.rss), float64(e.rss.rss)), ratio(float64(p.rss.anon), float64(e.rss.anon)), ratio(float64(p.rss.file), float64(e.rss.file)))
	pp50, pp99 := durations(p.failover)
	ep50, ep99 := durations(e.failover)
	fmt.Fprintf(b, "\n### Leader failover (%d rounds)\n\nTime from `kill -9` of the leader to the first write acknowledged through a surviving member.\n\n| | median | p99 (slowest of %d) |\n|---|---|---|\n| Pontoon | %s | %s |\n| etcd | %s | %s |\n",
		len(p.failover), len(p.failover), ms(pp50), ms(pp99), ms(ep50), ms(ep99))
	b.WriteString("\n### Goals (issue 2)\n\n")
	goal := func(ok bool, text string) { writeGoal(b, ok, text) }
	for i, n := range clientCounts {
		if n == 1 {
			goal(p.writes[i].p50 <= e.writes[i].p50*3/2, fmt.Sprintf("1 client: latency within 1.5x of etcd's (p50 %s vs %s)", ms(p.writes[i].p50), ms(e.writes[i].p50)))
			continue
		}
		goal(p.writes[i].perSec >= 1.5*e.writes[i].perSec && p.writes[i].p99 <= e.writes[i].p99,
			fmt.Sprintf("%d clients: throughput at least 1.5x etcd's with p99 no higher (%s, p99 %s vs %s)", n, ratio(p.writes[i].perSec, e.writes[i].perSec), ms(p.writes[i].p99), ms(e.writes[i].p99)))
	}
	goal(pp99 < 2*time.Second, fmt.Sprintf("failover p99 under 2 s (%s)", ms(pp99)))
	goal(p.rss.rss < 400<<20, fmt.Sprintf("resident memory with %d objects under 400 MiB (%d MiB)", cfg.keys, p.rss.rss>>20))
}

// writeGoal writes one goal of an issue and whether it is met.
func writeGoal(b *strings.Builder, ok bool, text string) {
	mark := "met"
	if !ok {
		mark = "**not met**"
	}
	fmt.Fprintf(b, "- %s: %s\n", text, mark)
}

// runner gives the cluster harness what it needs from a test.
type runner struct {
	dir      string
	cleanups []func()
}

func newRunner() *runner {
	dir, err := os.MkdirTemp("", "pontoon-bench-")
	if err != nil {
		log.Fatal(err)
	}
	return &runner{dir: dir}
}

func (r *runner) Helper()                           {}
func (r *runner) Logf(format string, args ...any)   { log.Printf(format, args...) }
func (r *runner) Errorf(format string, args ...any) { log.Printf(format, args...) }
func (r *runner) Fatalf(format string, args ...any) { r.cleanup(); log.Fatalf(format, args...) }
func (r *runner) Cleanup(f func())                  { r.cleanups = append(r.cleanups, f) }
func (r *runner) Failed() bool                      { return false }

func (r *runner) TempDir() string {
	d, err := os.MkdirTemp(r.dir, "t")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

func (r *runner) cleanup() {
	for i := len(r.cleanups) - 1; i >= 0; i-- {
		r.cleanups[i]()
	}
	r.cleanups = nil
	os.RemoveAll(filepath.Clean(r.dir))
}
