package raftstore

import (
	"context"
	"fmt"
	"log/slog"
	"slices"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends hashicorp/raft's hclog output to slog. The methods that
// matter for output are implemented; the rest come from a null logger.
type hclogAdapter struct {
	hclog.Logger
	l    *slog.Logger
	name string
}

func newHCLog(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{Logger: hclog.NewNullLogger(), l: l.With("component", name), name: name}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lv := slog.LevelInfo
	switch level {
	case hclog.Trace, hclog.Debug:
		lv = slog.LevelDebug
	case hclog.Warn:
		lv = slog.LevelWarn
	case hclog.Error:
		lv = slog.LevelError
	}
	a.l.Log(context.Background(), lv, msg, formatted(args)...)
}

// formatted renders the values hashicorp/raft wraps in hclog.Fmt, which
// hclog formats lazily and slog would print as the raw format and
// arguments. args is not changed: the caller may still hold it.
func formatted(args []any) []any {
	out, copied := args, false
	for i, v := range args {
		f, ok := v.(hclog.Format)
		if !ok || len(f) == 0 {
			continue
		}
		if !copied {
			out, copied = slices.Clone(args), true
		}
		format, _ := f[0].(string)
		out[i] = fmt.Sprintf(format, f[1:]...)
	}
	return out
}

func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }
func (a *hclogAdapter) IsDebug() bool                 { return a.l.Enabled(context.Background(), slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool                  { return a.l.Enabled(context.Background(), slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool                  { return true }
func (a *hclogAdapter) IsError() bool                 { return true }
func (a *hclogAdapter) Name() string                  { return a.name }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{Logger: a.Logger, l: a.l.With(args...), name: a.name}
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	return &hclogAdapter{Logger: a.Logger, l: a.l.With("sub", name), name: a.name + "." + name}
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{Logger: a.Logger, l: a.l, name: name}
}
