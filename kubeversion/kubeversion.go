// Package kubeversion says which Kubernetes release Pontoon speaks for:
// that of the k8s.io modules the binary is built with (v0.33.x is 1.33.x).
// The API serves it as /version and the kubelet reports it on its Node;
// kubectl dispatchers pick their client by its minor.
package kubeversion

import (
	"runtime"
	"runtime/debug"
	"strings"

	"k8s.io/apimachinery/pkg/version"
)

// Info is the release, as /version answers it.
func Info() version.Info {
	v := "v0.0.0"
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, d := range bi.Deps {
			if d.Path == "k8s.io/apimachinery" {
				v = d.Version
			}
		}
	}
	parts := strings.SplitN(strings.TrimPrefix(v, "v0."), ".", 2)
	minor, patch := parts[0], "0"
	if len(parts) == 2 {
		patch = parts[1]
	}
	return version.Info{Major: "1", Minor: minor, GitVersion: "v1." + minor + "." + patch, Platform: runtime.GOOS + "/" + runtime.GOARCH}
}
