package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/httpstream"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/tools/remotecommand"
	"k8s.io/client-go/transport/spdy"
	"k8s.io/client-go/util/exec"
)

// checkStreamProtocols drives exec and port-forward of the running pod
// pod (serving its root on 8080) with client-go's executors one protocol
// at a time, without the fallback kubectl has: WebSocket (v5.channel.k8s.io
// and SPDY tunnelled through a WebSocket, what kubectl 1.30 and later
// speak first) and SPDY, so each is known to be served.
func checkStreamProtocols(t *testing.T, cfg *rest.Config, pod, page string) {
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	execURL := func(opts *corev1.PodExecOptions) *rest.Request {
		return cs.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).
			SubResource("exec").VersionedParams(opts, scheme.ParameterCodec)
	}
	wsExec := func(opts *corev1.PodExecOptions) (remotecommand.Executor, error) {
		return remotecommand.NewWebSocketExecutor(cfg, "GET", execURL(opts).URL().String())
	}
	spdyExec := func(opts *corev1.PodExecOptions) (remotecommand.Executor, error) {
		return remotecommand.NewSPDYExecutor(cfg, "POST", execURL(opts).URL())
	}
	for name, newExec := range map[string]func(*corev1.PodExecOptions) (remotecommand.Executor, error){"websocket": wsExec, "spdy": spdyExec} {
		// stdin in, stdout and stderr apart, and the exit code.
		e, err := newExec(&corev1.PodExecOptions{Command: []string{"sh", "-c", "cat; echo to stderr >&2; exit 4"}, Stdin: true, Stdout: true, Stderr: true})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		var stdout, stderr bytes.Buffer
		err = e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: strings.NewReader("from stdin\n"), Stdout: &stdout, Stderr: &stderr})
		var exit exec.CodeExitError
		if !errors.As(err, &exit) || exit.Code != 4 || stdout.String() != "from stdin\n" || stderr.String() != "to stderr\n" {
			t.Fatalf("%s exec: %v, stdout %q, stderr %q", name, err, stdout.String(), stderr.String())
		}
		// A terminal, sized by the client (as `kubectl exec -it`); the
		// terminal and its size may come a moment after the command
		// starts.
		e, err = newExec(&corev1.PodExecOptions{Command: []string{"sh", "-c", `for i in $(seq 100); do s=$(stty size 2>/dev/null); case "$s" in ""|"0 0") sleep 0.05;; *) break;; esac; done; echo $s`}, Stdin: true, Stdout: true, TTY: true})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		stdout.Reset()
		sizes := terminalSizes{{Height: 41, Width: 103}}
		stdin, typing := io.Pipe()
		err = e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdin: stdin, Stdout: &stdout, Tty: true, TerminalSizeQueue: &sizes})
		typing.Close()
		if err != nil || strings.TrimSpace(stdout.String()) != "41 103" {
			t.Fatalf("%s exec with a terminal: %v, %q", name, err, stdout.String())
		}
		// A container the pod does not have is refused before any stream.
		e, err = newExec(&corev1.PodExecOptions{Container: "nope", Command: []string{"true"}, Stdout: true})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := e.StreamWithContext(ctx, remotecommand.StreamOptions{Stdout: io.Discard}); err == nil || !strings.Contains(err.Error(), "container nope is not valid") {
			t.Fatalf("%s exec into a container the pod does not have: %v", name, err)
		}
	}
	// An exec without a command or without a stream is a bad request.
	for _, opts := range []*corev1.PodExecOptions{{Stdout: true}, {Command: []string{"true"}}} {
		if err := execURL(opts).Do(ctx).Error(); err == nil || !strings.Contains(err.Error(), "you must specify at least") {
			t.Fatalf("exec %+v: %v", opts, err)
		}
	}

	pfURL := cs.CoreV1().RESTClient().Post().Namespace("default").Resource("pods").Name(pod).SubResource("portforward").URL()
	wsDialer, err := portforward.NewSPDYOverWebsocketDialer(pfURL, cfg)
	if err != nil {
		t.Fatal(err)
	}
	rt, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		t.Fatal(err)
	}
	spdyDialer := spdy.NewDialer(upgrader, &http.Client{Transport: rt}, "POST", pfURL)
	for name, dialer := range map[string]interface {
		Dial(...string) (httpstream.Connection, string, error)
	}{"websocket": wsDialer, "spdy": spdyDialer} {
		stop, ready := make(chan struct{}), make(chan struct{})
		var pfOut, pfErr bytes.Buffer
		fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:8080"}, stop, ready, &pfOut, &pfErr)
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- fw.ForwardPorts() }()
		select {
		case <-ready:
		case err := <-done:
			t.Fatalf("%s port-forward: %v %s", name, err, pfErr.String())
		case <-ctx.Done():
			t.Fatalf("%s port-forward never became ready: %s", name, pfErr.String())
		}
		ports, err := fw.GetPorts()
		if err != nil {
			t.Fatal(err)
		}
		got, err := httpGet(ctx, fmt.Sprintf("http://127.0.0.1:%d/", ports[0].Local))
		close(stop)
		<-done
		if err != nil || got != page {
			t.Fatalf("%s port-forward answered %q, %v (%s)", name, got, err, pfErr.String())
		}
	}
}

// terminalSizes hands out its sizes once each, then ends.
type terminalSizes []remotecommand.TerminalSize

func (s *terminalSizes) Next() *remotecommand.TerminalSize {
	if len(*s) == 0 {
		return nil
	}
	next := (*s)[0]
	*s = (*s)[1:]
	return &next
}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}
