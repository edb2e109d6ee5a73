// Package jointoken is a cluster's join token: the secret every server
// and agent is given to join it, as k3s's token is. The keys that keep
// the cluster's own traffic to its members are derived from it, so a
// process without the token cannot take part: today the gossip pool's
// encryption key (memberlist's keyring), which keeps a stranger out of
// the pool and so out of autopilot's sight.
package jointoken

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"unicode"
)

// minLength keeps out tokens short enough to guess.
const minLength = 16

// Generate returns a new token: 32 random bytes, in hex.
func Generate() (string, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generate a token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// Check refuses what cannot be a token: one shorter than 16 characters,
// or with spaces or control characters (which a file or a shell would
// mangle).
func Check(token string) error {
	if len(token) < minLength {
		return fmt.Errorf("a token has at least %d characters", minLength)
	}
	if strings.IndexFunc(token, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("a token has no spaces or control characters")
	}
	return nil
}

// Read returns the token a file holds, without its trailing newline.
func Read(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	token := strings.TrimRight(string(b), "\r\n")
	if err := Check(token); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return token, nil
}

// Write keeps token in a file only its owner reads.
func Write(path, token string) error {
	return os.WriteFile(path, []byte(token+"\n"), 0o600)
}

// GossipKey is the gossip pool's AES-256 key derived from token.
func GossipKey(token string) ([]byte, error) {
	return hkdf.Key(sha256.New, []byte(token), nil, "pontoon gossip key v1", 32)
}

// InternalKey is the key that servers show one another on the internal
// endpoints (forwarded writes and read barriers), derived from token.
func InternalKey(token string) ([]byte, error) {
	return hkdf.Key(sha256.New, []byte(token), nil, "pontoon internal key v1", 32)
}

// ParseGossipKey decodes a gossip key given as base64 (as Nomad's and
// Consul's): 16, 24 or 32 bytes, for AES-128, -192 or -256.
func ParseGossipKey(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("a gossip key is base64: %w", err)
	}
	if n := len(b); n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("a gossip key is 16, 24 or 32 bytes, not %d", n)
	}
	return b, nil
}
