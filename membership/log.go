package membership

import (
	"bytes"
	"context"
	"log"
	"log/slog"
)

// newStdLogger adapts memberlist's standard-library logging, whose lines
// start with "[LEVEL]", to slog at the matching level.
func newStdLogger(l *slog.Logger) *log.Logger {
	return log.New(levelWriter{l.With("component", "gossip")}, "", 0)
}

type levelWriter struct{ l *slog.Logger }

func (w levelWriter) Write(b []byte) (int, error) {
	line := bytes.TrimSpace(b)
	level := slog.LevelDebug
	for prefix, lv := range map[string]slog.Level{"[ERR]": slog.LevelError, "[WARN]": slog.LevelWarn, "[INFO]": slog.LevelInfo, "[DEBUG]": slog.LevelDebug} {
		if bytes.HasPrefix(line, []byte(prefix)) {
			level, line = lv, bytes.TrimSpace(line[len(prefix):])
			break
		}
	}
	w.l.Log(context.Background(), level, string(bytes.TrimPrefix(line, []byte("memberlist: "))))
	return len(b), nil
}
