package node

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"

	"github.com/distribution/reference"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// dockerAuth is one entry of a .dockerconfigjson or .dockercfg.
type dockerAuth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
}

// registryCredential is a credential and the registry location it is for.
type registryCredential struct {
	location string
	auth     *runtimeapi.AuthConfig
}

// pullCredentials reads the pod's imagePullSecrets and returns the
// credentials whose location matches image, most specific first, as the
// kubelet's keyring orders them, and the secrets it could not use.
func (k *Kubelet) pullCredentials(ctx context.Context, pod *corev1.Pod, image string) ([]*runtimeapi.AuthConfig, []string) {
	var creds []registryCredential
	var missing []string
	for _, ref := range pod.Spec.ImagePullSecrets {
		s, err := k.cfg.Client.CoreV1().Secrets(pod.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
		var c []registryCredential
		if err == nil {
			c, err = secretCredentials(s)
		}
		if err != nil {
			missing = append(missing, "/"+ref.Name)
			continue
		}
		creds = append(creds, c...)
	}
	return matchCredentials(creds, image), missing
}

// secretCredentials are the credentials a docker config Secret holds.
func secretCredentials(s *corev1.Secret) ([]registryCredential, error) {
	auths := map[string]dockerAuth{}
	switch s.Type {
	case corev1.SecretTypeDockerConfigJson:
		var cfg struct {
			Auths map[string]dockerAuth `json:"auths"`
		}
		if err := json.Unmarshal(s.Data[corev1.DockerConfigJsonKey], &cfg); err != nil {
			return nil, err
		}
		auths = cfg.Auths
	case corev1.SecretTypeDockercfg:
		if err := json.Unmarshal(s.Data[corev1.DockerConfigKey], &auths); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("secret %s is of type %s, not a docker config", s.Name, s.Type)
	}
	var out []registryCredential
	for loc, a := range auths {
		user, pass := a.Username, a.Password
		if a.Auth != "" {
			if b, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
				if u, p, ok := strings.Cut(string(b), ":"); ok {
					user, pass = u, p
				}
			}
		}
		out = append(out, registryCredential{location: loc, auth: &runtimeapi.AuthConfig{Username: user, Password: pass}})
	}
	return out, nil
}

// matchCredentials are the credentials whose location matches image,
// longest (most specific) location first.
func matchCredentials(creds []registryCredential, image string) []*runtimeapi.AuthConfig {
	named, err := reference.ParseNormalizedNamed(image)
	if err != nil {
		return nil
	}
	domain, repo := reference.Domain(named), reference.Path(named)
	var matched []registryCredential
	for _, c := range creds {
		if locationMatches(c.location, domain, repo) {
			matched = append(matched, c)
		}
	}
	slices.SortStableFunc(matched, func(a, b registryCredential) int { return len(b.location) - len(a.location) })
	out := make([]*runtimeapi.AuthConfig, len(matched))
	for i, c := range matched {
		out[i] = c.auth
	}
	return out
}

// locationMatches reports whether a credential's location (a registry
// host, with a port, a path prefix and glob labels such as
// *.example.com) covers the repository repo on domain.
func locationMatches(location, domain, repo string) bool {
	loc := location
	for _, scheme := range []string{"https://", "http://"} {
		loc = strings.TrimPrefix(loc, scheme)
	}
	host, prefix, _ := strings.Cut(strings.TrimSuffix(loc, "/"), "/")
	if domain == "docker.io" && (host == "index.docker.io" || host == "registry-1.docker.io") {
		// Docker Hub's credentials carry its old names, and /v1/.
		host, prefix = "docker.io", ""
	}
	hostLabels, domainLabels := strings.Split(host, "."), strings.Split(domain, ".")
	if len(hostLabels) != len(domainLabels) {
		return false
	}
	for i := range hostLabels {
		if ok, _ := path.Match(hostLabels[i], domainLabels[i]); !ok {
			return false
		}
	}
	return prefix == "" || repo == prefix || strings.HasPrefix(repo, prefix+"/")
}
