package main

import (
	"strings"
	"testing"
)

// A --server that is not a server's API URL is refused before anything
// is sent or printed.
func TestServerFlagRefusesWhatIsNotAnAPIURL(t *testing.T) {
	for _, bad := range []string{"foo", "127.0.0.1:6443", "ftp://127.0.0.1:6443", "http://", "http://127.0.0.1:6443/api", "http://h:1?x=1"} {
		cmd := kubeconfigCommand()
		var out strings.Builder
		cmd.SetOut(&out)
		cmd.SetErr(&out)
		cmd.SetArgs([]string{"--server", bad})
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), "--server") || !strings.Contains(err.Error(), "want http://HOST:PORT") {
			t.Errorf("--server %q: err %v, want a refusal naming the flag", bad, err)
		}
		if strings.Contains(out.String(), "apiVersion") {
			t.Errorf("--server %q: printed a kubeconfig anyway:\n%s", bad, out.String())
		}
	}
	for _, good := range []string{"http://127.0.0.1:6443", "https://10.0.0.12:6443/", "http://server-1:6443"} {
		cmd := kubeconfigCommand()
		var out strings.Builder
		cmd.SetOut(&out)
		cmd.SetArgs([]string{"--server", good})
		if err := cmd.Execute(); err != nil || !strings.Contains(out.String(), "server: "+good) {
			t.Errorf("--server %q: err %v, output:\n%s", good, err, out.String())
		}
	}
}
