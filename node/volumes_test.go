package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestWriteFilesSwapsWhole(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "vol")
	read := func(name string) string {
		t.Helper()
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "<" + err.Error() + ">"
		}
		return string(b)
	}
	if changed, err := writeFiles(dir, map[string]file{"a": {[]byte("1"), 0o644}, "d/b": {[]byte("2"), 0o600}}); err != nil || !changed {
		t.Fatalf("first write: %v %v", changed, err)
	}
	if read("a") != "1" || read("d/b") != "2" {
		t.Fatalf("after the first write: a=%s d/b=%s", read("a"), read("d/b"))
	}
	if changed, err := writeFiles(dir, map[string]file{"a": {[]byte("1"), 0o644}, "d/b": {[]byte("2"), 0o600}}); err != nil || changed {
		t.Fatalf("the same files again: changed %v, %v", changed, err)
	}
	if changed, err := writeFiles(dir, map[string]file{"a": {[]byte("3"), 0o644}, "c": {[]byte("4"), 0o644}}); err != nil || !changed {
		t.Fatalf("an update: %v %v", changed, err)
	}
	if read("a") != "3" || read("c") != "4" {
		t.Fatalf("after the update: a=%s c=%s", read("a"), read("c"))
	}
	if _, err := os.Lstat(filepath.Join(dir, "d")); !os.IsNotExist(err) {
		t.Fatalf("d, no longer in the volume: %v", err)
	}
	datas, _ := filepath.Glob(filepath.Join(dir, "..data.*"))
	if len(datas) != 1 {
		t.Fatalf("data dirs left: %v", datas)
	}
	if _, err := writeFiles(dir, map[string]file{"../x": {[]byte("5"), 0o644}}); err == nil {
		t.Fatal("a path out of the volume is written")
	}
}

func TestSubPathExpr(t *testing.T) {
	c := &corev1.Container{Name: "c", VolumeMounts: []corev1.VolumeMount{{Name: "v", MountPath: "/m", SubPathExpr: "$(DIR)/$(NAME)"}}}
	vols := map[string]volume{"v": {hostPath: t.TempDir()}}
	env := map[string]string{"DIR": "a", "NAME": "b"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	mounts, err := containerMounts(c, vols, lookup)
	if err != nil || !strings.HasSuffix(mounts[0].HostPath, "/a/b") {
		t.Fatalf("subPathExpr: %v %v", mounts, err)
	}
	env["DIR"] = ""
	if _, err := containerMounts(c, vols, lookup); err == nil || !strings.Contains(err.Error(), "missing value for DIR") {
		t.Fatalf("an expansion with an empty variable: %v", err)
	}
	env["DIR"] = "/abs"
	if _, err := containerMounts(c, vols, lookup); err == nil || !strings.Contains(err.Error(), "must not be an absolute path") {
		t.Fatalf("an expansion to an absolute path: %v", err)
	}
}
