package api

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// roundTrip sends a request through rt and fails the test, saying why,
// unless it is answered within 10 seconds.
func roundTrip(t *testing.T, rt http.RoundTripper, method, why string) *http.Response {
	t.Helper()
	req, err := http.NewRequest(method, "http://local/api/v1/namespaces/default/pods", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	answered := make(chan *http.Response, 1)
	go func() {
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Error(err)
		}
		answered <- resp
	}()
	select {
	case resp := <-answered:
		if resp == nil {
			t.FailNow()
		}
		return resp
	case <-time.After(10 * time.Second):
		t.Fatal(why)
		return nil
	}
}

// A write's whole answer comes back: status, headers and body.
func TestLocalTransportAnswersAWrite(t *testing.T) {
	rt := &localTransport{duty: context.Background(), handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"kind":"Pod"}`)
	})}
	resp := roundTrip(t, rt, http.MethodPost, "the write was not answered")
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Content-Type") != "application/json" ||
		string(body) != `{"kind":"Pod"}` || resp.ContentLength != int64(len(body)) {
		t.Fatalf("got %d %v %q (length %d)", resp.StatusCode, resp.Header, body, resp.ContentLength)
	}
}

// A read streams: what the handler has written reaches the client while
// the handler still runs, as a watch's events must.
func TestLocalTransportStreamsARead(t *testing.T) {
	release := make(chan struct{})
	rt := &localTransport{duty: context.Background(), handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		<-release
		io.WriteString(w, "second\n")
	})}
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	defer free() // a handler that never got its reader ends too
	resp := roundTrip(t, rt, http.MethodGet, "no response while the handler still runs: the read did not stream")
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	if first, err := lines.ReadString('\n'); err != nil || first != "first\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	free()
	if second, err := lines.ReadString('\n'); err != nil || second != "second\n" {
		t.Fatalf("second line %q, %v", second, err)
	}
}

// A write in progress when the duty ends sees its context end, so it
// stops rather than holding its caller.
func TestLocalTransportEndsAWriteWithItsDuty(t *testing.T) {
	duty, end := context.WithCancel(context.Background())
	started := make(chan struct{})
	rt := &localTransport{duty: duty, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		w.WriteHeader(http.StatusServiceUnavailable)
	})}
	go func() {
		<-started
		end()
	}()
	if resp := roundTrip(t, rt, http.MethodPost, "the write outlived its duty"); resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("got %d", resp.StatusCode)
	}
}
