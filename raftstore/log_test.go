package raftstore

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

func TestHCLogAdapterFormatsFmtValues(t *testing.T) {
	var buf bytes.Buffer
	l := newHCLog(slog.New(slog.NewTextHandler(&buf, nil)), "raft")
	servers := []raft.Server{{ID: "s1", Address: "127.0.0.1:6444"}}
	args := []any{"index", 3, "servers", hclog.Fmt("%+v", servers)}
	l.Info("initial configuration", args...)

	out := buf.String()
	if want := `servers="[{Suffrage:Voter ID:s1 Address:127.0.0.1:6444}]"`; !strings.Contains(out, want) {
		t.Fatalf("log line %q lacks %s", out, want)
	}
	if !strings.Contains(out, "index=3") || !strings.Contains(out, "component=raft") {
		t.Fatalf("log line %q lost its other attributes", out)
	}
	if _, ok := args[3].(hclog.Format); !ok {
		t.Fatalf("the caller's arguments were changed: %#v", args[3])
	}
}
