package jointoken

import (
	"bytes"
	"path/filepath"
	"testing"
)

func TestTokensAndKeys(t *testing.T) {
	a, err := Generate()
	if err != nil || Check(a) != nil || len(a) != 64 {
		t.Fatalf("generated %q: %v", a, err)
	}
	b, _ := Generate()
	ka, _ := GossipKey(a)
	ka2, _ := GossipKey(a)
	kb, _ := GossipKey(b)
	if len(ka) != 32 || !bytes.Equal(ka, ka2) || bytes.Equal(ka, kb) {
		t.Fatalf("gossip keys: %x %x %x", ka, ka2, kb)
	}
	for _, bad := range []string{"short", "has a space in it somewhere", "tab\tin-the-middle-of-it"} {
		if Check(bad) == nil {
			t.Errorf("%q accepted as a token", bad)
		}
	}
	path := filepath.Join(t.TempDir(), "token")
	if err := Write(path, a); err != nil {
		t.Fatal(err)
	}
	if got, err := Read(path); err != nil || got != a {
		t.Fatalf("read back %q: %v", got, err)
	}
	if k, err := ParseGossipKey("AAAAAAAAAAAAAAAAAAAAAA=="); err != nil || len(k) != 16 {
		t.Fatalf("a 16-byte key: %v", err)
	}
	if _, err := ParseGossipKey("not base64!"); err == nil {
		t.Fatal("a key that is not base64 was accepted")
	}
}
