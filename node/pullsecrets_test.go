package node

import (
	"encoding/base64"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestPullCredentials(t *testing.T) {
	cfg := `{"auths": {
		"registry.example.com": {"username": "a", "password": "1"},
		"registry.example.com/team": {"auth": "` + base64.StdEncoding.EncodeToString([]byte("b:2")) + `"},
		"*.corp.example": {"username": "c", "password": "3"},
		"https://index.docker.io/v1/": {"username": "d", "password": "4"},
		"127.0.0.1:5000": {"username": "e", "password": "5"}}}`
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(cfg)}}
	creds, err := secretCredentials(s)
	if err != nil {
		t.Fatal(err)
	}
	for image, want := range map[string]string{
		"registry.example.com/team/app:1": "b a",
		"registry.example.com/other/app":  "a",
		"registry.example.com:5000/app":   "",
		"git.corp.example/app":            "c",
		"a.b.corp.example/app":            "",
		"busybox":                         "d",
		"127.0.0.1:5000/private/app:1":    "e",
		"127.0.0.1:5001/private/app:1":    "",
	} {
		got := ""
		for _, a := range matchCredentials(creds, image) {
			if got != "" {
				got += " "
			}
			got += a.Username
		}
		if got != want {
			t.Errorf("%s: credentials of %q, want %q", image, got, want)
		}
	}
	if _, err := secretCredentials(&corev1.Secret{Type: corev1.SecretTypeOpaque}); err == nil {
		t.Error("an Opaque secret gives credentials")
	}
}
