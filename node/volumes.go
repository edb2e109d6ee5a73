package node

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"

	"github.com/pontoon-dev/pontoon/node/mounts"
)

// volume is a pod volume made ready on the node: the host path its
// mounts bind.
type volume struct {
	hostPath string
	readOnly bool
}

// errVolumeKind is a volume of a kind this node cannot provide: the pod
// waits rather than run without it.
var errVolumeKind = errors.New("this node does not provide volumes of this kind yet")

// podVolumeDir is where a pod's volumes live on the node.
func (k *Kubelet) podVolumeDir(pod *corev1.Pod) string {
	return filepath.Join(k.cfg.VolumeDir, string(pod.UID))
}

// setUpVolumes makes every volume of the pod ready (as the kubelet's
// volume manager mounts them before the containers start), and returns
// them by name. The contents of configMap, secret, downwardAPI and
// projected volumes are written at each pod start, and kept current by
// refreshVolumes.
func (k *Kubelet) setUpVolumes(ctx context.Context, pod *corev1.Pod, podIP string) (map[string]volume, error) {
	vols := map[string]volume{}
	for _, v := range pod.Spec.Volumes {
		dir := filepath.Join(k.podVolumeDir(pod), v.Name)
		vol, err := k.setUpVolume(ctx, pod, v, dir, podIP)
		if err != nil {
			return nil, fmt.Errorf("MountVolume.SetUp failed for volume %q : %w", v.Name, err)
		}
		vols[v.Name] = vol
	}
	return vols, nil
}

func (k *Kubelet) setUpVolume(ctx context.Context, pod *corev1.Pod, v corev1.Volume, dir, podIP string) (volume, error) {
	switch {
	case v.EmptyDir != nil:
		if err := os.MkdirAll(dir, 0o777); err != nil {
			return volume{}, err
		}
		if v.EmptyDir.Medium == corev1.StorageMediumMemory && !isMounted(dir) {
			opts := ""
			if l := v.EmptyDir.SizeLimit; l != nil && !l.IsZero() {
				opts = fmt.Sprintf("size=%d", l.Value())
			}
			if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, opts); err != nil {
				return volume{}, fmt.Errorf("mount tmpfs: %w", err)
			}
		}
		return volume{hostPath: dir}, os.Chmod(dir, 0o777)
	case v.HostPath != nil:
		return volume{hostPath: v.HostPath.Path}, hostPathReady(v.HostPath)
	case v.ConfigMap != nil, v.Secret != nil, v.DownwardAPI != nil, v.Projected != nil:
		files, err := k.volumeFiles(ctx, pod, v, podIP)
		if err != nil {
			return volume{}, err
		}
		if _, err = writeFiles(dir, files); err == nil {
			k.setWritten(pod.UID, v.Name, filesSum(files))
		}
		return volume{hostPath: dir, readOnly: true}, err
	}
	return volume{}, errVolumeKind
}

// refreshVolumes rewrites the configMap, secret, downwardAPI and projected
// volumes of a running pod whose sources changed, as the kubelet's
// periodic remount does; a volume whose source cannot be read keeps what
// it holds.
func (k *Kubelet) refreshVolumes(ctx context.Context, pod *corev1.Pod, podIP string) {
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap == nil && v.Secret == nil && v.DownwardAPI == nil && v.Projected == nil {
			continue
		}
		dir := filepath.Join(k.podVolumeDir(pod), v.Name)
		if _, err := os.Lstat(filepath.Join(dir, dataLink)); err != nil {
			// Not set up yet: the containers' start does it.
			continue
		}
		files, err := k.volumeFiles(ctx, pod, v, podIP)
		if err == nil {
			sum := filesSum(files)
			if k.written(pod.UID, v.Name) == sum {
				continue
			}
			var changed bool
			if changed, err = writeFiles(dir, files); changed {
				k.log.Info("volume updated", "pod", pod.Namespace+"/"+pod.Name, "volume", v.Name)
			}
			if err == nil {
				k.setWritten(pod.UID, v.Name, sum)
			}
		}
		if err != nil {
			k.cfg.Recorder.Eventf(pod, corev1.EventTypeWarning, "FailedMount", "MountVolume.SetUp failed for volume %q : %v", v.Name, err)
		}
	}
}

// filesSum is a digest of a volume's files, to tell a change without
// reading the volume back.
func filesSum(files map[string]file) [sha256.Size]byte {
	h := sha256.New()
	for _, path := range slices.Sorted(maps.Keys(files)) {
		f := files[path]
		fmt.Fprintf(h, "%d:%s %o %d:", len(path), path, f.mode, len(f.data))
		h.Write(f.data)
	}
	return [sha256.Size]byte(h.Sum(nil))
}

// written is the digest of what the pod's volume was last written with
// (zero when this agent has not written it since it started).
func (k *Kubelet) written(uid types.UID, volume string) [sha256.Size]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.volumeSums[uid][volume]
}

func (k *Kubelet) setWritten(uid types.UID, volume string, sum [sha256.Size]byte) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.volumeSums[uid] == nil {
		k.volumeSums[uid] = map[string][sha256.Size]byte{}
	}
	k.volumeSums[uid][volume] = sum
}

// isMounted reports whether dir is a mount point.
func isMounted(dir string) bool {
	var st, parent syscall.Stat_t
	if syscall.Stat(dir, &st) != nil || syscall.Stat(filepath.Dir(dir), &parent) != nil {
		return false
	}
	return st.Dev != parent.Dev
}

// hostPathReady checks a hostPath volume's path against its type,
// creating it when the type says so.
func hostPathReady(h *corev1.HostPathVolumeSource) error {
	t := corev1.HostPathUnset
	if h.Type != nil {
		t = *h.Type
	}
	st, err := os.Stat(h.Path)
	switch t {
	case corev1.HostPathUnset:
		return nil
	case corev1.HostPathDirectoryOrCreate:
		if errors.Is(err, os.ErrNotExist) {
			return os.MkdirAll(h.Path, 0o755)
		}
	case corev1.HostPathFileOrCreate:
		if errors.Is(err, os.ErrNotExist) {
			if err := os.MkdirAll(filepath.Dir(h.Path), 0o755); err != nil {
				return err
			}
			f, err := os.OpenFile(h.Path, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				return err
			}
			return f.Close()
		}
	}
	if err != nil {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", h.Path, t)
	}
	ok := true
	switch t {
	case corev1.HostPathDirectory, corev1.HostPathDirectoryOrCreate:
		ok = st.IsDir()
	case corev1.HostPathFile, corev1.HostPathFileOrCreate:
		ok = st.Mode().IsRegular()
	case corev1.HostPathSocket:
		ok = st.Mode()&os.ModeSocket != 0
	case corev1.HostPathCharDev:
		ok = st.Mode()&os.ModeCharDevice != 0
	case corev1.HostPathBlockDev:
		ok = st.Mode()&os.ModeDevice != 0 && st.Mode()&os.ModeCharDevice == 0
	}
	if !ok {
		return fmt.Errorf("hostPath type check failed: %s is not a %s", h.Path, t)
	}
	return nil
}

// file is one file of a volume made from API objects.
type file struct {
	data []byte
	mode os.FileMode
}

// volumeFiles are the files of a configMap, secret, downwardAPI or
// projected volume, by path.
func (k *Kubelet) volumeFiles(ctx context.Context, pod *corev1.Pod, v corev1.Volume, podIP string) (map[string]file, error) {
	files := map[string]file{}
	mode := func(m *int32, def *int32) os.FileMode {
		switch {
		case m != nil:
			return os.FileMode(*m)
		case def != nil:
			return os.FileMode(*def)
		}
		return 0o644
	}
	addKeys := func(data map[string][]byte, items []corev1.KeyToPath, def *int32, optional bool, what string) error {
		if items == nil {
			for key, d := range data {
				files[key] = file{d, mode(nil, def)}
			}
			return nil
		}
		for _, it := range items {
			d, ok := data[it.Key]
			if !ok {
				if optional {
					continue
				}
				return fmt.Errorf("configuration error: %s has no key %q", what, it.Key)
			}
			files[it.Path] = file{d, mode(it.Mode, def)}
		}
		return nil
	}
	fromSource := func(secret bool, name string, optional *bool, items []corev1.KeyToPath, def *int32) error {
		data, err := k.sourceData(ctx, pod.Namespace, secret, name, optional)
		if err != nil {
			return err
		}
		return addKeys(data, items, def, optional != nil && *optional, name)
	}
	downward := func(items []corev1.DownwardAPIVolumeFile, def *int32) error {
		for _, it := range items {
			var val string
			var err error
			switch {
			case it.FieldRef != nil:
				val, err = podField(pod, it.FieldRef.FieldPath, podIP, k.cfg.NodeIPs)
			case it.ResourceFieldRef != nil:
				c := containerNamed(pod, it.ResourceFieldRef.ContainerName)
				if c == nil {
					return fmt.Errorf("no container %q", it.ResourceFieldRef.ContainerName)
				}
				val, err = resourceField(c, pod, it.ResourceFieldRef, k.allocatable)
			}
			if err != nil {
				return err
			}
			files[it.Path] = file{[]byte(val), mode(it.Mode, def)}
		}
		return nil
	}
	switch {
	case v.ConfigMap != nil:
		return files, fromSource(false, v.ConfigMap.Name, v.ConfigMap.Optional, v.ConfigMap.Items, v.ConfigMap.DefaultMode)
	case v.Secret != nil:
		return files, fromSource(true, v.Secret.SecretName, v.Secret.Optional, v.Secret.Items, v.Secret.DefaultMode)
	case v.DownwardAPI != nil:
		return files, downward(v.DownwardAPI.Items, v.DownwardAPI.DefaultMode)
	}
	for _, src := range v.Projected.Sources {
		var err error
		switch {
		case src.ConfigMap != nil:
			err = fromSource(false, src.ConfigMap.Name, src.ConfigMap.Optional, src.ConfigMap.Items, v.Projected.DefaultMode)
		case src.Secret != nil:
			err = fromSource(true, src.Secret.Name, src.Secret.Optional, src.Secret.Items, v.Projected.DefaultMode)
		case src.DownwardAPI != nil:
			err = downward(src.DownwardAPI.Items, v.Projected.DefaultMode)
		default:
			err = errVolumeKind
		}
		if err != nil {
			return nil, err
		}
	}
	return files, nil
}

func containerNamed(pod *corev1.Pod, name string) *corev1.Container {
	for _, list := range [][]corev1.Container{pod.Spec.Containers, pod.Spec.InitContainers} {
		for i := range list {
			if list[i].Name == name {
				return &list[i]
			}
		}
	}
	return nil
}

// dataLink is the link in a configMap, secret, downwardAPI or projected
// volume to the directory that holds its files.
const dataLink = "..data"

// writeFiles writes a volume's files into dir as the kubelet's atomic
// writer does, so that a container with dir mounted sees a change whole
// and at once: the files are written to a new directory beside the
// current one, the link ..data is swapped to it with one rename, and each
// top-level name of the volume is a link through ..data. It reports
// whether anything changed.
func writeFiles(dir string, files map[string]file) (bool, error) {
	cleaned := map[string]file{}
	for path, f := range files {
		// Names starting with ".." are the writer's own (and "../"
		// leaves the volume), as the API's validation says.
		clean := filepath.Clean(path)
		if filepath.IsAbs(clean) || strings.HasPrefix(clean, "..") {
			return false, fmt.Errorf("path %q leaves the volume", path)
		}
		cleaned[clean] = f
	}
	files = cleaned
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	old, _ := os.Readlink(filepath.Join(dir, dataLink))
	if old != "" && sameFiles(filepath.Join(dir, old), files) {
		return false, nil
	}
	data, err := os.MkdirTemp(dir, "..data.")
	if err != nil {
		return false, err
	}
	if err := os.Chmod(data, 0o755); err != nil {
		return false, err
	}
	top := map[string]bool{}
	for _, path := range slices.Sorted(maps.Keys(files)) {
		top[strings.Split(path, string(filepath.Separator))[0]] = true
		full := filepath.Join(data, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(full, files[path].data, files[path].mode); err != nil {
			return false, err
		}
		if err := os.Chmod(full, files[path].mode); err != nil {
			return false, err
		}
	}
	tmpLink := filepath.Join(dir, dataLink+"_tmp")
	os.Remove(tmpLink)
	if err := os.Symlink(filepath.Base(data), tmpLink); err != nil {
		return false, err
	}
	if err := os.Rename(tmpLink, filepath.Join(dir, dataLink)); err != nil {
		return false, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if name := e.Name(); !strings.HasPrefix(name, "..") && !top[name] {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				return false, err
			}
		}
	}
	for name := range top {
		link := filepath.Join(dir, name)
		if target, err := os.Readlink(link); err == nil && target == filepath.Join(dataLink, name) {
			continue
		}
		if err := os.RemoveAll(link); err != nil {
			return false, err
		}
		if err := os.Symlink(filepath.Join(dataLink, name), link); err != nil {
			return false, err
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// sameFiles reports whether dir holds exactly files, with their modes.
func sameFiles(dir string, files map[string]file) bool {
	n := 0
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		want, ok := files[rel]
		info, ierr := d.Info()
		if !ok || ierr != nil || info.Mode().Perm() != want.mode.Perm() {
			return errors.New("differs")
		}
		got, rerr := os.ReadFile(path)
		if rerr != nil || string(got) != string(want.data) {
			return errors.New("differs")
		}
		n++
		return nil
	})
	return err == nil && n == len(files)
}

// containerMounts are the CRI mounts of a container's volumeMounts; a
// subPathExpr is expanded with the container's environment (lookup).
func containerMounts(c *corev1.Container, vols map[string]volume, lookup func(string) (string, bool)) ([]*runtimeapi.Mount, error) {
	var out []*runtimeapi.Mount
	for _, vm := range c.VolumeMounts {
		v, ok := vols[vm.Name]
		if !ok {
			return nil, fmt.Errorf("volume %q of mount %s is not in the pod", vm.Name, vm.MountPath)
		}
		host := v.hostPath
		sub := vm.SubPath
		if vm.SubPathExpr != "" {
			// As the kubelet expands it: a variable that is not set, or
			// empty, is an error.
			var missing []string
			sub = expand(vm.SubPathExpr, func(name string) (string, bool) {
				v, ok := lookup(name)
				if !ok || v == "" {
					missing = append(missing, name)
				}
				return v, true
			})
			if len(missing) > 0 {
				return nil, fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q: missing value for %s", vm.Name, c.Name, strings.Join(missing, ", "))
			}
			if filepath.IsAbs(sub) {
				return nil, fmt.Errorf("failed to prepare subPath for volumeMount %q of container %q: expanded subPath %q must not be an absolute path", vm.Name, c.Name, sub)
			}
		}
		if sub != "" {
			clean := filepath.Clean(sub)
			if filepath.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
				return nil, fmt.Errorf("subPath %q leaves volume %q", sub, vm.Name)
			}
			host = filepath.Join(host, clean)
			if _, err := os.Stat(host); errors.Is(err, os.ErrNotExist) {
				if err := os.MkdirAll(host, 0o755); err != nil {
					return nil, err
				}
			}
		}
		out = append(out, &runtimeapi.Mount{ContainerPath: vm.MountPath, HostPath: host, Readonly: vm.ReadOnly || v.readOnly})
	}
	return out, nil
}

// tearDownVolumes removes a pod's volumes from the node.
func (k *Kubelet) tearDownVolumes(uid string) error {
	k.mu.Lock()
	delete(k.volumeSums, types.UID(uid))
	k.mu.Unlock()
	dir := filepath.Join(k.cfg.VolumeDir, uid)
	if err := mounts.UnmountUnder(dir); err != nil {
		return err
	}
	return os.RemoveAll(dir)
}
