package node

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// The kubelet's limits on a termination message: the file is read up to
// 4096 bytes; a message taken from the log is its last 80 lines, at most
// 2048 bytes.
const (
	maxMessageBytes = 4096
	maxLogLines     = 80
	maxLogBytes     = 2048
)

// terminationFile is where a container's termination message is kept on
// the node (it goes with the pod's volumes).
func (k *Kubelet) terminationFile(uid types.UID, name string, attempt uint32) string {
	// A volume name is a DNS label: ".termination" is never one.
	return filepath.Join(k.cfg.VolumeDir, string(uid), ".termination", fmt.Sprintf("%s-%d", name, attempt))
}

// terminationMount makes a container's termination message file and
// mounts it at its terminationMessagePath, as the kubelet does.
func (k *Kubelet) terminationMount(pod *corev1.Pod, c *corev1.Container, attempt uint32) (*runtimeapi.Mount, error) {
	if c.TerminationMessagePath == "" {
		return nil, nil
	}
	path := k.terminationFile(pod.UID, c.Name, attempt)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o666)
	if err != nil {
		return nil, err
	}
	f.Close()
	// Any user in the container may write it.
	if err := os.Chmod(path, 0o666); err != nil {
		return nil, err
	}
	return &runtimeapi.Mount{ContainerPath: c.TerminationMessagePath, HostPath: path}, nil
}

// terminationMessages reads the messages of the pod's exited containers:
// the file, or with FallbackToLogsOnError and an empty file after a
// failure, the end of the container's log.
func (k *Kubelet) terminationMessages(pod *corev1.Pod, o *observed) map[string]string {
	out := map[string]string{}
	for _, c := range o.containers {
		if c.State != runtimeapi.ContainerState_CONTAINER_EXITED {
			continue
		}
		msg := readLimited(k.terminationFile(pod.UID, c.Metadata.Name, c.Metadata.Attempt), maxMessageBytes)
		if msg == "" && c.ExitCode != 0 && c.Annotations[annotationTermMsgPolicy] == string(corev1.TerminationMessageFallbackToLogsOnError) {
			msg = logTail(c.LogPath)
		}
		if msg != "" {
			out[c.Id] = msg
		}
	}
	return out
}

func readLimited(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	b, _ := io.ReadAll(io.LimitReader(f, n))
	return string(b)
}

// logTail is the content of the last lines of a CRI log file.
func logTail(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if l := format(sc.Text(), logOptions{}); l != "" {
			lines = append(lines, l)
			if len(lines) > maxLogLines {
				lines = lines[1:]
			}
		}
	}
	s := strings.Join(lines, "")
	if len(s) > maxLogBytes {
		s = s[len(s)-maxLogBytes:]
	}
	return s
}
