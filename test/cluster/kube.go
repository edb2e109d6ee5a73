package cluster

import (
	"bytes"
	"os"
	"path/filepath"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Kubeconfig writes a kubeconfig for s with `pontoon kubeconfig` and
// returns its path.
func (c *Cluster) Kubeconfig(s *Server) string {
	c.t.Helper()
	out, errOut, code := c.CLI(s, "kubeconfig")
	if code != 0 {
		c.t.Fatalf("pontoon kubeconfig: exit %d: %s", code, errOut)
	}
	path := filepath.Join(c.t.TempDir(), s.Name+".kubeconfig")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		c.t.Fatalf("write kubeconfig: %v", err)
	}
	return path
}

// Kubectl runs the machine's kubectl against s, with a discovery cache of
// the test's own.
func (c *Cluster) Kubectl(s *Server, stdin string, args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	c.mu.Lock()
	if c.kubeconfigs == nil {
		c.kubeconfigs = map[string]string{}
		c.kubeCache = c.t.TempDir()
	}
	cfg, ok := c.kubeconfigs[s.Name]
	c.mu.Unlock()
	if !ok {
		cfg = c.Kubeconfig(s)
		c.mu.Lock()
		c.kubeconfigs[s.Name] = cfg
		c.mu.Unlock()
	}
	cmd := c.command("kubectl", append([]string{"--kubeconfig", cfg, "--cache-dir", c.kubeCache, "--request-timeout", "20s"}, args...)...)
	cmd.Stdin = bytes.NewBufferString(stdin)
	return run(cmd)
}

// RESTConfig is a client-go configuration for s whose connections leave
// from ClientIP (from the hub with a Net).
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{Host: s.API(), Timeout: 20 * time.Second, QPS: 1000, Burst: 1000, Dial: s.c.dialContext}
}

// Clientset is a client-go clientset for s.
func (s *Server) Clientset() *kubernetes.Clientset {
	cs, err := kubernetes.NewForConfig(s.RESTConfig())
	if err != nil {
		panic(err)
	}
	return cs
}
