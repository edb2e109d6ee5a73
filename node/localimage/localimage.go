// Package localimage makes container images on the node itself, from a
// static busybox binary found on the host: the sandbox (pause) image every
// pod needs, and a busybox image with a shell and the usual tools for
// trying things out. No registry is needed for either, so a node works on a
// machine that reaches none.
//
// An image is written as an OCI image layout in a tar archive, the format
// containerd imports; the index names the image with the annotation
// containerd reads (io.containerd.image.name), so the import keeps the name.
package localimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Names of the images made here.
const (
	// Pause is the sandbox image: a shell that waits for ever, reaps what
	// it inherits, and exits at once on SIGTERM.
	Pause = "pontoon.local/pause:1"
	// Busybox has busybox's applets on the PATH (sh, httpd, wget, nc,
	// tar…) and runs sh unless told otherwise.
	Busybox = "pontoon.local/busybox:latest"
)

// pauseScript keeps the sandbox's PID 1 alive. `wait` reaps every child,
// also those left to it by processes that died in a shared PID namespace.
const pauseScript = "trap 'exit 0' TERM INT; while :; do sleep 2147483647 & wait $!; done"

// BusyboxPath is where Debian's busybox-static installs its binary.
const BusyboxPath = "/bin/busybox"

// Image describes an image to make from the busybox binary.
type Image struct {
	Name       string
	Entrypoint []string
	Cmd        []string
	// Files are added to the image: its path in the image (no leading
	// slash) to a file on the host, copied with its mode; one at an
	// applet's path replaces the applet.
	Files map[string]string
}

// Lookup returns the image this package makes under name.
func Lookup(name string) (Image, bool) {
	switch name {
	case Pause:
		return Image{Name: Pause, Entrypoint: []string{"/bin/sh", "-c", pauseScript}}, true
	case Busybox:
		return Image{Name: Busybox, Cmd: []string{"sh"}}, true
	}
	return Image{}, false
}

// Write writes img as an OCI image layout tar to w, made from the static
// busybox at busybox.
func Write(ctx context.Context, w io.Writer, img Image, busybox string) error {
	layer, err := busyboxLayer(ctx, busybox, img.Files)
	if err != nil {
		return err
	}
	cfg := ocispec.Image{
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		Config: ocispec.ImageConfig{
			Env:        []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"},
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			WorkingDir: "/",
		},
		RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{digest.FromBytes(layer)}},
	}
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return err
	}
	manifest := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    descriptor(ocispec.MediaTypeImageConfig, cfgJSON),
		Layers:    []ocispec.Descriptor{descriptor(ocispec.MediaTypeImageLayer, layer)},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	md := descriptor(ocispec.MediaTypeImageManifest, manifestJSON)
	md.Platform = &cfg.Platform
	md.Annotations = map[string]string{
		"io.containerd.image.name":       img.Name,
		ocispec.AnnotationRefName:        img.Name[strings.LastIndex(img.Name, ":")+1:],
		ocispec.AnnotationCreated:        time.Unix(0, 0).UTC().Format(time.RFC3339),
		"org.opencontainers.image.title": img.Name,
	}
	index, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{md},
	})
	if err != nil {
		return err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return err
	}
	tw := tar.NewWriter(w)
	files := []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, layout},
		{"index.json", index},
		{blobPath(layer), layer},
		{blobPath(cfgJSON), cfgJSON},
		{blobPath(manifestJSON), manifestJSON},
	}
	for _, f := range files {
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data)), Typeflag: tar.TypeReg}); err != nil {
			return err
		}
		if _, err := tw.Write(f.data); err != nil {
			return err
		}
	}
	return tw.Close()
}

func descriptor(mediaType string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

func blobPath(b []byte) string {
	return "blobs/sha256/" + fmt.Sprintf("%x", sha256.Sum256(b))
}

// busyboxLayer is a layer holding the busybox binary, a link to it for each
// of its applets, the files a shell expects (/etc/passwd, /tmp…), and
// files from the host.
func busyboxLayer(ctx context.Context, busybox string, files map[string]string) ([]byte, error) {
	bin, err := os.ReadFile(busybox)
	if err != nil {
		return nil, fmt.Errorf("the node's images are made from a static busybox (Debian's busybox-static): %w", err)
	}
	// A busybox linked to the C library would not run in an image that
	// has none.
	if f, err := elf.NewFile(bytes.NewReader(bin)); err != nil {
		return nil, fmt.Errorf("%s: %w", busybox, err)
	} else if slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP }) {
		return nil, fmt.Errorf("%s is linked dynamically: the node's images need a static busybox (Debian: apt install busybox-static)", busybox)
	}
	out, err := exec.CommandContext(ctx, busybox, "--list-full").Output()
	if err != nil {
		return nil, fmt.Errorf("%s --list-full: %w", busybox, err)
	}
	applets := strings.Fields(string(out))
	if len(applets) == 0 {
		return nil, errors.New(busybox + " lists no applets")
	}
	sort.Strings(applets)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	dirs := map[string]bool{}
	dir := func(name string, mode int64) error {
		if dirs[name] {
			return nil
		}
		dirs[name] = true
		return tw.WriteHeader(&tar.Header{Name: name + "/", Mode: mode, Typeflag: tar.TypeDir, ModTime: epoch})
	}
	for _, d := range []string{"bin", "dev", "etc", "proc", "root", "sbin", "sys", "usr", "usr/bin", "usr/sbin", "var", "var/www"} {
		if err := dir(d, 0o755); err != nil {
			return nil, err
		}
	}
	if err := dir("tmp", 0o1777); err != nil {
		return nil, err
	}
	if err := tw.WriteHeader(&tar.Header{Name: "bin/busybox", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: epoch}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(bin); err != nil {
		return nil, err
	}
	// Each applet where busybox installs it, and in /bin as busybox's
	// own images have them all (/bin/sysctl as well as /sbin/sysctl).
	links := map[string]bool{}
	for _, a := range applets {
		if a == "bin/busybox" || !strings.Contains(a, "/") {
			continue
		}
		links[a] = true
		links["bin/"+a[strings.LastIndex(a, "/")+1:]] = true
	}
	for _, l := range slices.Sorted(maps.Keys(links)) {
		if _, replaced := files[l]; replaced {
			continue // a file given in its place
		}
		if err := tw.WriteHeader(&tar.Header{Name: l, Linkname: "/bin/busybox", Mode: 0o777, Typeflag: tar.TypeSymlink, ModTime: epoch}); err != nil {
			return nil, err
		}
	}
	etc := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\n",
	}
	for _, name := range []string{"etc/group", "etc/passwd"} {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(etc[name])), Typeflag: tar.TypeReg, ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := io.WriteString(tw, etc[name]); err != nil {
			return nil, err
		}
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		b, err := os.ReadFile(files[name])
		if err != nil {
			return nil, err
		}
		info, err := os.Stat(files[name])
		if err != nil {
			return nil, err
		}
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: int64(info.Mode().Perm()), Size: int64(len(b)), Typeflag: tar.TypeReg, ModTime: epoch}); err != nil {
			return nil, err
		}
		if _, err := tw.Write(b); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
