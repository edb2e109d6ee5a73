package kube

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// A Secret is sealed with the first key, bound to its own key in the
// store, opened with any listed key (stale unless the first); other
// resources are stored as encoded; a server without the configuration
// names why it cannot read an encrypted value.
func TestAtRest(t *testing.T) {
	reg := resource.Builtin()
	secrets, _ := reg.Lookup(corev1.SchemeGroupVersion.WithResource("secrets"))
	configMaps, _ := reg.Lookup(corev1.SchemeGroupVersion.WithResource("configmaps"))
	load := func(keys ...string) *objects {
		y := "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n- resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n"
		for _, k := range keys {
			y += "      - {name: " + k + ", secret: " + map[string]string{"k1": "AQEBAQEBAQEBAQEBAQEBAQ==", "k2": "AgICAgICAgICAgICAgICAg=="}[k] + "}\n"
		}
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte(y), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := encryptionconfig.LoadEncryptionConfig(context.Background(), path, false, "test")
		if err != nil {
			t.Fatal(err)
		}
		return &objects{atRest: atRestTransformers(reg, c.Transformers)}
	}
	old, rotated := load("k1"), load("k2", "k1")
	const k = "/registry/core/secrets/ns/db"
	sealed, err := old.seal(secrets, k, []byte("plain"))
	if err != nil || !strings.HasPrefix(string(sealed), "k8s:enc:aesgcm:v1:k1:") || strings.Contains(string(sealed), "plain") {
		t.Fatalf("sealed %q (%v)", sealed, err)
	}
	if b, stale, err := old.openStale(secrets, fsm.KV{Key: k, Value: sealed}); err != nil || string(b) != "plain" || stale {
		t.Fatalf("opened with the same key: %q %v %v", b, stale, err)
	}
	if b, stale, err := rotated.openStale(secrets, fsm.KV{Key: k, Value: sealed}); err != nil || string(b) != "plain" || !stale {
		t.Fatalf("opened after a new first key: %q stale %v %v", b, stale, err)
	}
	if _, err := old.open(secrets, fsm.KV{Key: "/registry/core/secrets/ns/other", Value: sealed}); err == nil {
		t.Fatal("a value copied to another key was opened")
	}
	if b, err := old.seal(configMaps, "/registry/core/configmaps/ns/c", []byte("plain")); err != nil || string(b) != "plain" {
		t.Fatalf("a ConfigMap was stored as %q (%v)", b, err)
	}
	none := &objects{}
	if _, err := none.open(secrets, fsm.KV{Key: k, Value: sealed}); err == nil || !strings.Contains(err.Error(), "no --encryption-provider-config") {
		t.Fatalf("opened without a configuration: %v", err)
	}
}
