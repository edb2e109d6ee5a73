package node

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestCopyLogs(t *testing.T) {
	path := filepath.Join(t.TempDir(), "0.log")
	lines := "2026-01-01T00:00:01.000000001Z stdout F one\n" +
		"2026-01-01T00:00:02.000000002Z stderr P tw\n" +
		"2026-01-01T00:00:02.000000003Z stderr F o\n" +
		"not a log line\n" +
		"2026-01-01T00:00:03Z stdout F three\n"
	if err := os.WriteFile(path, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	since, _ := time.Parse(time.RFC3339, "2026-01-01T00:00:02Z")
	for name, tc := range map[string]struct {
		o    logOptions
		want string
	}{
		"all":        {logOptions{tail: -1}, "one\ntwo\nthree\n"},
		"tail":       {logOptions{tail: 1}, "three\n"},
		"since":      {logOptions{tail: -1, since: since}, "two\nthree\n"},
		"limit":      {logOptions{tail: -1, limitBytes: 6}, "one\ntw"},
		"timestamps": {logOptions{tail: 1, timestamps: true}, "2026-01-01T00:00:03Z three\n"},
	} {
		var b bytes.Buffer
		if err := copyLogs(context.Background(), &b, path, tc.o, nil); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if b.String() != tc.want {
			t.Errorf("%s: %q, want %q", name, b.String(), tc.want)
		}
	}
}
