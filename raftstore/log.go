package raftstore

import (
	"context"
	"log/slog"

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
	a.l.Log(context.Background(), lv, msg, args...)
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
