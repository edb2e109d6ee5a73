package kube

import (
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	openapiv2 "github.com/google/gnostic-models/openapiv2"
	"google.golang.org/protobuf/proto"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/kube-openapi/pkg/validation/spec"

	"github.com/pontoon-dev/pontoon/api/resource"
)

//go:generate ./openapi/generate.sh

// The OpenAPI documents are Kubernetes' own, published with the release
// whose k8s.io modules we build with: kubectl validates and explains from
// them, and server-side apply reads the merge strategies of every field
// from them.
//
//go:embed openapi/*.json.gz
var openapiFiles embed.FS

// openAPI serves /openapi/v2 and /openapi/v3 and holds the schemas.
type openAPI struct {
	// v2 and v2Proto are read on first use: few clients ask for v2 (kubectl
	// validating a List does, in gnostic's Protobuf form).
	v2, v2Proto func() ([]byte, error)
	// v3 maps a group-version path (api/v1, apis/apps/v1) to its document.
	v3     map[string][]byte
	hashes map[string]string
}

func readGzip(name string) ([]byte, error) {
	f, err := openapiFiles.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return io.ReadAll(z)
}

// v3Path is the v3 document path of a group version.
func v3Path(gv schema.GroupVersion) string {
	if gv.Group == "" {
		return "api/" + gv.Version
	}
	return "apis/" + gv.Group + "/" + gv.Version
}

// loadOpenAPI reads the v3 documents of the served group versions and
// returns them with their component schemas, by name, for the field
// manager.
func loadOpenAPI(reg *resource.Registry) (*openAPI, map[string]*spec.Schema, error) {
	o := &openAPI{v3: map[string][]byte{}, hashes: map[string]string{}}
	o.v2 = sync.OnceValues(func() ([]byte, error) { return readGzip("openapi/swagger.json.gz") })
	o.v2Proto = sync.OnceValues(func() ([]byte, error) {
		b, err := o.v2()
		if err != nil {
			return nil, err
		}
		doc, err := openapiv2.ParseDocument(b)
		if err != nil {
			return nil, err
		}
		return proto.Marshal(doc)
	})
	schemas := map[string]*spec.Schema{}
	for _, gv := range reg.GroupVersions() {
		p := v3Path(gv)
		doc, err := readGzip("openapi/" + strings.ReplaceAll(p, "/", "__") + "_openapi.json.gz")
		if err != nil {
			return nil, nil, fmt.Errorf("openapi for %s: %w", gv, err)
		}
		var parsed struct {
			Components struct {
				Schemas map[string]*spec.Schema `json:"schemas"`
			} `json:"components"`
		}
		if err := json.Unmarshal(doc, &parsed); err != nil {
			return nil, nil, fmt.Errorf("openapi for %s: %w", gv, err)
		}
		for name, s := range parsed.Components.Schemas {
			schemas[name] = s
		}
		sum := sha512.Sum512(doc)
		o.v3[p], o.hashes[p] = doc, strings.ToUpper(hex.EncodeToString(sum[:]))
	}
	return o, schemas, nil
}

// protoV2MediaType is the Protobuf form of the OpenAPI v2 document.
const protoV2MediaType = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"

func (o *openAPI) serveV2(w http.ResponseWriter, r *http.Request) {
	name, doc, contentType := "swagger.json", o.v2, "application/json"
	if strings.Contains(r.Header.Get("Accept"), protoV2MediaType) {
		// The media type itself is not valid in a Content-Type (the "@");
		// kube-apiserver answers with this one.
		name, doc, contentType = "swagger.pb", o.v2Proto, "application/octet-stream"
	}
	b, err := doc()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", contentType)
	http.ServeContent(w, r, name, time.Time{}, bytes.NewReader(b))
}

// serveV3Index lists the documents, as kube-apiserver's /openapi/v3 does.
func (o *openAPI) serveV3Index(w http.ResponseWriter, r *http.Request) {
	type entry struct {
		URL string `json:"serverRelativeURL"`
	}
	paths := map[string]entry{}
	for p, h := range o.hashes {
		paths[p] = entry{URL: "/openapi/v3/" + p + "?hash=" + h}
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"paths": paths})
}

func (o *openAPI) serveV3(w http.ResponseWriter, r *http.Request) {
	p := r.PathValue("path")
	doc, ok := o.v3[p]
	if !ok {
		st := apierrors.NewNotFound(schema.GroupResource{Resource: "openapi"}, p).Status()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		json.NewEncoder(w).Encode(st)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Etag", `"`+o.hashes[p]+`"`)
	if r.URL.Query().Get("hash") == o.hashes[p] {
		w.Header().Set("Cache-Control", "public, immutable")
	}
	http.ServeContent(w, r, p, time.Time{}, bytes.NewReader(doc))
}
