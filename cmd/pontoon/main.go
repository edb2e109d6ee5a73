// Command pontoon is the single binary of a Pontoon cluster: servers,
// agents and the operator commands. It wires the packages together and has
// no logic of its own.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/spf13/cobra"
)

func main() {
	root := &cobra.Command{
		Use:           "pontoon",
		Short:         "A Kubernetes-compatible container orchestrator whose control plane needs no etcd",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.AddCommand(serverCommand(), agentCommand(), devCommand(), imageCommand(), operatorCommand(), membersCommand(), snapshotCommand(), kubeconfigCommand(), tokenCommand())
	if err := root.Execute(); err != nil {
		fmt.Fprintf(os.Stderr, "pontoon: %v\n", err)
		os.Exit(1)
	}
}

func newLogger(level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv})), nil
}

// signalContext is ctx, ended by SIGTERM or SIGINT (Ctrl-C).
func signalContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
}

// newRegistry is the metrics registry of a server or an agent, with Go's
// and the process's own metrics.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}
