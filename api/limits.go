package api

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
)

// Limits bound what requests may take from a server, as kube-apiserver's
// filters bound them: no request outlives its timeout, and beyond a number
// of requests in flight the next is refused at once with 429 and
// Retry-After, which client-go waits out and retries, instead of every
// request slowing down together until Raft's heartbeats starve.
type Limits struct {
	// RequestTimeout bounds every request but watches and the streaming
	// verbs; a request's ?timeout= may only shorten it.
	RequestTimeout time.Duration
	// MaxInFlight and MaxMutatingInFlight bound the requests being
	// served at once that read and that write; zero means no bound.
	MaxInFlight, MaxMutatingInFlight int
}

// DefaultLimits are kube-apiserver's defaults (--request-timeout,
// --max-requests-inflight, --max-mutating-requests-inflight).
var DefaultLimits = Limits{RequestTimeout: time.Minute, MaxInFlight: 400, MaxMutatingInFlight: 200}

// limiter applies Limits to a handler.
type limiter struct {
	limits Limits
	// reads and writes hold a token per request in flight; nil when
	// unbounded.
	reads, writes chan struct{}
	next          http.Handler
}

func newLimiter(l Limits, next http.Handler) *limiter {
	lim := &limiter{limits: l, next: next}
	if l.MaxInFlight > 0 {
		lim.reads = make(chan struct{}, l.MaxInFlight)
	}
	if l.MaxMutatingInFlight > 0 {
		lim.writes = make(chan struct{}, l.MaxMutatingInFlight)
	}
	return lim
}

// inflightDesc describes the limiter's gauge, as kube-apiserver's
// apiserver_current_inflight_requests.
var inflightDesc = prometheus.NewDesc("pontoon_api_inflight_requests",
	"Requests being served that count against --max-requests-inflight (readOnly) and --max-mutating-requests-inflight (mutating).",
	[]string{"request_kind"}, nil)

// Describe implements prometheus.Collector.
func (l *limiter) Describe(ch chan<- *prometheus.Desc) { ch <- inflightDesc }

// Collect implements prometheus.Collector.
func (l *limiter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(len(l.reads)), "readOnly")
	ch <- prometheus.MustNewConstMetric(inflightDesc, prometheus.GaugeValue, float64(len(l.writes)), "mutating")
}

func (l *limiter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if exempt(r) {
		l.next.ServeHTTP(w, r)
		return
	}
	slots := l.reads
	if mutating(r) {
		slots = l.writes
	}
	if slots != nil {
		select {
		case slots <- struct{}{}:
			defer func() { <-slots }()
		default:
			w.Header().Set("Retry-After", "1")
			writeError(w, apierrors.NewTooManyRequests("too many requests, please try again later", 1))
			return
		}
	}
	q := r.URL.Query()
	if longRunning(r.URL.Path, q) {
		l.next.ServeHTTP(w, r)
		return
	}
	timeout := l.limits.RequestTimeout
	if t, err := time.ParseDuration(q.Get("timeout")); err == nil && t > 0 && t < timeout {
		timeout = t
	}
	if timeout > 0 {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		r = r.WithContext(ctx)
		// A body sent slowly is cut at the same time: the handler's read
		// fails instead of holding the connection and its slot.
		http.NewResponseController(w).SetReadDeadline(time.Now().Add(timeout))
	}
	l.next.ServeHTTP(w, r)
}

// exempt requests are never refused: health checks and metrics, which
// must answer most when the server is busiest, and Raft's forwarding
// between servers, which each follower bounds itself.
func exempt(r *http.Request) bool {
	switch r.URL.Path {
	case "/livez", "/readyz", "/healthz", "/metrics":
		return true
	}
	return strings.HasPrefix(r.URL.Path, "/pontoon/internal/")
}

func mutating(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return false
	}
	return true
}

// longRunning requests have no timeout, as in kube-apiserver: watches,
// the streaming subresources, and snapshots, whose size is the store's.
func longRunning(path string, q url.Values) bool {
	if w, _ := strconv.ParseBool(q.Get("watch")); w || strings.Contains(path, "/watch/") {
		return true
	}
	if strings.HasPrefix(path, "/pontoon/v1/snapshot") || strings.Contains(path+"/", "/proxy/") {
		return true
	}
	switch path[strings.LastIndex(path, "/")+1:] {
	case "exec", "attach", "portforward":
		return true
	case "log":
		f, _ := strconv.ParseBool(q.Get("follow"))
		return f
	}
	return false
}
