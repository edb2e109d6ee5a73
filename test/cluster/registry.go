package cluster

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Registry is an OCI distribution registry for pull tests (none other is
// reachable here): it serves the images of an OCI image layout archive
// under one repository, read-only, to clients with its user and password
// (HTTP basic authentication, which containerd answers a challenge with).
type Registry struct {
	// Addr is where it listens, in its namespace.
	Addr string
	repo string
	user string
	pass string
	// blobs by digest; tags map a tag to its manifest's digest.
	blobs map[string][]byte
	tags  map[string]string
}

// StartRegistry serves archive (an OCI image layout tar) as repo at addr
// inside ns until the test ends; each image is tagged by the
// org.opencontainers.image.ref.name annotation of its manifest.
func StartRegistry(t TB, ns *Netns, addr, repo, user, pass string, archive []byte) *Registry {
	t.Helper()
	r := &Registry{repo: repo, user: user, pass: pass, blobs: map[string][]byte{}, tags: map[string]string{}}
	if err := r.load(archive); err != nil {
		t.Fatalf("registry: %v", err)
	}
	l, err := ns.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("registry: %v", err)
	}
	r.Addr = l.Addr().String()
	srv := &http.Server{Handler: r}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *Registry) load(archive []byte) error {
	tr := tar.NewReader(bytes.NewReader(archive))
	var index []byte
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return err
		}
		if h.Name == "index.json" {
			index = b
		} else if d, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok {
			r.blobs["sha256:"+d] = b
		}
	}
	var idx ocispec.Index
	if err := json.Unmarshal(index, &idx); err != nil {
		return err
	}
	for _, m := range idx.Manifests {
		r.tags[m.Annotations[ocispec.AnnotationRefName]] = m.Digest.String()
	}
	return nil
}

// ServeHTTP answers the pull side of the distribution API.
func (r *Registry) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if u, p, ok := req.BasicAuth(); !ok || u != r.user || p != r.pass {
		w.Header().Set("WWW-Authenticate", `Basic realm="pontoon-test"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`, http.StatusUnauthorized)
		return
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		http.Error(w, `{"errors":[{"code":"UNSUPPORTED"}]}`, http.StatusMethodNotAllowed)
		return
	}
	if req.URL.Path == "/v2/" {
		return
	}
	rest, ok := strings.CutPrefix(req.URL.Path, "/v2/"+r.repo+"/")
	kind, ref, _ := strings.Cut(rest, "/")
	if d, tagged := r.tags[ref]; tagged && kind == "manifests" {
		ref = d
	}
	b, found := r.blobs[ref]
	if !ok || !found || (kind != "manifests" && kind != "blobs") {
		http.Error(w, `{"errors":[{"code":"NOT_FOUND"}]}`, http.StatusNotFound)
		return
	}
	if kind == "manifests" {
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
	} else {
		w.Header().Set("Content-Type", "application/octet-stream")
	}
	w.Header().Set("Docker-Content-Digest", ref)
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	if req.Method == http.MethodGet {
		w.Write(b)
	}
}
