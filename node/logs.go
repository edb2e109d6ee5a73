package node

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"time"
)

// copyLogs writes the container log at path to w as `kubectl logs` shows
// it: content only (with its time first when asked), partial lines joined,
// after since, the last tail lines, at most limitBytes. With running set
// it follows the file until the container stops and everything is
// written, or ctx ends.
func copyLogs(ctx context.Context, w io.Writer, path string, o logOptions, running func(context.Context) bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	out := &limitedWriter{w: w, left: o.limitBytes}
	r := bufio.NewReader(f)
	// The lines there are now: since and tail apply to them.
	var lines []string
	var pending string
	for {
		line, err := r.ReadString('\n')
		if err == io.EOF {
			pending = line
			break
		} else if err != nil {
			return err
		}
		if out := format(line[:len(line)-1], o); out != "" {
			lines = append(lines, out)
		}
	}
	start := 0
	if o.tail >= 0 && int64(len(lines)) > o.tail {
		start = len(lines) - int(o.tail)
	}
	for _, l := range lines[start:] {
		if _, err := io.WriteString(out, l); err != nil {
			return nil
		}
	}
	flush(w)
	if running == nil {
		return nil
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	lastCheck := time.Now()
	for {
		line, err := r.ReadString('\n')
		pending += line
		if err == nil {
			if l := format(pending[:len(pending)-1], o); l != "" {
				if _, err := io.WriteString(out, l); err != nil {
					return nil
				}
				flush(w)
			}
			pending = ""
			continue
		}
		if !errors.Is(err, io.EOF) {
			return err
		}
		// At the end of what was written: done once the container stopped
		// (looked at once a second).
		if time.Since(lastCheck) >= time.Second {
			if !running(ctx) {
				return nil
			}
			lastCheck = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// format turns a CRI log line into what is shown, "" for a line before
// since or one that is not a log line.
func format(line string, o logOptions) string {
	t, partial, content, ok := splitLogLine(line)
	if !ok || (!o.since.IsZero() && t.Before(o.since)) {
		return ""
	}
	if !partial {
		content += "\n"
	}
	if o.timestamps {
		content = t.Format(time.RFC3339Nano) + " " + content
	}
	return content
}

func flush(w io.Writer) {
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
}

// limitedWriter writes at most left bytes (all when left is 0), then
// fails.
type limitedWriter struct {
	w    io.Writer
	left int64
	done bool
}

var errLimit = errors.New("limit reached")

func (l *limitedWriter) Write(p []byte) (int, error) {
	if l.done {
		return 0, errLimit
	}
	if l.left > 0 && int64(len(p)) >= l.left {
		p = p[:l.left]
		l.done = true
	}
	if l.left > 0 {
		l.left -= int64(len(p))
	}
	n, err := l.w.Write(p)
	if err == nil && l.done {
		err = errLimit
	}
	return n, err
}
