package cluster

import (
	"log"
	"os"
	"sync"
)

// Runner is the TB of a program that drives the harness, as the
// benchmarks and the conformance run do: logs go to the standard logger,
// a fatal error cleans up and exits.
type Runner struct {
	dir string

	mu       sync.Mutex
	cleanups []func()
	fatal    sync.Once
}

var _ TB = (*Runner)(nil)

// NewRunner makes a runner whose temporary dirs are under a new dir named
// with prefix.
func NewRunner(prefix string) *Runner {
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		log.Fatal(err)
	}
	return &Runner{dir: dir}
}

func (r *Runner) Helper()                           {}
func (r *Runner) Logf(format string, args ...any)   { log.Printf(format, args...) }
func (r *Runner) Errorf(format string, args ...any) { log.Printf(format, args...) }

// Fatalf cleans up and exits; a goroutine that fails while another does
// waits for the exit.
func (r *Runner) Fatalf(format string, args ...any) {
	r.fatal.Do(func() {
		r.Close()
		log.Fatalf(format, args...)
	})
	select {}
}

func (r *Runner) Cleanup(f func()) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cleanups = append(r.cleanups, f)
}
func (r *Runner) Failed() bool { return false }

// TempDir makes a new temporary dir, removed by Close.
func (r *Runner) TempDir() string {
	d, err := os.MkdirTemp(r.dir, "t")
	if err != nil {
		log.Fatal(err)
	}
	return d
}

// Close runs the cleanups, the last registered first, and removes the
// temporary dirs.
func (r *Runner) Close() {
	r.mu.Lock()
	cleanups := r.cleanups
	r.cleanups = nil
	r.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		cleanups[i]()
	}
	os.RemoveAll(r.dir)
}
