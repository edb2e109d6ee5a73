package resource

import (
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// Every entry's constructors must make its kind, or the handler would
// store and serve the wrong type.
func TestBuiltinEntriesMakeTheirKinds(t *testing.T) {
	reg := Builtin()
	for _, gv := range reg.GroupVersions() {
		for _, r := range reg.In(gv) {
			if got := reflect.TypeOf(r.New()).Elem().Name(); got != r.Kind {
				t.Errorf("%s: New makes %s", r.Name, got)
			}
			if r.Review != nil {
				if r.NewList != nil || r.Status || r.Scale != nil || len(r.Actions) > 0 {
					t.Errorf("%s is a review, yet it lists or has subresources", r.Name)
				}
			} else if got := reflect.TypeOf(r.NewList()).Elem().Name(); got != r.Kind+"List" {
				t.Errorf("%s: NewList makes %s", r.Name, got)
			}
			if r.Status && !reflect.ValueOf(r.New()).Elem().FieldByName("Status").IsValid() {
				t.Errorf("%s has a status subresource but no status", r.Name)
			}
			for _, c := range r.Columns {
				c.Cell(r.New()) // must not panic on an empty object
			}
		}
	}
}

// refused lists the fields errs refuse, in order.
func refused(errs field.ErrorList) []string {
	var fields []string
	for _, e := range errs {
		fields = append(fields, e.Field)
	}
	return fields
}

// testDeployment is a defaulted Deployment selecting app=d whose pods are
// labelled app=podApp.
func testDeployment(podApp string) *appsv1.Deployment {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: appsv1.DeploymentSpec{
		Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "d"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": podApp}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	defaultDeployment(d)
	return d
}

func TestDeploymentDefaultsAndValidation(t *testing.T) {
	d := testDeployment("other")
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.RollingUpdate.MaxSurge.StrVal != "25%" || *d.Spec.RevisionHistoryLimit != 10 {
		t.Fatalf("defaults: %+v", d.Spec)
	}
	if c := d.Spec.Template.Spec.Containers[0]; c.ImagePullPolicy != corev1.PullAlways || c.TerminationMessagePath != "/dev/termination-log" {
		t.Fatalf("container defaults: %+v", c)
	}
	errs := validateDeployment(d, nil)
	if len(errs) != 1 || errs[0].Field != "spec.template.metadata.labels" {
		t.Fatalf("a selector that misses its template: %v", errs)
	}
	d.Spec.Template.Labels["app"] = "d"
	if errs := validateDeployment(d, nil); len(errs) != 0 {
		t.Fatalf("valid deployment: %v", errs)
	}
	old := d.DeepCopy()
	d.Spec.Selector.MatchLabels["app"] = "e"
	if errs := validateDeployment(d, old); len(errs) == 0 {
		t.Fatal("a changed selector was accepted")
	}
}

func TestPodStatusColumn(t *testing.T) {
	for _, tc := range []struct {
		pod  corev1.Pod
		want string
	}{
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodPending}}, "Pending"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodRunning, ContainerStatuses: []corev1.ContainerStatus{
			{State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}}}}}, "CrashLoopBackOff"},
		{corev1.Pod{Status: corev1.PodStatus{Phase: corev1.PodSucceeded, ContainerStatuses: []corev1.ContainerStatus{
			{State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{Reason: "Completed"}}}}}}, "Completed"},
		{corev1.Pod{ObjectMeta: metav1.ObjectMeta{DeletionTimestamp: &metav1.Time{}}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}, "Terminating"},
	} {
		if got := PodStatus(&tc.pod); got != tc.want {
			t.Errorf("PodStatus = %q, want %q", got, tc.want)
		}
	}
	gated := &corev1.Pod{Spec: corev1.PodSpec{SchedulingGates: []corev1.PodSchedulingGate{{Name: "wait"}}}}
	defaultPod(gated)
	preparePod(gated)
	if got := PodStatus(gated); got != "SchedulingGated" {
		t.Errorf("PodStatus of a new gated pod = %q", got)
	}
	gated.Spec.NodeName = "n1"
	if errs := validatePod(gated, nil); len(errs) != 2 || errs[1].Field != "spec.nodeName" {
		t.Errorf("a gated pod created on a node: %v", errs)
	}
}

func TestSpecChangedIgnoresMetadataAndStatus(t *testing.T) {
	a := &appsv1.Deployment{Spec: appsv1.DeploymentSpec{Paused: true}}
	b := a.DeepCopy()
	b.Labels = map[string]string{"x": "y"}
	b.Status.Replicas = 3
	if SpecChanged(b, a) {
		t.Fatal("labels and status counted as a spec change")
	}
	b.Spec.Paused = false
	if !SpecChanged(b, a) {
		t.Fatal("spec change missed")
	}
}

func TestControllerRevisionValidationAndColumns(t *testing.T) {
	r := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "ds-1", OwnerReferences: []metav1.OwnerReference{
		{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "agent", Controller: ptr.To(true)}}}, Revision: -1}
	errs := validateControllerRevision(r, nil)
	if len(errs) != 2 || errs[0].Field != "data" || errs[1].Field != "revision" {
		t.Fatalf("no data and a negative revision: %v", errs)
	}
	r.Revision, r.Data.Raw = 2, []byte(`{"spec":{}}`)
	if errs := validateControllerRevision(r, nil); len(errs) != 0 {
		t.Fatalf("valid revision: %v", errs)
	}
	renumbered := r.DeepCopy()
	renumbered.Revision = 3
	if errs := validateControllerRevision(renumbered, r); len(errs) != 0 {
		t.Fatalf("a new number was refused: %v", errs)
	}
	changed := r.DeepCopy()
	changed.Data.Raw = []byte(`{"spec":{"x":1}}`)
	if errs := validateControllerRevision(changed, r); len(errs) != 1 || errs[0].Field != "data" {
		t.Fatalf("changed data: %v", errs)
	}
	if got := controllerRevisionColumns[0].Cell(r); got != "daemonset.apps/agent" {
		t.Fatalf("controller column %q", got)
	}
}

func TestCountIndexes(t *testing.T) {
	for list, want := range map[string]int64{"0": 1, "0,2-4": 4, "1,2": 2} {
		if n, msg := countIndexes(list, 5); n != want || msg != "" {
			t.Errorf("countIndexes(%q) = %d, %q; want %d", list, n, msg, want)
		}
	}
	for _, bad := range []string{"2-1", "1,1", "0-2,2", "5", "x", "-1", ""} {
		if _, msg := countIndexes(bad, 5); msg == "" {
			t.Errorf("countIndexes(%q) accepted it", bad)
		}
	}
}

// A pod's spec is what the kubelet runs: an update may change only what
// kube-apiserver lets it change.
func TestPodUpdateValidation(t *testing.T) {
	old := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{
		RestartPolicy: corev1.RestartPolicyAlways, ActiveDeadlineSeconds: ptr.To[int64](60),
		Containers:      []corev1.Container{{Name: "c", Image: "busybox:1", Command: []string{"sleep", "1"}}},
		Tolerations:     []corev1.Toleration{{Key: "k", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: ptr.To[int64](300)}},
		SchedulingGates: []corev1.PodSchedulingGate{{Name: "wait"}}}}
	for _, tc := range []struct {
		name   string
		change func(*corev1.PodSpec)
		fields []string // the fields refused; none means allowed
		msg    string
	}{
		{name: "image", change: func(s *corev1.PodSpec) { s.Containers[0].Image = "busybox:2" }},
		{name: "shorter deadline", change: func(s *corev1.PodSpec) { s.ActiveDeadlineSeconds = ptr.To[int64](30) }},
		{name: "added toleration and new seconds", change: func(s *corev1.PodSpec) {
			s.Tolerations[0].TolerationSeconds = ptr.To[int64](10)
			s.Tolerations = append(s.Tolerations, corev1.Toleration{Key: "other", Operator: corev1.TolerationOpExists})
		}},
		{name: "gate removed", change: func(s *corev1.PodSpec) { s.SchedulingGates = nil }},
		{name: "command", change: func(s *corev1.PodSpec) { s.Containers[0].Command = []string{"sleep", "2"} }, fields: []string{"spec"},
			msg: "pod updates may not change fields other than `spec.containers[*].image`"},
		{name: "node", change: func(s *corev1.PodSpec) { s.NodeName = "n1" }, fields: []string{"spec"}},
		{name: "container added", change: func(s *corev1.PodSpec) { s.Containers = append(s.Containers, corev1.Container{Name: "d", Image: "x"}) },
			fields: []string{"spec.containers"}, msg: "pod updates may not add or remove containers"},
		{name: "longer deadline", change: func(s *corev1.PodSpec) { s.ActiveDeadlineSeconds = ptr.To[int64](90) }, fields: []string{"spec.activeDeadlineSeconds"}},
		{name: "deadline dropped", change: func(s *corev1.PodSpec) { s.ActiveDeadlineSeconds = nil }, fields: []string{"spec.activeDeadlineSeconds"}},
		{name: "toleration changed", change: func(s *corev1.PodSpec) { s.Tolerations[0].Key = "other" }, fields: []string{"spec.tolerations"}},
		{name: "gate added", change: func(s *corev1.PodSpec) {
			s.SchedulingGates = append(s.SchedulingGates, corev1.PodSchedulingGate{Name: "more"})
		},
			fields: []string{"spec.schedulingGates[1].name"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := old.DeepCopy()
			tc.change(&p.Spec)
			errs := validatePod(p, old)
			if fields := refused(errs); !slices.Equal(fields, tc.fields) {
				t.Fatalf("refused fields %v, want %v", fields, tc.fields)
			}
			for _, e := range errs {
				if tc.msg != "" && !strings.Contains(e.Error(), tc.msg) {
					t.Errorf("message %q does not say %q", e.Error(), tc.msg)
				}
			}
		})
	}
}

func TestImmutableDataAndNodeCIDR(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Data: map[string]string{"a": "1"}, Immutable: ptr.To(true)}
	changed := cm.DeepCopy()
	changed.Data["a"], changed.Immutable = "2", nil
	if errs := validateConfigMap(changed, cm); len(errs) != 2 || errs[0].Field != "immutable" || errs[1].Field != "data" {
		t.Fatalf("changed immutable ConfigMap: %v", errs)
	}
	labelled := cm.DeepCopy()
	labelled.Labels = map[string]string{"x": "y"}
	if errs := validateConfigMap(labelled, cm); len(errs) != 0 {
		t.Fatalf("metadata change of an immutable ConfigMap: %v", errs)
	}
	big := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Data: map[string]string{"a": strings.Repeat("x", maxDataSize), "b": "y"}}
	if errs := validateConfigMap(big, nil); len(errs) != 1 || errs[0].Type != field.ErrorTypeTooLong {
		t.Fatalf("over 1 MiB of data: %v", errs)
	}
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Type: corev1.SecretTypeOpaque}
	retyped := s.DeepCopy()
	retyped.Type = corev1.SecretTypeDockerConfigJson
	if errs := validateSecret(retyped, s); len(errs) != 1 || errs[0].Field != "type" {
		t.Fatalf("changed secret type: %v", errs)
	}
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n"}}
	set := n.DeepCopy()
	set.Spec.PodCIDR, set.Spec.PodCIDRs = "10.244.0.0/24", []string{"10.244.0.0/24"}
	if errs := validateNode(set, n); len(errs) != 0 {
		t.Fatalf("a first pod CIDR: %v", errs)
	}
	moved := set.DeepCopy()
	moved.Spec.PodCIDR, moved.Spec.PodCIDRs = "10.244.1.0/24", []string{"10.244.1.0/24"}
	if errs := validateNode(moved, set); len(errs) != 1 || errs[0].Field != "spec.podCIDRs" {
		t.Fatalf("a changed pod CIDR: %v", errs)
	}
}

func TestStatefulSetUpdateValidation(t *testing.T) {
	old := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: appsv1.StatefulSetSpec{
		Replicas: ptr.To[int32](1), ServiceName: "s", PodManagementPolicy: appsv1.OrderedReadyPodManagement,
		UpdateStrategy: appsv1.StatefulSetUpdateStrategy{Type: appsv1.RollingUpdateStatefulSetStrategyType},
		Selector:       &metav1.LabelSelector{MatchLabels: map[string]string{"app": "s"}},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "s"}},
			Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	scaled := old.DeepCopy()
	scaled.Spec.Replicas, scaled.Spec.Template.Spec.Containers[0].Image = ptr.To[int32](3), "busybox:2"
	if errs := validateStatefulSet(scaled, old); len(errs) != 0 {
		t.Fatalf("scale and new template: %v", errs)
	}
	onDelete := old.DeepCopy()
	onDelete.Spec.UpdateStrategy = appsv1.StatefulSetUpdateStrategy{Type: appsv1.OnDeleteStatefulSetStrategyType,
		RollingUpdate: &appsv1.RollingUpdateStatefulSetStrategy{Partition: ptr.To[int32](-1)}}
	if errs := validateStatefulSet(onDelete, nil); len(errs) != 1 || errs[0].Field != "spec.updateStrategy.rollingUpdate" {
		t.Fatalf("OnDelete with a rolling update: %v", errs)
	}
	onDelete.Spec.UpdateStrategy.Type = appsv1.RollingUpdateStatefulSetStrategyType
	if errs := validateStatefulSet(onDelete, nil); len(errs) != 1 || errs[0].Field != "spec.updateStrategy.rollingUpdate.partition" {
		t.Fatalf("a negative partition: %v", errs)
	}
	renamed := old.DeepCopy()
	renamed.Spec.ServiceName = "other"
	if errs := validateStatefulSet(renamed, old); len(errs) != 1 || !strings.Contains(errs[0].Detail, "updates to statefulset spec for fields other than") {
		t.Fatalf("changed serviceName: %v", errs)
	}
}

func TestJobUpdateValidation(t *testing.T) {
	old := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Name: "j"}, Spec: batchv1.JobSpec{
		Completions: ptr.To[int32](2), Parallelism: ptr.To[int32](1), CompletionMode: ptr.To(batchv1.NonIndexedCompletion),
		Template: corev1.PodTemplateSpec{Spec: corev1.PodSpec{RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{Name: "c", Image: "busybox"}}}}}}
	j := old.DeepCopy()
	j.Spec.Parallelism, j.Spec.Suspend = ptr.To[int32](2), ptr.To(true)
	if got := refused(validateJob(j, old)); len(got) != 0 {
		t.Fatalf("parallelism and suspend: %v", got)
	}
	j.Spec.Completions = ptr.To[int32](3)
	j.Spec.Template.Spec.NodeSelector = map[string]string{"zone": "a"}
	if got := refused(validateJob(j, old)); !slices.Equal(got, []string{"spec.completions", "spec.template"}) {
		t.Fatalf("completions and template of a running Job: %v", got)
	}
	// Suspended before it started, it may be sent to other nodes, and an
	// Indexed Job's completions follow its parallelism.
	old.Spec.Suspend, old.Spec.CompletionMode = ptr.To(true), ptr.To(batchv1.IndexedCompletion)
	j.Spec.CompletionMode, j.Spec.Parallelism = ptr.To(batchv1.IndexedCompletion), ptr.To[int32](3)
	if got := refused(validateJob(j, old)); len(got) != 0 {
		t.Fatalf("node selector of a suspended Job, elastic completions: %v", got)
	}
	j.Spec.Template.Spec.Containers[0].Image = "busybox:2"
	j.Spec.Completions = ptr.To[int32](4)
	if got := refused(validateJob(j, old)); !slices.Equal(got, []string{"spec.completions", "spec.template"}) {
		t.Fatalf("image of a suspended Job, completions without parallelism: %v", got)
	}
}

// A rollout that may neither surge nor take a pod down never moves:
// kube-apiserver refuses it, and so do we.
func TestRolloutStrategyValidation(t *testing.T) {
	d := testDeployment("d")
	zero := intstr.FromInt32(0)
	stuck := d.DeepCopy()
	stuck.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxUnavailable: &zero, MaxSurge: ptr.To(intstr.FromString("0%"))}
	if got := refused(validateDeployment(stuck, nil)); !slices.Equal(got, []string{"spec.strategy.rollingUpdate.maxUnavailable"}) {
		t.Fatalf("maxSurge and maxUnavailable 0: %v", got)
	}
	wrong := d.DeepCopy()
	wrong.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromString("150%"))
	wrong.Spec.Strategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromString("x"))
	wrong.Spec.ProgressDeadlineSeconds = ptr.To[int32](0)
	if got := refused(validateDeployment(wrong, nil)); !slices.Equal(got, []string{"spec.strategy.rollingUpdate.maxSurge",
		"spec.strategy.rollingUpdate.maxUnavailable", "spec.progressDeadlineSeconds"}) {
		t.Fatalf("bad percentages and deadline: %v", got)
	}
	recreate := d.DeepCopy()
	recreate.Spec.Strategy.Type = appsv1.RecreateDeploymentStrategyType
	if got := refused(validateDeployment(recreate, nil)); !slices.Equal(got, []string{"spec.strategy.rollingUpdate"}) {
		t.Fatalf("Recreate with rollingUpdate: %v", got)
	}
	ds := &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "ds"}, Spec: appsv1.DaemonSetSpec{
		Selector: d.Spec.Selector, Template: d.Spec.Template, UpdateStrategy: appsv1.DaemonSetUpdateStrategy{
			Type: appsv1.RollingUpdateDaemonSetStrategyType, RollingUpdate: &appsv1.RollingUpdateDaemonSet{MaxUnavailable: ptr.To(intstr.FromInt32(1)), MaxSurge: &zero}}}}
	if got := refused(validateDaemonSet(ds, nil)); len(got) != 0 {
		t.Fatalf("valid DaemonSet: %v", got)
	}
	ds.Spec.UpdateStrategy.RollingUpdate.MaxSurge = ptr.To(intstr.FromString("10%"))
	if got := refused(validateDaemonSet(ds, nil)); !slices.Equal(got, []string{"spec.updateStrategy.rollingUpdate.maxSurge"}) {
		t.Fatalf("DaemonSet surging and taking pods down: %v", got)
	}
}

// A service that changes type drops what the new type has not, unless
// the update set it, which validation then refuses.
func TestServiceTypeChange(t *testing.T) {
	old := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
		ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"}, Ports: []corev1.ServicePort{{Port: 80, NodePort: 30080}}}}
	defaultService(old)
	toClusterIP := old.DeepCopy()
	toClusterIP.Spec.Type = corev1.ServiceTypeClusterIP
	prepareServiceUpdate(toClusterIP, old)
	if errs := validateService(toClusterIP, old); len(errs) != 0 || toClusterIP.Spec.Ports[0].NodePort != 0 || toClusterIP.Spec.ExternalTrafficPolicy != "" {
		t.Fatalf("turned ClusterIP: %v %+v", errs, toClusterIP.Spec)
	}
	toClusterIP.Spec.Ports[0].NodePort = 30081
	if errs := validateService(toClusterIP, old); len(errs) != 1 || errs[0].Field != "spec.ports[0].nodePort" {
		t.Fatalf("a node port on a ClusterIP service: %v", errs)
	}
	toExternal := old.DeepCopy()
	toExternal.Spec.Type, toExternal.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
	prepareServiceUpdate(toExternal, old)
	if errs := validateService(toExternal, old); len(errs) != 0 || toExternal.Spec.ClusterIP != "" || toExternal.Spec.IPFamilies != nil {
		t.Fatalf("turned ExternalName: %v %+v", errs, toExternal.Spec)
	}
	toExternal.Spec.ClusterIP = "10.96.0.11"
	if errs := validateService(toExternal, old); len(errs) != 1 || errs[0].Field != "spec.clusterIPs" {
		t.Fatalf("a ClusterIP on an ExternalName service: %v", errs)
	}
}

// A full update (kubectl replace) that leaves out the allocated ClusterIP
// and node ports keeps them, as kube-apiserver does.
func TestServiceReplaceKeepsAllocations(t *testing.T) {
	old := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
		ClusterIP: "10.96.0.10", ClusterIPs: []string{"10.96.0.10"},
		Ports: []corev1.ServicePort{{Name: "http", Port: 80, NodePort: 31233}, {Name: "https", Port: 443, NodePort: 31234}}}}
	defaultService(old)
	replaced := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
		Ports: []corev1.ServicePort{{Name: "http", Port: 8080}, {Name: "https", Port: 443, NodePort: 31233}}}}
	defaultService(replaced)
	prepareServiceUpdate(replaced, old)
	if errs := validateService(replaced, old); len(errs) != 0 {
		t.Fatalf("a replace without the ClusterIP: %v", errs)
	}
	// http keeps nothing: https took its port; https keeps what it named.
	if replaced.Spec.ClusterIP != "10.96.0.10" || replaced.Spec.Ports[0].NodePort != 0 || replaced.Spec.Ports[1].NodePort != 31233 {
		t.Fatalf("replaced: %+v", replaced.Spec)
	}
	again := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort,
		Ports: []corev1.ServicePort{{Name: "http", Port: 8080}, {Name: "https", Port: 443}}}}
	defaultService(again)
	prepareServiceUpdate(again, old)
	if again.Spec.Ports[0].NodePort != 31233 || again.Spec.Ports[1].NodePort != 31234 {
		t.Fatalf("node ports by name: %+v", again.Spec.Ports)
	}
}

func TestServicePortsAreUniquePerProtocol(t *testing.T) {
	s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort, Ports: []corev1.ServicePort{
		{Name: "dns", Port: 53, NodePort: 30053}, {Name: "dns-udp", Port: 53, Protocol: corev1.ProtocolUDP, NodePort: 30053}}}}
	defaultService(s)
	if errs := validateService(s, nil); len(errs) != 0 {
		t.Fatalf("one port and node port for TCP and UDP: %v", errs)
	}
	s.Spec.Ports[1].Protocol = corev1.ProtocolTCP
	if errs := validateService(s, nil); len(errs) != 2 || errs[0].Field != "spec.ports[1]" || errs[1].Field != "spec.ports[1]" {
		t.Fatalf("the same port and node port twice for TCP: %v", errs)
	}
}

func TestSecretStringDataMergedIntoData(t *testing.T) {
	s := &corev1.Secret{Data: map[string][]byte{"a": []byte("old"), "b": []byte("kept")}, StringData: map[string]string{"a": "new", "c": "added"}}
	defaultSecret(s)
	if s.StringData != nil || string(s.Data["a"]) != "new" || string(s.Data["b"]) != "kept" || string(s.Data["c"]) != "added" || s.Type != corev1.SecretTypeOpaque {
		t.Fatalf("after defaulting: %+v", s)
	}
	s = &corev1.Secret{StringData: map[string]string{"password": "x"}}
	defaultSecret(s)
	if string(s.Data["password"]) != "x" {
		t.Fatalf("stringData alone: %+v", s)
	}
}

func TestPodSpecDefaults(t *testing.T) {
	p := &corev1.Pod{Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "c", Image: "i:1",
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Port: intstr.FromInt32(80)}}},
			Env:            []corev1.EnvVar{{Name: "N", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}}}}},
		Volumes: []corev1.Volume{
			{Name: "cm", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{}}},
			{Name: "h", VolumeSource: corev1.VolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: "/x"}}},
			{Name: "p", VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{
				{ServiceAccountToken: &corev1.ServiceAccountTokenProjection{Path: "t"}}}}}},
		},
	}}
	defaultPod(p)
	pr := p.Spec.Containers[0].ReadinessProbe
	if pr.TimeoutSeconds != 1 || pr.PeriodSeconds != 10 || pr.SuccessThreshold != 1 || pr.FailureThreshold != 3 || pr.HTTPGet.Scheme != corev1.URISchemeHTTP || pr.HTTPGet.Path != "/" {
		t.Errorf("probe: %+v", pr)
	}
	if f := p.Spec.Containers[0].Env[0].ValueFrom.FieldRef; f.APIVersion != "v1" {
		t.Errorf("fieldRef: %+v", f)
	}
	v := p.Spec.Volumes
	if *v[0].ConfigMap.DefaultMode != 420 || *v[1].HostPath.Type != corev1.HostPathUnset || *v[2].Projected.DefaultMode != 420 ||
		*v[2].Projected.Sources[0].ServiceAccountToken.ExpirationSeconds != 3600 {
		t.Errorf("volumes: %+v", v)
	}
}

func TestPodVolumeValidation(t *testing.T) {
	spec := corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways,
		Volumes: []corev1.Volume{
			{Name: "a", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "a", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}},
			{Name: "none"},
		},
		Containers: []corev1.Container{{Name: "c", Image: "i",
			VolumeMounts: []corev1.VolumeMount{{Name: "a", MountPath: "/m"}, {Name: "a", MountPath: "/m"}, {Name: "missing", MountPath: "/n"}},
			EnvFrom:      []corev1.EnvFromSource{{ConfigMapRef: &corev1.ConfigMapEnvSource{}}}}},
	}
	var got []string
	for _, e := range validatePodSpec(&spec, field.NewPath("spec")) {
		got = append(got, e.Error())
	}
	for _, want := range []string{
		`spec.volumes[1].name: Duplicate value: "a"`,
		`spec.volumes[2]: Required value: must specify a volume type`,
		`spec.containers[0].volumeMounts[1].mountPath: Invalid value: "/m": must be unique`,
		`spec.containers[0].volumeMounts[2].name: Not found: "missing"`,
		`spec.containers[0].envFrom[0].configMapRef.name: Required value`,
	} {
		if !slices.Contains(got, want) {
			t.Errorf("missing %q in %q", want, got)
		}
	}
	if len(got) != 5 {
		t.Errorf("%d errors: %q", len(got), got)
	}
}

func TestPodSysctlValidation(t *testing.T) {
	spec := corev1.PodSpec{RestartPolicy: corev1.RestartPolicyAlways, Containers: []corev1.Container{{Name: "c", Image: "i"}},
		SecurityContext: &corev1.PodSecurityContext{Sysctls: []corev1.Sysctl{{Name: "kernel.shm_rmid_forced", Value: "1"}, {Name: "foo-", Value: "1"}, {Name: "bar..", Value: "1"}}}}
	var got []string
	for _, e := range validatePodSpec(&spec, field.NewPath("spec")) {
		got = append(got, e.Error())
	}
	if len(got) != 2 || !strings.Contains(got[0], `Invalid value: "foo-"`) || !strings.Contains(got[1], `Invalid value: "bar.."`) {
		t.Fatalf("sysctl errors: %q", got)
	}
}

func TestEphemeralContainersUpdateValidation(t *testing.T) {
	ec := func(name, image string) corev1.EphemeralContainer {
		return corev1.EphemeralContainer{EphemeralContainerCommon: corev1.EphemeralContainerCommon{Name: name, Image: image}}
	}
	pod := &corev1.Pod{Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "i"}}}}
	old := []corev1.EphemeralContainer{ec("dbg", "i")}
	pod.Spec.EphemeralContainers = []corev1.EphemeralContainer{ec("dbg", "i"), ec("dbg2", "i")}
	if errs := ValidateEphemeralContainersUpdate(pod, old); len(errs) != 0 {
		t.Fatalf("adding one: %v", errs)
	}
	for what, ecs := range map[string][]corev1.EphemeralContainer{
		"changed":            {ec("dbg", "other")},
		"removed":            {ec("dbg2", "i")},
		"named as a regular": {ec("dbg", "i"), ec("c", "i")},
		"without an image":   {ec("dbg", "i"), ec("x", "")},
	} {
		pod.Spec.EphemeralContainers = ecs
		if errs := ValidateEphemeralContainersUpdate(pod, old); len(errs) == 0 {
			t.Errorf("%s: accepted", what)
		}
	}
}

func TestIngressValidation(t *testing.T) {
	ing := func(host, path string, pathType networkingv1.PathType) *networkingv1.Ingress {
		backend := networkingv1.IngressBackend{Service: &networkingv1.IngressServiceBackend{Name: "web", Port: networkingv1.ServiceBackendPort{Number: 80}}}
		return &networkingv1.Ingress{ObjectMeta: metav1.ObjectMeta{Name: "site"}, Spec: networkingv1.IngressSpec{Rules: []networkingv1.IngressRule{{Host: host,
			IngressRuleValue: networkingv1.IngressRuleValue{HTTP: &networkingv1.HTTPIngressRuleValue{Paths: []networkingv1.HTTPIngressPath{{Path: path, PathType: &pathType, Backend: backend}}}}}}}}
	}
	for _, tc := range []struct {
		ing   *networkingv1.Ingress
		field string
	}{
		{ing("shop.example", "/cart", networkingv1.PathTypePrefix), ""},
		{ing("*.shop.example", "", networkingv1.PathTypeImplementationSpecific), ""},
		{ing("10.0.0.1", "/", networkingv1.PathTypeExact), "spec.rules[0].host"},
		{ing("shop..example", "/", networkingv1.PathTypeExact), "spec.rules[0].host"},
		{ing("", "cart", networkingv1.PathTypePrefix), "spec.rules[0].http.paths[0].path"},
		{ing("", "/a/../b", networkingv1.PathTypeExact), "spec.rules[0].http.paths[0].path"},
		{ing("", "/", "Regex"), "spec.rules[0].http.paths[0].pathType"},
		{&networkingv1.Ingress{}, "spec"},
	} {
		errs := validateIngress(tc.ing, nil)
		if (tc.field == "") != (len(errs) == 0) || (len(errs) > 0 && errs[0].Field != tc.field) {
			t.Errorf("%+v: %v, want an error at %q", tc.ing.Spec, errs, tc.field)
		}
	}
	both := ing("", "/", networkingv1.PathTypePrefix)
	both.Spec.Rules[0].HTTP.Paths[0].Backend.Service.Port.Name = "http"
	if errs := validateIngress(both, nil); len(errs) != 1 || !strings.Contains(errs[0].Detail, "cannot set both port name & port number") {
		t.Errorf("a port by name and number: %v", errs)
	}
	classed := ing("", "/", networkingv1.PathTypePrefix)
	classed.Spec.IngressClassName = ptr.To("edge")
	classed.Annotations = map[string]string{"kubernetes.io/ingress.class": "nginx"}
	if errs := validateIngress(classed, nil); len(errs) != 1 || errs[0].Field != "annotations.kubernetes.io/ingress.class" {
		t.Errorf("a class name that disagrees with the annotation: %v", errs)
	}
	if got := ingressColumns[1].Cell(ing("", "/", networkingv1.PathTypePrefix)); got != "*" {
		t.Errorf("hosts of a rule without one: %q", got)
	}
}

func TestIngressClassValidation(t *testing.T) {
	c := &networkingv1.IngressClass{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Spec: networkingv1.IngressClassSpec{Controller: "example.com/edge",
		Parameters: &networkingv1.IngressClassParametersReference{Kind: "Config", Name: "edge"}}}
	defaultIngressClass(c)
	if s := ptr.Deref(c.Spec.Parameters.Scope, ""); s != "Cluster" {
		t.Fatalf("parameters' scope defaulted to %q", s)
	}
	if errs := validateIngressClass(c, nil); len(errs) != 0 {
		t.Fatalf("valid class: %v", errs)
	}
	changed := c.DeepCopy()
	changed.Spec.Controller = "example.com/other"
	if errs := validateIngressClass(changed, c); len(errs) != 1 || errs[0].Field != "spec.controller" {
		t.Fatalf("a changed controller: %v", errs)
	}
	namespaced := c.DeepCopy()
	namespaced.Spec.Parameters.Scope = ptr.To("Namespace")
	if errs := validateIngressClass(namespaced, nil); len(errs) != 1 || errs[0].Field != "spec.parameters.namespace" {
		t.Fatalf("namespace-scoped parameters without a namespace: %v", errs)
	}
	if errs := validateIngressClass(&networkingv1.IngressClass{}, nil); len(errs) == 0 {
		t.Fatal("a class without a controller was accepted")
	}
}
