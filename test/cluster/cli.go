package cluster

import (
	"bytes"
	"os/exec"
)

// CLI runs the pontoon binary with args against server s and returns its
// standard output, standard error and exit code.
func (c *Cluster) CLI(s *Server, args ...string) (stdout, stderr string, code int) {
	return run(c.command(c.opts.Bin, append(args, "--server", s.API())...))
}

// run runs cmd and returns its standard output, standard error and exit
// code (-1 when it could not run).
func run(cmd *exec.Cmd) (stdout, stderr string, code int) {
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		code = -1
		errb.WriteString(err.Error())
	}
	return out.String(), errb.String(), code
}

// Bin returns the binary the cluster runs.
func (c *Cluster) Bin() string { return c.opts.Bin }
