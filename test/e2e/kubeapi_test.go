package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/pontoon-dev/pontoon/test/cluster"
)

// kubeCluster starts a 3-server cluster and returns it with clients of
// two different servers: writes go through one, reads through the other.
func kubeCluster(t *testing.T, baseIP int, args ...string) (c *cluster.Cluster, w, r *cluster.Server) {
	c = newCluster(t, 3, baseIP, args...)
	c.Start()
	l := c.Leader(20 * time.Second)
	w, r = c.Others(l)[0], c.Others(l)[1]
	waitSystemObjects(t, r)
	return c, w, r
}

// waitSystemObjects waits until the leader has created the namespaces
// and priority classes every cluster has, and the namespaces' default
// service accounts.
func waitSystemObjects(t *testing.T, s *cluster.Server) {
	t.Helper()
	cs := s.Clientset()
	cluster.Eventually(t, 15*time.Second, func() error {
		for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease"} {
			if _, err := cs.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{}); err != nil {
				return err
			}
		}
		for _, pc := range []string{"system-cluster-critical", "system-node-critical"} {
			if _, err := cs.SchedulingV1().PriorityClasses().Get(context.Background(), pc, metav1.GetOptions{}); err != nil {
				return err
			}
		}
		// The kubernetes Service, its Endpoints and EndpointSlice.
		if _, err := cs.CoreV1().Services("default").Get(context.Background(), "kubernetes", metav1.GetOptions{}); err != nil {
			return err
		}
		if _, err := cs.CoreV1().Endpoints("default").Get(context.Background(), "kubernetes", metav1.GetOptions{}); err != nil {
			return err
		}
		if _, err := cs.DiscoveryV1().EndpointSlices("default").Get(context.Background(), "kubernetes", metav1.GetOptions{}); err != nil {
			return err
		}
		// The default ServiceCIDR.
		if _, err := cs.NetworkingV1().ServiceCIDRs().Get(context.Background(), "kubernetes", metav1.GetOptions{}); err != nil {
			return err
		}
		// The kube-dns Service, which the agents serve.
		_, err := cs.CoreV1().Services("kube-system").Get(context.Background(), "kube-dns", metav1.GetOptions{})
		return err
	})
}

func protobufClientset(t *testing.T, s *cluster.Server) *kubernetes.Clientset {
	cfg := s.RESTConfig()
	cfg.ContentType = runtime.ContentTypeProtobuf
	cfg.AcceptContentTypes = runtime.ContentTypeProtobuf
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func configMap(name string, data map[string]string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"test": "yes"}}, Data: data}
}

func wantReason(t *testing.T, err error, code int32, reason metav1.StatusReason) {
	t.Helper()
	var se apierrors.APIStatus
	if err == nil || !errors.As(err, &se) || se.Status().Code != code || se.Status().Reason != reason {
		t.Fatalf("got %v, want %d %s", err, code, reason)
	}
}

// raw sends a request to s and returns the status, headers and body.
func raw(t *testing.T, s *cluster.Server, method, path, contentType, accept, body string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, s.API()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := cluster.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

func TestKubeAPI(t *testing.T) {
	c, w, r := kubeCluster(t, 51, "--watch-history", "300")
	ctx := context.Background()
	wcs, rcs := w.Clientset(), r.Clientset()
	ns := "default"

	t.Run("discovery", func(t *testing.T) {
		groups, lists, err := rcs.Discovery().ServerGroupsAndResources()
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, g := range groups {
			names = append(names, g.Name)
		}
		for _, g := range []string{"", "apps", "batch", "coordination.k8s.io", "discovery.k8s.io"} {
			if !slices.Contains(names, g) {
				t.Errorf("group %q missing from %v", g, names)
			}
		}
		found := map[string]metav1.APIResource{}
		for _, l := range lists {
			for _, res := range l.APIResources {
				found[l.GroupVersion+"/"+res.Name] = res
			}
		}
		for _, want := range []string{"apps/v1/deployments/scale", "v1/pods/binding", "v1/pods/eviction", "v1/pods/status", "batch/v1/cronjobs", "discovery.k8s.io/v1/endpointslices", "coordination.k8s.io/v1/leases"} {
			if _, ok := found[want]; !ok {
				t.Errorf("%s missing from discovery", want)
			}
		}
		if p := found["v1/pods"]; !slices.Contains(p.Categories, "all") || !slices.Contains(p.ShortNames, "po") || !p.Namespaced {
			t.Errorf("pods in discovery: %+v", p)
		}
		if s := found["apps/v1/deployments/scale"]; s.Kind != "Scale" || s.Group != "autoscaling" {
			t.Errorf("deployments/scale: %+v", s)
		}
		// Legacy discovery, for clients that do not ask for aggregated.
		code, hdr, body := raw(t, r, "GET", "/apis", "", "application/json", "")
		if code != 200 || !strings.Contains(body, `"APIGroupList"`) || hdr.Get("Content-Type") != "application/json" {
			t.Errorf("legacy /apis: %d %s %s", code, hdr.Get("Content-Type"), body)
		}
		code, hdr, _ = raw(t, r, "GET", "/apis", "", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json", "")
		if code != 200 || !strings.Contains(hdr.Get("Content-Type"), "as=APIGroupDiscoveryList") {
			t.Errorf("aggregated /apis: %d %s", code, hdr.Get("Content-Type"))
		}
		// One group's document, as the EndpointSlice conformance test
		// reads /apis/discovery.k8s.io.
		if code, _, body := raw(t, r, "GET", "/apis/discovery.k8s.io", "", "application/json", ""); code != 200 || !strings.Contains(body, `"kind":"APIGroup"`) || !strings.Contains(body, `"discovery.k8s.io/v1"`) {
			t.Errorf("/apis/discovery.k8s.io: %d %s", code, body)
		}
		if code, _, _ := raw(t, r, "GET", "/apis/nope.example.com", "", "application/json", ""); code != 404 {
			t.Errorf("/apis/nope.example.com: %d", code)
		}
	})

	t.Run("openapi", func(t *testing.T) {
		code, _, body := raw(t, r, "GET", "/openapi/v3", "", "application/json", "")
		var index struct {
			Paths map[string]struct {
				URL string `json:"serverRelativeURL"`
			} `json:"paths"`
		}
		if err := json.Unmarshal([]byte(body), &index); code != 200 || err != nil || index.Paths["apis/apps/v1"].URL == "" {
			t.Fatalf("/openapi/v3: %d %v %s", code, err, body)
		}
		code, _, body = raw(t, r, "GET", index.Paths["apis/apps/v1"].URL, "", "application/json", "")
		if code != 200 || !strings.Contains(body, `"fieldValidation"`) || !strings.Contains(body, `"io.k8s.api.apps.v1.Deployment"`) {
			t.Fatalf("apps/v1 document: %d, %d bytes", code, len(body))
		}
		code, _, body = raw(t, r, "GET", "/openapi/v2", "", "application/json", "")
		if code != 200 || !strings.Contains(body, `"swagger": "2.0"`) {
			t.Fatalf("/openapi/v2: %d, %.200s", code, body)
		}
	})

	t.Run("protobuf and JSON", func(t *testing.T) {
		pw, pr := protobufClientset(t, w), protobufClientset(t, r)
		cm, err := pw.CoreV1().ConfigMaps(ns).Create(ctx, configMap("proto", map[string]string{"k": "v"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got, err := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "proto", metav1.GetOptions{})
		if err != nil || got.Data["k"] != "v" || got.ResourceVersion != cm.ResourceVersion || got.UID != cm.UID {
			t.Fatalf("JSON read of a Protobuf write: %v %+v", err, got)
		}
		l, err := pr.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "test=yes"})
		if err != nil || len(l.Items) == 0 {
			t.Fatalf("Protobuf list: %v", err)
		}
		// Without a selector, a Protobuf list is sent from the stored
		// bytes: it must decode to what the JSON list says.
		pl, err := pr.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		jl, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ResourceVersion: pl.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
		if err != nil || !apiequality.Semantic.DeepEqual(pl.Items, jl.Items) || pl.ResourceVersion != jl.ResourceVersion {
			t.Fatalf("Protobuf and JSON lists differ (%v):\n%+v\n%+v", err, pl.Items, jl.Items)
		}
		code, hdr, body := raw(t, r, "GET", "/api/v1/namespaces/default/configmaps/proto", "", "application/yaml", "")
		if code != 200 || hdr.Get("Content-Type") != "application/yaml" || !strings.Contains(body, "kind: ConfigMap") {
			t.Fatalf("YAML get: %d %s", code, body)
		}
		code, _, body = raw(t, w, "POST", "/api/v1/namespaces/default/configmaps", "application/yaml", "", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: from-yaml}\ndata: {a: b}\n")
		if code != 201 {
			t.Fatalf("YAML create: %d %s", code, body)
		}
	})

	t.Run("tables", func(t *testing.T) {
		if _, err := wcs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "tabled"},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		code, _, body := raw(t, r, "GET", "/api/v1/namespaces/default/pods", "", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json", "")
		var tbl metav1.Table
		if err := json.Unmarshal([]byte(body), &tbl); code != 200 || err != nil {
			t.Fatalf("table: %d %v %s", code, err, body)
		}
		var cols []string
		for _, c := range tbl.ColumnDefinitions {
			cols = append(cols, c.Name)
		}
		if want := "Name Ready Status Restarts Age IP Node Nominated Node Readiness Gates"; strings.Join(cols, " ") != want {
			t.Fatalf("pod columns %q, want %q", strings.Join(cols, " "), want)
		}
		if len(tbl.Rows) != 1 || tbl.Rows[0].Cells[1] != "0/1" || tbl.Rows[0].Cells[2] != "Pending" {
			t.Fatalf("rows: %+v", tbl.Rows)
		}
		// The columns kube-apiserver prints for the other kinds kubectl
		// users look at most.
		for path, want := range map[string]string{
			"/apis/apps/v1/namespaces/default/deployments": "Name Ready Up-to-date Available Age Containers Images Selector",
			"/apis/apps/v1/namespaces/default/replicasets": "Name Desired Current Ready Age Containers Images Selector",
			"/api/v1/namespaces/default/services":          "Name Type Cluster-IP External-IP Port(s) Age Selector",
			"/api/v1/nodes":                                "Name Status Roles Age Version Internal-IP External-IP OS-Image Kernel-Version Container-Runtime",
			"/api/v1/namespaces":                           "Name Status Age",
			"/apis/batch/v1/namespaces/default/jobs":       "Name Status Completions Duration Age Containers Images Selector",
			"/api/v1/namespaces/default/events":            "Last Seen Type Reason Object Subobject Source Message First Seen Count Name",
		} {
			_, _, body := raw(t, r, "GET", path, "", "application/json;as=Table;v=v1;g=meta.k8s.io", "")
			var tbl metav1.Table
			if err := json.Unmarshal([]byte(body), &tbl); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			var cols []string
			for _, c := range tbl.ColumnDefinitions {
				cols = append(cols, c.Name)
			}
			if got := strings.Join(cols, " "); got != want {
				t.Errorf("%s columns:\n%s\nwant\n%s", path, got, want)
			}
		}
		code, _, body = raw(t, r, "GET", "/api/v1/namespaces/default/pods", "", "application/json;as=PartialObjectMetadataList;v=v1;g=meta.k8s.io", "")
		if code != 200 || !strings.Contains(body, `"kind":"PartialObjectMetadataList"`) || strings.Contains(body, `"spec"`) {
			t.Fatalf("metadata list: %d %s", code, body)
		}
		code, _, _ = raw(t, r, "GET", "/api/v1/namespaces/default/pods", "", "text/html", "")
		if code != http.StatusNotAcceptable {
			t.Fatalf("text/html: %d, want 406", code)
		}
	})

	t.Run("errors", func(t *testing.T) {
		_, err := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "missing", metav1.GetOptions{})
		wantReason(t, err, 404, metav1.StatusReasonNotFound)
		_, err = wcs.CoreV1().ConfigMaps(ns).Create(ctx, configMap("proto", nil), metav1.CreateOptions{})
		wantReason(t, err, 409, metav1.StatusReasonAlreadyExists)
		cm, _ := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "proto", metav1.GetOptions{})
		stale := cm.DeepCopy()
		cm.Data["k"] = "v2"
		if _, err := wcs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		stale.Data["k"] = "lost"
		_, err = wcs.CoreV1().ConfigMaps(ns).Update(ctx, stale, metav1.UpdateOptions{})
		wantReason(t, err, 409, metav1.StatusReasonConflict)
		_, err = wcs.CoreV1().ConfigMaps(ns).Create(ctx, configMap("Not_A_Name", nil), metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		if se := err.(apierrors.APIStatus).Status(); len(se.Details.Causes) == 0 || se.Details.Causes[0].Field != "metadata.name" {
			t.Fatalf("invalid name causes: %+v", se.Details)
		}
		// A ConfigMap holds at most 1 MiB of data; any object at most 1.5 MiB.
		_, err = wcs.CoreV1().ConfigMaps(ns).Create(ctx, configMap("big", map[string]string{"b": strings.Repeat("x", 2<<20)}), metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		_, err = wcs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "big"}, Spec: corev1.PodSpec{
			Containers: []corev1.Container{{Name: "c", Image: "busybox", Args: []string{strings.Repeat("x", 2<<20)}}}}}, metav1.CreateOptions{})
		wantReason(t, err, 413, metav1.StatusReasonRequestEntityTooLarge)
		for _, tc := range []struct {
			ct, body string
			code     int
		}{
			{"text/plain", "hello", 415},
			{"application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"`, 400},
			{"application/json", `{"apiVersion":"v1","kind":"Secret","metadata":{"name":"x"}}`, 400},
			{"application/vnd.kubernetes.protobuf", "k8s\x00garbage", 400},
			{"application/yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: [}\n", 400},
		} {
			code, _, body := raw(t, w, "POST", "/api/v1/namespaces/default/configmaps", tc.ct, "", tc.body)
			if code != tc.code || !strings.Contains(body, `"kind":"Status"`) {
				t.Errorf("POST %s %q: %d %s, want %d with a Status", tc.ct, tc.body, code, body, tc.code)
			}
		}
		if _, err := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "x", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a refused create stored something: %v", err)
		}
		code, hdr, body := raw(t, w, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Strict", "application/json", "",
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"strict"},"bogus":1}`)
		if code != 400 || !strings.Contains(body, `unknown field \"bogus\"`) {
			t.Fatalf("Strict: %d %s", code, body)
		}
		code, hdr, _ = raw(t, w, "POST", "/api/v1/namespaces/default/configmaps?fieldValidation=Warn", "application/json", "",
			`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"warned"},"bogus":1}`)
		if code != 201 || !strings.Contains(hdr.Get("Warning"), `unknown field`) {
			t.Fatalf("Warn: %d %v", code, hdr)
		}
		_, err = wcs.CoreV1().ConfigMaps("nosuchns").Create(ctx, configMap("orphan", nil), metav1.CreateOptions{})
		wantReason(t, err, 404, metav1.StatusReasonNotFound)
		// Paths the API does not serve get kube-apiserver's answer, not a
		// missing object of some internal kind.
		for _, path := range []string{"/nosuch", "/api/v1/nosuch", "/apis/nosuch.io/v1", "/apis/apps/v1/namespaces/default/nosuch",
			"/api/v1/namespaces/default/nodes", "/api/v1/namespaces/default/configmaps/proto/nosuch"} {
			code, _, body := raw(t, r, "GET", path, "", "", "")
			if code != 404 || !strings.Contains(body, `"reason":"NotFound"`) || !strings.Contains(body, "the server could not find the requested resource") {
				t.Errorf("GET %s: %d %s, want 404 NotFound: the server could not find the requested resource", path, code, body)
			}
		}
	})

	t.Run("reviews", func(t *testing.T) {
		sar, err := wcs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "create", Resource: "pods"}}}, metav1.CreateOptions{})
		if err != nil || !sar.Status.Allowed || sar.Spec.ResourceAttributes == nil || sar.Spec.ResourceAttributes.Resource != "pods" {
			t.Fatalf("access review: %v %+v", err, sar)
		}
		_, err = wcs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		if se := err.(apierrors.APIStatus).Status(); len(se.Details.Causes) == 0 || se.Details.Causes[0].Field != "spec.resourceAttributes" {
			t.Fatalf("empty access review causes: %+v", se.Details)
		}
		_, err = wcs.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authorizationv1.SelfSubjectAccessReview{ObjectMeta: metav1.ObjectMeta{Name: "x"},
			Spec: authorizationv1.SelfSubjectAccessReviewSpec{NonResourceAttributes: &authorizationv1.NonResourceAttributes{Path: "/version", Verb: "get"}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		rules, err := rcs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: ns}}, metav1.CreateOptions{})
		if err != nil || len(rules.Status.ResourceRules) != 1 || !slices.Equal(rules.Status.ResourceRules[0].Verbs, []string{"*"}) {
			t.Fatalf("rules review: %v %+v", err, rules)
		}
		_, err = rcs.AuthorizationV1().SelfSubjectRulesReviews().Create(ctx, &authorizationv1.SelfSubjectRulesReview{}, metav1.CreateOptions{})
		wantReason(t, err, 400, metav1.StatusReasonBadRequest)
		self, err := rcs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
		if err != nil || self.Status.UserInfo.Username != "system:anonymous" {
			t.Fatalf("self review: %v %+v", err, self)
		}
		// Reviews are answered, never stored: there is nothing to read.
		code, _, body := raw(t, r, "GET", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "", "", "")
		if code != http.StatusMethodNotAllowed || !strings.Contains(body, `"reason":"MethodNotAllowed"`) {
			t.Fatalf("GET of access reviews: %d %s", code, body)
		}
		_, lists, err := rcs.Discovery().ServerGroupsAndResources()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lists {
			for _, res := range l.APIResources {
				if strings.HasSuffix(res.Name, "reviews") && !slices.Equal(res.Verbs, []string{"create"}) {
					t.Errorf("%s/%s in discovery with verbs %v, want create only", l.GroupVersion, res.Name, res.Verbs)
				}
			}
		}
	})

	t.Run("metadata and status", func(t *testing.T) {
		d := deployment("meta", 2)
		d.GenerateName, d.Name = "meta-", ""
		got, err := wcs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(got.Name, "meta-") || len(got.Name) != 10 || got.UID == "" || got.CreationTimestamp.IsZero() || got.Generation != 1 {
			t.Fatalf("server-set metadata: %+v", got.ObjectMeta)
		}
		// The deployment controller writes too: each update starts from
		// a fresh read.
		update := func(change func(*appsv1.Deployment), sub ...string) (*appsv1.Deployment, int64) {
			t.Helper()
			var out *appsv1.Deployment
			var status int64
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
				cur, err := wcs.AppsV1().Deployments(ns).Get(ctx, got.Name, metav1.GetOptions{})
				if err != nil {
					return err
				}
				status = int64(cur.Status.Replicas)
				change(cur)
				if len(sub) > 0 {
					out, err = wcs.AppsV1().Deployments(ns).UpdateStatus(ctx, cur, metav1.UpdateOptions{})
				} else {
					out, err = wcs.AppsV1().Deployments(ns).Update(ctx, cur, metav1.UpdateOptions{})
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return out, status
		}
		got, _ = update(func(d *appsv1.Deployment) { d.Labels = map[string]string{"x": "y"} })
		if got.Generation != 1 {
			t.Fatalf("a label change bumped generation to %d", got.Generation)
		}
		got, before := update(func(d *appsv1.Deployment) { d.Spec.Replicas = ptr.To[int32](3); d.Status.Replicas = 99 })
		if got.Generation != 2 || int64(got.Status.Replicas) != before {
			t.Fatalf("spec update: generation %d, status.replicas %d (want 2, %d)", got.Generation, got.Status.Replicas, before)
		}
		// A status update keeps the spec, and changes to the metadata
		// but a Deployment's labels, as kube-apiserver's.
		got, _ = update(func(d *appsv1.Deployment) {
			d.Status.Replicas, d.Spec.Replicas = 3, ptr.To[int32](10)
			d.Labels, d.Annotations = map[string]string{"x": "z"}, map[string]string{"patched": "status"}
		}, "status")
		if got.Status.Replicas != 3 || *got.Spec.Replicas != 3 || got.Generation != 2 || got.Labels["x"] != "y" || got.Annotations["patched"] != "status" {
			t.Fatalf("status update: %+v", got)
		}
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			s, err := wcs.AppsV1().Deployments(ns).GetScale(ctx, got.Name, metav1.GetOptions{})
			if err != nil || s.Spec.Replicas != 3 {
				t.Fatalf("scale: %v %+v", err, s)
			}
			s.Spec.Replicas = 4
			_, err = wcs.AppsV1().Deployments(ns).UpdateScale(ctx, got.Name, s, metav1.UpdateOptions{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := rcs.AppsV1().Deployments(ns).Get(ctx, got.Name, metav1.GetOptions{}); *got.Spec.Replicas != 4 {
			t.Fatalf("scale did not set replicas: %d", *got.Spec.Replicas)
		}

		// An update that changes nothing stores nothing and keeps the
		// resourceVersion, as in kube-apiserver.
		cm, err := wcs.CoreV1().ConfigMaps(ns).Create(ctx, configMap("noop", map[string]string{"k": "v"}), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if same, err := wcs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil || same.ResourceVersion != cm.ResourceVersion {
			t.Fatalf("no-op update: %v, resourceVersion %s -> %s", err, cm.ResourceVersion, same.ResourceVersion)
		}
		cm.Data["k"] = "w"
		if changed, err := wcs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); err != nil || changed.ResourceVersion == cm.ResourceVersion {
			t.Fatalf("update: %v, resourceVersion %s -> %s", err, cm.ResourceVersion, changed.ResourceVersion)
		}
		// A patch naming another uid (a namesake's) changes nothing: the
		// uid is immutable, which controllers' adoption patches rely on.
		patch := []byte(`{"metadata":{"uid":"00000000-0000-0000-0000-000000000000"},"data":{"k":"x"}}`)
		_, err = wcs.CoreV1().ConfigMaps(ns).Patch(ctx, "noop", types.StrategicMergePatchType, patch, metav1.PatchOptions{})
		if got, _ := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "noop", metav1.GetOptions{}); !apierrors.IsInvalid(err) || got.Data["k"] != "w" {
			t.Fatalf("a patch with another uid: %v, data now %v", err, got.Data)
		}
	})

	t.Run("patches", func(t *testing.T) {
		d, err := wcs.AppsV1().Deployments(ns).Create(ctx, deployment("patched", 1), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []struct {
			pt   types.PatchType
			body string
		}{
			{types.StrategicMergePatchType, `{"spec":{"template":{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}}`},
			{types.MergePatchType, `{"metadata":{"labels":{"merge":"yes"}}}`},
			{types.JSONPatchType, `[{"op":"replace","path":"/spec/replicas","value":3}]`},
		} {
			if _, err := wcs.AppsV1().Deployments(ns).Patch(ctx, d.Name, p.pt, []byte(p.body), metav1.PatchOptions{}); err != nil {
				t.Fatalf("%s: %v", p.pt, err)
			}
		}
		got, _ := rcs.AppsV1().Deployments(ns).Get(ctx, d.Name, metav1.GetOptions{})
		if len(got.Spec.Template.Spec.Containers) != 1 || got.Spec.Template.Spec.Containers[0].Image != "busybox:2" || got.Labels["merge"] != "yes" || *got.Spec.Replicas != 3 {
			t.Fatalf("after patches: %+v", got.Spec)
		}
		apply := `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"patched"},"spec":{"replicas":5,"selector":{"matchLabels":{"app":"patched"}},"template":{"metadata":{"labels":{"app":"patched"}},"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}}}`
		_, err = wcs.AppsV1().Deployments(ns).Patch(ctx, d.Name, types.ApplyPatchType, []byte(apply), metav1.PatchOptions{FieldManager: "tool"})
		wantReason(t, err, 409, metav1.StatusReasonConflict)
		if causes := err.(apierrors.APIStatus).Status().Details.Causes; len(causes) == 0 || causes[0].Field != ".spec.replicas" {
			t.Fatalf("apply conflict causes: %+v", causes)
		}
		got, err = wcs.AppsV1().Deployments(ns).Patch(ctx, d.Name, types.ApplyPatchType, []byte(apply), metav1.PatchOptions{FieldManager: "tool", Force: ptr.To(true)})
		if err != nil || *got.Spec.Replicas != 5 {
			t.Fatalf("forced apply: %v", err)
		}
		managers := map[string]bool{}
		for _, m := range got.ManagedFields {
			managers[m.Manager+"/"+string(m.Operation)] = true
		}
		if !managers["tool/Apply"] {
			t.Fatalf("managedFields: %v", managers)
		}
		// Apply creates what does not exist.
		created, err := wcs.AppsV1().Deployments(ns).Patch(ctx, "applied", types.ApplyPatchType,
			[]byte(strings.Replace(strings.Replace(apply, `"name":"patched"`, `"name":"applied"`, 1), "patched", "applied", -1)), metav1.PatchOptions{FieldManager: "tool"})
		if err != nil || created.UID == "" {
			t.Fatalf("apply create: %v", err)
		}
	})

	t.Run("selectors and pages", func(t *testing.T) {
		for i := range 25 {
			cm := configMap(fmt.Sprintf("page-%02d", i), map[string]string{"i": fmt.Sprint(i)})
			cm.Labels["parity"] = []string{"even", "odd"}[i%2]
			if _, err := wcs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		l, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "parity in (odd),test=yes"})
		if err != nil || len(l.Items) != 12 {
			t.Fatalf("set-based selector: %v, %d items", err, len(l.Items))
		}
		l, err = rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{FieldSelector: "metadata.name=page-07"})
		if err != nil || len(l.Items) != 1 {
			t.Fatalf("field selector: %v, %d items", err, len(l.Items))
		}
		_, err = rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=x"})
		wantReason(t, err, 400, metav1.StatusReasonBadRequest)
		for _, obj := range []string{"page-01", "page-02"} {
			if _, err := wcs.CoreV1().Events(ns).Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "ev-"},
				InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", Namespace: ns, Name: obj}, Reason: "Tested", Type: corev1.EventTypeNormal}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		evs, err := rcs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.kind=ConfigMap,involvedObject.name=page-02"})
		if err != nil || len(evs.Items) != 1 || evs.Items[0].InvolvedObject.Name != "page-02" {
			t.Fatalf("events by involvedObject: %v %+v", err, evs)
		}

		// Pages over one revision: a delete between pages does not show.
		first, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "parity", Limit: 10})
		if err != nil || len(first.Items) != 10 || first.Continue == "" {
			t.Fatalf("first page: %v %d %q", err, len(first.Items), first.Continue)
		}
		if err := wcs.CoreV1().ConfigMaps(ns).Delete(ctx, "page-20", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		names := []string{}
		for _, cm := range first.Items {
			names = append(names, cm.Name)
		}
		token := first.Continue
		for token != "" {
			page, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "parity", Limit: 10, Continue: token})
			if err != nil {
				t.Fatal(err)
			}
			if page.ResourceVersion != first.ResourceVersion {
				t.Fatalf("page at %s, first at %s", page.ResourceVersion, first.ResourceVersion)
			}
			for _, cm := range page.Items {
				names = append(names, cm.Name)
			}
			token = page.Continue
		}
		if len(names) != 25 || !slices.Contains(names, "page-20") || !slices.IsSorted(names) {
			t.Fatalf("paged list: %v", names)
		}
		// An exact list at the older revision shows the deleted object;
		// a list at "0" is served locally at once.
		old, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "parity", ResourceVersion: first.ResourceVersion, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
		if err != nil || len(old.Items) != 25 {
			t.Fatalf("exact list: %v %d", err, len(old.Items))
		}
		if _, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{ResourceVersion: "0"}); err != nil {
			t.Fatal(err)
		}
		if err := wcs.CoreV1().ConfigMaps(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{LabelSelector: "parity=even"}); err != nil {
			t.Fatal(err)
		}
		if l, _ := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "parity"}); len(l.Items) != 12 {
			t.Fatalf("deletecollection left %d", len(l.Items))
		}
	})

	t.Run("pods", func(t *testing.T) {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "bound"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}
		created, err := wcs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{FieldManager: "creator"})
		if err != nil {
			t.Fatal(err)
		}
		// Its creator owns what it sent and the defaults, not the status
		// the server gives every new pod (kube-apiserver's reset fields).
		if len(created.ManagedFields) != 1 || created.ManagedFields[0].Manager != "creator" ||
			!strings.Contains(string(created.ManagedFields[0].FieldsV1.Raw), `"f:containers"`) || strings.Contains(string(created.ManagedFields[0].FieldsV1.Raw), `"f:status"`) {
			t.Fatalf("a new pod's managedFields: %+v", created.ManagedFields)
		}
		// Nor the default tolerations, which admission adds after the
		// field manager.
		if len(created.Spec.Tolerations) != 2 || strings.Contains(string(created.ManagedFields[0].FieldsV1.Raw), `"f:tolerations"`) {
			t.Fatalf("a new pod's tolerations %+v, owned: %s", created.Spec.Tolerations, created.ManagedFields[0].FieldsV1.Raw)
		}
		// Nor its service account: admission gives it the namespace's
		// default, under both of the field's names.
		if created.Spec.ServiceAccountName != "default" || created.Spec.DeprecatedServiceAccount != "default" ||
			strings.Contains(string(created.ManagedFields[0].FieldsV1.Raw), `"f:serviceAccountName"`) {
			t.Fatalf("a new pod's service account %q (serviceAccount %q), owned: %s", created.Spec.ServiceAccountName, created.Spec.DeprecatedServiceAccount, created.ManagedFields[0].FieldsV1.Raw)
		}
		// A pod whose service account does not exist is refused, as
		// kube-apiserver's ServiceAccount admission refuses it.
		orphan := pod.DeepCopy()
		orphan.Name, orphan.Spec.ServiceAccountName = "no-account", "nosuch"
		_, err = wcs.CoreV1().Pods(ns).Create(ctx, orphan, metav1.CreateOptions{})
		wantReason(t, err, 403, metav1.StatusReasonForbidden)
		if !strings.Contains(err.Error(), `error looking up service account default/nosuch: serviceaccount "nosuch" not found`) {
			t.Fatalf("a pod with a missing service account: %v", err)
		}
		if _, err := rcs.CoreV1().Pods(ns).Get(ctx, "no-account", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("a refused pod was stored: %v", err)
		}
		// A binding to something that is not a node, or to a name no node
		// can have, is refused with its causes.
		for target, cause := range map[corev1.ObjectReference]string{
			{Kind: "Pod", Name: "n1"}:     "target.kind",
			{Kind: "Node", Name: "Bad_1"}: "target.name",
			{Kind: "Node"}:                "target.name",
		} {
			err = wcs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "bound"}, Target: target}, metav1.CreateOptions{})
			wantReason(t, err, 422, metav1.StatusReasonInvalid)
			if causes := err.(apierrors.APIStatus).Status().Details.Causes; len(causes) != 1 || causes[0].Field != cause {
				t.Fatalf("binding to %+v: causes %+v, want %s", target, causes, cause)
			}
		}
		// So is one that would give the pod an annotation no object may have.
		err = wcs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "bound", Annotations: map[string]string{"bad key": "x"}},
			Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		if causes := err.(apierrors.APIStatus).Status().Details.Causes; len(causes) != 1 || causes[0].Field != "metadata.annotations" {
			t.Fatalf("binding with a bad annotation: causes %+v", causes)
		}
		// A binding made for a namesake (another uid) binds nothing; one
		// for this pod binds it and adds its annotations.
		err = wcs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "bound", UID: "0000-other"},
			Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}, metav1.CreateOptions{})
		wantReason(t, err, 409, metav1.StatusReasonConflict)
		if err := wcs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "bound", UID: created.UID, Annotations: map[string]string{"bound-by": "test"}},
			Target: corev1.ObjectReference{Kind: "Node", Name: "n1"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if got, err := rcs.CoreV1().Pods(ns).Get(ctx, "bound", metav1.GetOptions{}); err != nil || got.Annotations["bound-by"] != "test" {
			t.Fatalf("bound pod: %v, annotations %v", err, got.Annotations)
		}
		err = wcs.CoreV1().Pods(ns).Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "bound"}, Target: corev1.ObjectReference{Kind: "Node", Name: "n2"}}, metav1.CreateOptions{})
		wantReason(t, err, 409, metav1.StatusReasonConflict)
		l, err := rcs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=n1,status.phase=Pending"})
		if err != nil || len(l.Items) != 1 || l.Items[0].Spec.NodeName != "n1" {
			t.Fatalf("pods on n1: %v %+v", err, l)
		}
		// A bound pod's image may change, its node and command may not.
		if _, err := wcs.CoreV1().Pods(ns).Patch(ctx, "bound", types.StrategicMergePatchType, []byte(`{"spec":{"containers":[{"name":"c","image":"busybox:2"}]}}`), metav1.PatchOptions{}); err != nil {
			t.Fatalf("new image: %v", err)
		}
		// An update that leaves out the default tolerations gets them back
		// before it is judged (tolerations may only be added to), and does
		// not own them.
		left, err := wcs.CoreV1().Pods(ns).Patch(ctx, "bound", types.StrategicMergePatchType, []byte(`{"spec":{"tolerations":null}}`), metav1.PatchOptions{})
		if err != nil || len(left.Spec.Tolerations) != 2 {
			t.Fatalf("tolerations left out: %v, %+v", err, left)
		}
		for _, f := range left.ManagedFields {
			if strings.Contains(string(f.FieldsV1.Raw), `"f:tolerations"`) {
				t.Fatalf("%s owns the default tolerations after leaving them out", f.Manager)
			}
		}
		for _, patch := range []string{`{"spec":{"nodeName":"n2"}}`, `{"spec":{"containers":[{"name":"c","command":["true"]}]}}`} {
			_, err := wcs.CoreV1().Pods(ns).Patch(ctx, "bound", types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{})
			wantReason(t, err, 422, metav1.StatusReasonInvalid)
			if !strings.Contains(err.Error(), "pod updates may not change fields other than") {
				t.Fatalf("patch %s: %v", patch, err)
			}
		}
		// A bound pod is deleted gracefully: it stays for the kubelet.
		if err := wcs.CoreV1().Pods(ns).Delete(ctx, "bound", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		got, err := rcs.CoreV1().Pods(ns).Get(ctx, "bound", metav1.GetOptions{})
		if err != nil || got.DeletionTimestamp == nil || *got.DeletionGracePeriodSeconds != 30 {
			t.Fatalf("graceful delete: %v %+v", err, got)
		}
		if err := wcs.CoreV1().Pods(ns).Delete(ctx, "bound", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
		if _, err := rcs.CoreV1().Pods(ns).Get(ctx, "bound", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("grace 0 left the pod: %v", err)
		}
		if _, err := wcs.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "evicted"}, Spec: pod.Spec}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if err := wcs.CoreV1().Pods(ns).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: "evicted"}}); err != nil {
			t.Fatal(err)
		}
		if _, err := rcs.CoreV1().Pods(ns).Get(ctx, "evicted", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("eviction left the pod: %v", err)
		}
		err = wcs.CoreV1().Pods(ns).Delete(ctx, "tabled", metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: ptr.To(types.UID("wrong"))}})
		wantReason(t, err, 409, metav1.StatusReasonConflict)
	})

	t.Run("dry run", func(t *testing.T) {
		got, err := wcs.CoreV1().ConfigMaps(ns).Create(ctx, configMap("dry", nil), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil || got.UID == "" {
			t.Fatalf("dry run create: %v", err)
		}
		if _, err := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "dry", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("dry run stored the object: %v", err)
		}
		cur, err := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "proto", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		changed := cur.DeepCopy()
		changed.Data = map[string]string{"dry": "run"}
		if _, err := wcs.CoreV1().ConfigMaps(ns).Update(ctx, changed, metav1.UpdateOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		if _, err := wcs.CoreV1().ConfigMaps(ns).Patch(ctx, "proto", types.MergePatchType, []byte(`{"data":{"dry":"patch"}}`), metav1.PatchOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		if after, _ := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "proto", metav1.GetOptions{}); after.ResourceVersion != cur.ResourceVersion || after.Data["dry"] != "" {
			t.Fatalf("a dry-run update or patch was stored: %+v", after)
		}
		if err := wcs.CoreV1().ConfigMaps(ns).Delete(ctx, "proto", metav1.DeleteOptions{DryRun: []string{metav1.DryRunAll}}); err != nil {
			t.Fatal(err)
		}
		if _, err := rcs.CoreV1().ConfigMaps(ns).Get(ctx, "proto", metav1.GetOptions{}); err != nil {
			t.Fatalf("dry run delete removed the object: %v", err)
		}
	})

	t.Run("ClusterIPs are never given twice", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 30)
		for i := range 30 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				s := c.Servers[i%3].Clientset()
				_, err := s.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("svc-%d", i)},
					Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
				errs <- err
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		l, err := rcs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for _, s := range l.Items {
			if prev, dup := seen[s.Spec.ClusterIP]; dup {
				t.Fatalf("%s and %s both got %s", prev, s.Name, s.Spec.ClusterIP)
			}
			seen[s.Spec.ClusterIP] = s.Name
		}
		_, err = wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "taken"},
			Spec: corev1.ServiceSpec{ClusterIP: l.Items[0].Spec.ClusterIP, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		np, err := wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "nodeport"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		if err != nil || np.Spec.Ports[0].NodePort < 30000 || np.Spec.Ports[0].NodePort > 32767 {
			t.Fatalf("node port: %v %+v", err, np.Spec.Ports)
		}
		_, err = wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "nodeport-taken"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: np.Spec.Ports[0].NodePort}}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)

		// A service whose type or ports change gets the node ports it
		// now needs and gives back those it no longer holds.
		patch := func(name, body string) *corev1.Service {
			t.Helper()
			s, err := wcs.CoreV1().Services(ns).Patch(ctx, name, types.StrategicMergePatchType, []byte(body), metav1.PatchOptions{})
			if err != nil {
				t.Fatalf("patch %s with %s: %v", name, body, err)
			}
			return s
		}
		grown := patch("nodeport", `{"spec":{"ports":[{"name":"a","port":80},{"name":"b","port":81}]}}`)
		if p := grown.Spec.Ports; len(p) != 2 || p[0].NodePort != np.Spec.Ports[0].NodePort || p[1].NodePort < 30000 || p[1].NodePort == p[0].NodePort {
			t.Fatalf("ports after adding one: %+v", p)
		}
		// A full update that leaves out the ClusterIP and node ports
		// (kubectl replace, helm upgrade --force) keeps them.
		replaced, err := wcs.CoreV1().Services(ns).Update(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "nodeport", ResourceVersion: grown.ResourceVersion},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Name: "a", Port: 80}, {Name: "b", Port: 81}}}}, metav1.UpdateOptions{})
		if err != nil || replaced.Spec.ClusterIP != np.Spec.ClusterIP || replaced.Spec.Ports[0].NodePort != grown.Spec.Ports[0].NodePort ||
			replaced.Spec.Ports[1].NodePort != grown.Spec.Ports[1].NodePort {
			t.Fatalf("a full update without the allocated values: %v %+v", err, replaced.Spec)
		}
		if s := patch("nodeport", `{"spec":{"type":"ClusterIP"}}`); s.Spec.Ports[0].NodePort != 0 || s.Spec.ClusterIP != np.Spec.ClusterIP {
			t.Fatalf("turned ClusterIP: %+v", s.Spec)
		}
		reused, err := wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "nodeport-reused"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: grown.Spec.Ports[1].NodePort}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("a node port given back: %v", err)
		}
		if s := patch("nodeport", `{"spec":{"type":"NodePort"}}`); s.Spec.Ports[0].NodePort < 30000 || s.Spec.Ports[0].NodePort == reused.Spec.Ports[0].NodePort {
			t.Fatalf("turned NodePort again: %+v", s.Spec.Ports)
		}
		// A load balancer with policy Local gets a health-check node port,
		// which it gives back when the policy goes.
		local := patch("nodeport", `{"spec":{"type":"LoadBalancer","externalTrafficPolicy":"Local"}}`)
		if hc := local.Spec.HealthCheckNodePort; hc < 30000 || hc == local.Spec.Ports[0].NodePort || hc == reused.Spec.Ports[0].NodePort {
			t.Fatalf("health-check node port of a Local load balancer: %+v", local.Spec)
		}
		_, err = wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hc-on-clusterip"},
			Spec: corev1.ServiceSpec{HealthCheckNodePort: 31999, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		if s := patch("nodeport", `{"spec":{"externalTrafficPolicy":"Cluster"}}`); s.Spec.HealthCheckNodePort != 0 || s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			t.Fatalf("policy Cluster kept the health-check node port: %+v", s.Spec)
		}
		if _, err := wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "hc-reused"},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{{Port: 80, NodePort: local.Spec.HealthCheckNodePort}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("a health-check node port given back: %v", err)
		}
		if s := patch("nodeport", `{"spec":{"type":"ExternalName","externalName":"example.com"}}`); s.Spec.ClusterIP != "" || len(s.Spec.IPFamilies) != 0 {
			t.Fatalf("turned ExternalName: %+v", s.Spec)
		}
		_, err = wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "ip-reused"},
			Spec: corev1.ServiceSpec{ClusterIP: np.Spec.ClusterIP, Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("a ClusterIP given back: %v", err)
		}
		// kube-apiserver's field selectors of Services, which kube-proxy
		// lists them with.
		np2, err := rcs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.type=NodePort,spec.clusterIP!=None"})
		if err != nil || len(np2.Items) != 2 {
			t.Fatalf("NodePort services by field selector: %v %d", err, len(np2.Items))
		}
	})

	t.Run("ClusterIPs are IPAddresses from ServiceCIDRs", func(t *testing.T) {
		cluster.Eventually(t, 10*time.Second, func() error {
			sc, err := rcs.NetworkingV1().ServiceCIDRs().Get(ctx, "kubernetes", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if !slices.Equal(sc.Spec.CIDRs, []string{"10.96.0.0/16"}) || !apimeta.IsStatusConditionTrue(sc.Status.Conditions, "Ready") ||
				!slices.Contains(sc.Finalizers, "networking.k8s.io/service-cidr-finalizer") {
				return fmt.Errorf("the default ServiceCIDR: %+v %+v %v", sc.Spec, sc.Status, sc.Finalizers)
			}
			return nil
		})
		svc, err := wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "recorded"},
			Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		ip := svc.Spec.ClusterIP
		addr, err := rcs.NetworkingV1().IPAddresses().Get(ctx, ip, metav1.GetOptions{})
		if err != nil || addr.Spec.ParentRef == nil || *addr.Spec.ParentRef != (networkingv1.ParentReference{Resource: "services", Namespace: ns, Name: "recorded"}) ||
			addr.Labels["ipaddress.kubernetes.io/managed-by"] != "ipallocator.k8s.io" {
			t.Fatalf("the IPAddress of %s: %v %+v", ip, err, addr)
		}
		// One deleted by hand comes back; one a user writes reserves its
		// address.
		if err := wcs.NetworkingV1().IPAddresses().Delete(ctx, ip, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		cluster.Eventually(t, 10*time.Second, func() error {
			_, err := rcs.NetworkingV1().IPAddresses().Get(ctx, ip, metav1.GetOptions{})
			return err
		})
		reserved := &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: "10.96.250.250"},
			Spec: networkingv1.IPAddressSpec{ParentRef: &networkingv1.ParentReference{Group: "example.com", Resource: "gateways", Name: "edge"}}}
		if _, err := wcs.NetworkingV1().IPAddresses().Create(ctx, reserved, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err = wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "on-reserved"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.96.250.250", Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		_, err = wcs.NetworkingV1().IPAddresses().Create(ctx, &networkingv1.IPAddress{ObjectMeta: metav1.ObjectMeta{Name: "10.096.1.1"},
			Spec: reserved.Spec}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)

		// Another ServiceCIDR widens what Services may ask for; it is not
		// deleted while a Service holds one of its addresses.
		extra := &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "extra"}, Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"10.97.0.0/24"}}}
		if _, err := wcs.NetworkingV1().ServiceCIDRs().Create(ctx, extra, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		_, err = wcs.NetworkingV1().ServiceCIDRs().Create(ctx, &networkingv1.ServiceCIDR{ObjectMeta: metav1.ObjectMeta{Name: "six"},
			Spec: networkingv1.ServiceCIDRSpec{CIDRs: []string{"fd00::/112"}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		_, err = wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "out-of-range"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.98.0.10", Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{})
		wantReason(t, err, 422, metav1.StatusReasonInvalid)
		if _, err := wcs.CoreV1().Services(ns).Create(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "in-extra"},
			Spec: corev1.ServiceSpec{ClusterIP: "10.97.0.10", Ports: []corev1.ServicePort{{Port: 80}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("a ClusterIP of another ServiceCIDR: %v", err)
		}
		cluster.Eventually(t, 10*time.Second, func() error {
			sc, err := rcs.NetworkingV1().ServiceCIDRs().Get(ctx, "extra", metav1.GetOptions{})
			if err != nil || !slices.Contains(sc.Finalizers, "networking.k8s.io/service-cidr-finalizer") {
				return fmt.Errorf("ServiceCIDR extra has no finalizer yet: %v", err)
			}
			return nil
		})
		if err := wcs.NetworkingV1().ServiceCIDRs().Delete(ctx, "extra", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		cluster.Eventually(t, 10*time.Second, func() error {
			sc, err := rcs.NetworkingV1().ServiceCIDRs().Get(ctx, "extra", metav1.GetOptions{})
			if err != nil {
				return err
			}
			if c := apimeta.FindStatusCondition(sc.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "Terminating" {
				return fmt.Errorf("ServiceCIDR extra being deleted while in use: %+v", sc.Status)
			}
			return nil
		})
		if err := wcs.CoreV1().Services(ns).Delete(ctx, "in-extra", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := rcs.NetworkingV1().IPAddresses().Get(ctx, "10.97.0.10", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("the IPAddress of a deleted Service: %v", err)
		}
		cluster.Eventually(t, 30*time.Second, func() error {
			if _, err := rcs.NetworkingV1().ServiceCIDRs().Get(ctx, "extra", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
				return fmt.Errorf("ServiceCIDR extra not gone: %v", err)
			}
			return nil
		})
	})

	t.Run("watch", func(t *testing.T) {
		l, err := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		wi, err := rcs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion, AllowWatchBookmarks: true})
		if err != nil {
			t.Fatal(err)
		}
		defer wi.Stop()
		for i := range 5 {
			if _, err := wcs.CoreV1().ConfigMaps(ns).Create(ctx, configMap(fmt.Sprintf("watched-%d", i), nil), metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 5 {
			ev := nextEvent(t, wi)
			if ev.Type != watch.Added || ev.Object.(*corev1.ConfigMap).Name != fmt.Sprintf("watched-%d", i) {
				t.Fatalf("event %d: %s %s", i, ev.Type, ev.Object.(*corev1.ConfigMap).Name)
			}
		}
		// A streaming list: the current state, then the bookmark that
		// ends it.
		si, err := rcs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{SendInitialEvents: ptr.To(true), AllowWatchBookmarks: true,
			ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan, LabelSelector: "test=yes"})
		if err != nil {
			t.Fatal(err)
		}
		defer si.Stop()
		added := 0
		for {
			ev := nextEvent(t, si)
			if ev.Type == watch.Bookmark {
				if ev.Object.(*corev1.ConfigMap).Annotations[metav1.InitialEventsAnnotationKey] != "true" {
					t.Fatalf("bookmark without the initial-events-end annotation")
				}
				break
			}
			added++
		}
		if want, _ := rcs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{LabelSelector: "test=yes"}); added != len(want.Items) {
			t.Fatalf("streaming list sent %d objects, a list has %d", added, len(want.Items))
		}
		// An idle watch that allows bookmarks is told how far it got; a
		// watch ends at its timeoutSeconds.
		bw, err := rcs.CoreV1().ConfigMaps("kube-system").Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion, AllowWatchBookmarks: true, TimeoutSeconds: ptr.To[int64](8)})
		if err != nil {
			t.Fatal(err)
		}
		ev := nextEvent(t, bw)
		if rv, _ := strconv.ParseUint(ev.Object.(*corev1.ConfigMap).ResourceVersion, 10, 64); ev.Type != watch.Bookmark || rv < mustParse(l.ResourceVersion) {
			t.Fatalf("idle watch: %s at %d, want a bookmark at or after %s", ev.Type, rv, l.ResourceVersion)
		}
		select {
		case _, ok := <-bw.ResultChan():
			for ok {
				_, ok = <-bw.ResultChan()
			}
		case <-time.After(15 * time.Second):
			t.Fatal("the watch outlived its timeoutSeconds")
		}

		// Far enough behind the history, a watch gets 410 Gone in the
		// stream, as from kube-apiserver.
		for i := range 320 {
			cm := configMap("churn", map[string]string{"i": fmt.Sprint(i)})
			if _, err := wcs.CoreV1().ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
				_, err = wcs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{})
			}
		}
		old, err := rcs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer old.Stop()
		ev = nextEvent(t, old)
		if st, ok := ev.Object.(*metav1.Status); ev.Type != watch.Error || !ok || st.Code != 410 || st.Reason != metav1.StatusReasonExpired {
			t.Fatalf("watch from a compacted revision: %s %+v", ev.Type, ev.Object)
		}
	})
}

func nextEvent(t *testing.T, w watch.Interface) watch.Event {
	t.Helper()
	select {
	case ev, ok := <-w.ResultChan():
		if !ok {
			t.Fatal("watch closed")
		}
		return ev
	case <-time.After(10 * time.Second):
		t.Fatal("no watch event within 10s")
	}
	return watch.Event{}
}

func mustParse(rv string) uint64 {
	n, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		panic(err)
	}
	return n
}

func deployment(name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: appsv1.DeploymentSpec{
		Replicas: &replicas, Selector: &metav1.LabelSelector{MatchLabels: labels},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
}
