package kube

import (
	"bytes"
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/server/options/encryptionconfig"
	"k8s.io/apiserver/pkg/storage/value"

	"github.com/pontoon-dev/pontoon/api/resource"
	"github.com/pontoon-dev/pontoon/fsm"
)

// Objects of the resources an EncryptionConfiguration names (Secrets,
// usually) are encrypted at rest as kube-apiserver encrypts them: by the
// server that proposes a write, before it enters the log, with the first
// provider of the resource's list and the object's key as authenticated
// data; they are decrypted with whichever provider's prefix the stored
// value has. So Secrets are ciphertext in the Raft log, the store, its
// snapshots and `snapshot save` files, and a key is rotated as
// kube-apiserver documents: add the new key second, restart every
// server, move it first, restart, rewrite the Secrets, drop the old key.
//
// The providers (aescbc, aesgcm, secretbox, kms, identity) are
// k8s.io/apiserver's.

// encryptedPrefix begins every value a provider other than identity
// wrote.
var encryptedPrefix = []byte("k8s:enc:")

// atRestTransformers picks the transformer of each served resource from
// config (exact, then group wildcard, then *.*), as kube-apiserver
// resolves them; a resource without one is stored as it is encoded.
func atRestTransformers(reg *resource.Registry, config map[schema.GroupResource]value.Transformer) map[*resource.Resource]value.Transformer {
	if len(config) == 0 {
		return nil
	}
	static := encryptionconfig.StaticTransformers(config)
	out := map[*resource.Resource]value.Transformer{}
	for _, gv := range reg.GroupVersions() {
		for _, r := range reg.In(gv) {
			gr := r.GroupVersionResource().GroupResource()
			for _, k := range []schema.GroupResource{gr, {Group: gr.Group, Resource: "*"}, {Group: "*", Resource: "*"}} {
				if config[k] != nil {
					out[r] = static.TransformerForResource(gr)
					break
				}
			}
		}
	}
	return out
}

// encodeSealed returns what is stored at key for obj: encode, then seal.
func (o *objects) encodeSealed(r *resource.Resource, key string, obj runtime.Object) ([]byte, error) {
	plain, err := o.encode(r, obj)
	if err != nil {
		return nil, err
	}
	return o.seal(r, key, plain)
}

// seal returns what is stored at key for an object of r encoded as
// plain.
func (o *objects) seal(r *resource.Resource, key string, plain []byte) ([]byte, error) {
	t := o.atRest[r]
	if t == nil {
		return plain, nil
	}
	b, err := t.TransformToStorage(context.Background(), plain, value.DefaultContext(key))
	if err != nil {
		return nil, fmt.Errorf("encrypt %s: %w", key, err)
	}
	return b, nil
}

// open returns the encoded object kv holds.
func (o *objects) open(r *resource.Resource, kv fsm.KV) ([]byte, error) {
	b, _, err := o.openStale(r, kv)
	return b, err
}

// openStale is open that also says whether the value is stale: not
// stored as seal would store it now (another key, or no encryption), so
// an update that changes nothing rewrites it, as kube-apiserver's does;
// that is how Secrets move to a new key.
func (o *objects) openStale(r *resource.Resource, kv fsm.KV) ([]byte, bool, error) {
	t := o.atRest[r]
	if t == nil {
		if bytes.HasPrefix(kv.Value, encryptedPrefix) {
			return nil, false, fmt.Errorf("%s is stored encrypted, and this server has no --encryption-provider-config for %s", kv.Key, r.GroupVersionResource().GroupResource())
		}
		return kv.Value, false, nil
	}
	b, stale, err := t.TransformFromStorage(context.Background(), kv.Value, value.DefaultContext(kv.Key))
	if err != nil {
		return nil, false, fmt.Errorf("decrypt %s: %w", kv.Key, err)
	}
	return b, stale, nil
}
