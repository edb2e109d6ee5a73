package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

func waitDefaultServiceAccount(t *testing.T, cs *kubernetes.Clientset, ns string) {
	t.Helper()
	cluster.Eventually(t, 15*time.Second, func() error {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{})
		return err
	})
}

// TestLeaderControllers checks the controllers the leader runs: every
// namespace gets its default service account, deleting a namespace deletes
// its content and then the namespace, and both keep working under the next
// leader after the leader is killed.
func TestLeaderControllers(t *testing.T) {
	c, w, r := kubeCluster(t, 81)
	ctx := context.Background()

	// deleteNamespace writes through w and reads through r.
	deleteNamespace := func(name string, w, r *cluster.Server) {
		t.Helper()
		wcs, rcs := w.Clientset(), r.Clientset()
		if _, err := wcs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitDefaultServiceAccount(t, rcs, name)
		for i := range 5 {
			if _, err := wcs.CoreV1().ConfigMaps(name).Create(ctx, configMap(fmt.Sprintf("cm-%d", i), nil), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := wcs.AppsV1().Deployments(name).Create(ctx, deployment("app", 1), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := rcs.CoreV1().Namespaces().Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := rcs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
		if err == nil && got.Status.Phase != corev1.NamespaceTerminating {
			t.Fatalf("a deleted namespace is %s", got.Status.Phase)
		}
		_, err = wcs.CoreV1().ConfigMaps(name).Create(ctx, configMap("late", nil), metav1.CreateOptions{})
		if err == nil {
			t.Fatal("created content in a terminating namespace")
		}
		cluster.Eventually(t, 15*time.Second, func() error {
			_, err := rcs.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
			if !apierrors.IsNotFound(err) {
				return fmt.Errorf("namespace %s still there (%v)", name, err)
			}
			return nil
		})
		l, err := rcs.CoreV1().ConfigMaps(name).List(ctx, metav1.ListOptions{})
		if err != nil || len(l.Items) != 0 {
			t.Fatalf("left in the deleted namespace: %v %d configmaps", err, len(l.Items))
		}
	}
	deleteNamespace("doomed", w, r)

	l := c.Leader(20 * time.Second)
	l.Kill()
	next := c.Leader(20 * time.Second)
	survivors := c.Others(l)
	deleteNamespace("doomed-after-failover", survivors[0], survivors[1])
	t.Logf("controllers moved from %s to %s", l.Name, next.Name)
}

// TestEventTTL checks that events go once --event-ttl has passed since
// their last write, as in kube-apiserver, and nothing else does.
func TestEventTTL(t *testing.T) {
	_, w, r := kubeCluster(t, 91, "--event-ttl", "2s")
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	ev := &corev1.Event{ObjectMeta: metav1.ObjectMeta{Name: "short-lived"},
		InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", Namespace: "default", Name: "kept"},
		Reason:         "Testing", Message: "expires", Type: corev1.EventTypeNormal, LastTimestamp: metav1.Now()}
	start := time.Now()
	if _, err := wcs.CoreV1().Events("default").Create(ctx, ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := wcs.CoreV1().ConfigMaps("default").Create(ctx, configMap("kept", nil), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	cluster.Eventually(t, 20*time.Second, func() error {
		_, err := rcs.CoreV1().Events("default").Get(ctx, "short-lived", metav1.GetOptions{})
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("the event is still there (%v)", err)
		}
		return nil
	})
	// Event times are kept to the second, so the TTL runs from the
	// second the event was written.
	if took := time.Since(start); took < time.Second {
		t.Fatalf("the event went after %v, before its 2 s TTL", took)
	}
	if _, err := rcs.CoreV1().ConfigMaps("default").Get(ctx, "kept", metav1.GetOptions{}); err != nil {
		t.Fatalf("the event expiry took a config map: %v", err)
	}
}
