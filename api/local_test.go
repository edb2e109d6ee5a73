package api

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func localRequest(t *testing.T, ctx context.Context, method string) *http.Request {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, "http://local/api/v1/namespaces/default/pods", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// A write's whole answer comes back: status, headers and body.
func TestLocalTransportAnswersAWrite(t *testing.T) {
	rt := &localTransport{duty: context.Background(), handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"kind":"Pod"}`)
	})}
	resp, err := rt.RoundTrip(localRequest(t, context.Background(), http.MethodPost))
	if err != nil {
		t.Fatal(err)
	}
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
	resp, err := rt.RoundTrip(localRequest(t, context.Background(), http.MethodGet))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	lines := bufio.NewReader(resp.Body)
	if first, err := lines.ReadString('\n'); err != nil || first != "first\n" {
		t.Fatalf("first line %q, %v", first, err)
	}
	close(release)
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
	done := make(chan *http.Response, 1)
	go func() {
		resp, err := rt.RoundTrip(localRequest(t, context.Background(), http.MethodPost))
		if err != nil {
			t.Error(err)
		}
		done <- resp
	}()
	select {
	case resp := <-done:
		if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("got %v", resp)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the write outlived its duty")
	}
}
