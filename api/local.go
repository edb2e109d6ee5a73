package api

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"sync"

	"github.com/pontoon-dev/pontoon/raftstore"
)

// LocalTransport is a client-go transport without a socket: requests are
// served by this server's own API handler, so the leader's controllers go
// through the same validation as every other client. Requests are fenced
// by the leadership of duty (raftstore.Fenced) and end with it. They are
// not held to the request limits (Limits), as kube-apiserver exempts the
// control plane's own components: the leader's duties bound their own
// concurrency, and must not be refused by the clients they serve.
func (s *Server) LocalTransport(duty context.Context) http.RoundTripper {
	return &localTransport{handler: s.mux, duty: duty}
}

type localTransport struct {
	handler http.Handler
	duty    context.Context
}

func (t *localTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(raftstore.Fenced(req.Context(), t.duty))
	stop := context.AfterFunc(t.duty, cancel)
	served := func() {
		stop()
		cancel()
	}
	req = req.Clone(ctx)
	if req.Body == nil {
		req.Body = http.NoBody
	}
	if req.Method != http.MethodGet {
		defer served()
		return t.serveHere(req), nil
	}
	pr, pw := io.Pipe()
	w := &pipeResponse{header: http.Header{}, body: pw, ready: make(chan struct{})}
	go func() {
		defer served()
		defer pw.Close()
		defer w.WriteHeader(http.StatusOK) // a handler that wrote nothing
		t.handler.ServeHTTP(w, req)
	}()
	select {
	case <-w.ready:
	case <-ctx.Done():
		pr.Close()
		return nil, ctx.Err()
	}
	return localResponse(req, w.code, w.sent, &cancelOnClose{ReadCloser: pr, cancel: cancel}, -1), nil
}

// serveHere serves a write on the caller's goroutine and hands back its
// whole response; reads stream from a goroutine of their own (a watch, a
// long list). A write's answer is short and its caller waits for it
// anyway, while a new goroutine starts with a small stack that decoding
// and encoding an object grows, copying it, on every request: the
// caller's stack has grown once.
func (t *localTransport) serveHere(req *http.Request) *http.Response {
	w := &bufferedResponse{header: http.Header{}}
	t.handler.ServeHTTP(w, req)
	w.WriteHeader(http.StatusOK) // a handler that wrote nothing
	return localResponse(req, w.code, w.header, io.NopCloser(&w.body), int64(w.body.Len()))
}

// localResponse is the client's side of a local response.
func localResponse(req *http.Request, code int, header http.Header, body io.ReadCloser, length int64) *http.Response {
	return &http.Response{
		Status: http.StatusText(code), StatusCode: code, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header: header, Body: body, ContentLength: length, Request: req,
	}
}

// bufferedResponse is the handler's side of a local write's response.
type bufferedResponse struct {
	header http.Header
	code   int
	body   bytes.Buffer
}

func (w *bufferedResponse) Header() http.Header { return w.header }

func (w *bufferedResponse) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
}

func (w *bufferedResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// pipeResponse is the handler's side of a local response: headers are
// handed over at the first write, the body streams through a pipe (a
// watch's events as they come).
type pipeResponse struct {
	header http.Header
	body   *io.PipeWriter
	once   sync.Once
	// code and sent are the status and headers as written, set once
	// before ready is closed.
	code  int
	sent  http.Header
	ready chan struct{}
}

func (w *pipeResponse) Header() http.Header { return w.header }

func (w *pipeResponse) WriteHeader(code int) {
	w.once.Do(func() {
		w.code, w.sent = code, w.header.Clone()
		close(w.ready)
	})
}

func (w *pipeResponse) Write(b []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.body.Write(b)
}

// Flush is a no-op: every write reaches the reader at once.
func (w *pipeResponse) Flush() {}

// cancelOnClose ends the handler when the client closes the body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (c *cancelOnClose) Close() error {
	c.cancel()
	return c.ReadCloser.Close()
}
