package resource

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/duration"
	"k8s.io/utils/ptr"
)

// The columns are those kube-apiserver's printers define for the same
// resources (pkg/printers/internalversion), so `kubectl get` looks the same.

func col(name, typ, desc string, cell func(runtime.Object) any) Column {
	return Column{TableColumnDefinition: metav1.TableColumnDefinition{Name: name, Type: typ, Description: desc}, Cell: cell}
}

func wide(c Column) Column {
	c.Priority = 1
	return c
}

func cell[T runtime.Object](f func(T) any) func(runtime.Object) any {
	return func(obj runtime.Object) any { return f(obj.(T)) }
}

func itoa(n int32) string { return strconv.Itoa(int(n)) }

// Age formats the time since t as kubectl does.
func Age(t metav1.Time) string {
	if t.IsZero() {
		return "<unknown>"
	}
	return duration.HumanDuration(time.Since(t.Time))
}

var ageColumn = col("Age", "string", "CreationTimestamp is a timestamp representing the server time when this object was created.",
	func(obj runtime.Object) any {
		m, _ := meta.Accessor(obj)
		return Age(m.GetCreationTimestamp())
	})

func orNone(s string) string {
	if s == "" {
		return "<none>"
	}
	return s
}

func containersAndImages(spec *corev1.PodSpec) (string, string) {
	var names, images []string
	for _, c := range spec.Containers {
		names, images = append(names, c.Name), append(images, c.Image)
	}
	return strings.Join(names, ","), strings.Join(images, ",")
}

func selectorString(sel *metav1.LabelSelector) string {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil || sel == nil {
		return "<none>"
	}
	return orNone(s.String())
}

// workloadWide are the CONTAINERS, IMAGES and SELECTOR columns of -o wide.
func workloadWide[T runtime.Object](tmpl func(T) *corev1.PodTemplateSpec, sel func(T) *metav1.LabelSelector) []Column {
	return []Column{
		wide(col("Containers", "string", "Names of each container in the template.", cell(func(o T) any { c, _ := containersAndImages(&tmpl(o).Spec); return c }))),
		wide(col("Images", "string", "Images referenced by each container in the template.", cell(func(o T) any { _, i := containersAndImages(&tmpl(o).Spec); return i }))),
		wide(col("Selector", "string", "Label selector for pods.", cell(func(o T) any { return selectorString(sel(o)) }))),
	}
}

var namespaceColumns = []Column{
	col("Status", "string", "The status of the namespace", cell(func(n *corev1.Namespace) any { return string(n.Status.Phase) })),
	ageColumn,
}

// PodStatus is the STATUS column of a pod, as kubectl computes it.
func PodStatus(p *corev1.Pod) string {
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Reason == corev1.PodReasonSchedulingGated {
			reason = corev1.PodReasonSchedulingGated
		}
	}
	for i := len(p.Status.InitContainerStatuses) - 1; i >= 0; i-- {
		s := p.Status.InitContainerStatuses[i]
		switch {
		case s.State.Terminated != nil && s.State.Terminated.ExitCode == 0:
			continue
		case s.State.Terminated != nil:
			reason = "Init:" + orDefault(s.State.Terminated.Reason, fmt.Sprintf("ExitCode:%d", s.State.Terminated.ExitCode))
		case s.State.Waiting != nil && s.State.Waiting.Reason != "" && s.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + s.State.Waiting.Reason
		default:
			reason = fmt.Sprintf("Init:%d/%d", i, len(p.Spec.InitContainers))
		}
		break
	}
	hasRunning := false
	for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
		s := p.Status.ContainerStatuses[i]
		switch {
		case s.State.Waiting != nil && s.State.Waiting.Reason != "":
			reason = s.State.Waiting.Reason
		case s.State.Terminated != nil && s.State.Terminated.Reason != "":
			reason = s.State.Terminated.Reason
		case s.State.Terminated != nil:
			reason = fmt.Sprintf("ExitCode:%d", s.State.Terminated.ExitCode)
		case s.Ready && s.State.Running != nil:
			hasRunning = true
		}
	}
	if reason == "Completed" && hasRunning {
		reason = "Running"
	}
	if p.DeletionTimestamp != nil {
		reason = "Terminating"
	}
	return reason
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

var podColumns = []Column{
	col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", cell(func(p *corev1.Pod) any {
		ready := 0
		for _, s := range p.Status.ContainerStatuses {
			if s.Ready {
				ready++
			}
		}
		return fmt.Sprintf("%d/%d", ready, len(p.Spec.Containers))
	})),
	col("Status", "string", "The aggregate status of the containers in this pod.", cell(func(p *corev1.Pod) any { return PodStatus(p) })),
	col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", cell(func(p *corev1.Pod) any {
		var n int32
		for _, s := range p.Status.ContainerStatuses {
			n += s.RestartCount
		}
		return itoa(n)
	})),
	ageColumn,
	wide(col("IP", "string", "The IP address assigned to the pod", cell(func(p *corev1.Pod) any { return orNone(p.Status.PodIP) }))),
	wide(col("Node", "string", "The name of the node where the pod is running", cell(func(p *corev1.Pod) any { return orNone(p.Spec.NodeName) }))),
	wide(col("Nominated Node", "string", "The name of the node where the pod was nominated", cell(func(p *corev1.Pod) any { return orNone(p.Status.NominatedNodeName) }))),
	wide(col("Readiness Gates", "string", "The readiness gates of the pod", cell(func(p *corev1.Pod) any {
		if len(p.Spec.ReadinessGates) == 0 {
			return "<none>"
		}
		ready := 0
		for _, g := range p.Spec.ReadinessGates {
			for _, c := range p.Status.Conditions {
				if c.Type == g.ConditionType && c.Status == corev1.ConditionTrue {
					ready++
				}
			}
		}
		return fmt.Sprintf("%d/%d", ready, len(p.Spec.ReadinessGates))
	}))),
}

func nodeAddress(n *corev1.Node, t corev1.NodeAddressType) string {
	for _, a := range n.Status.Addresses {
		if a.Type == t {
			return a.Address
		}
	}
	return "<none>"
}

var nodeColumns = []Column{
	col("Status", "string", "The status of the node", cell(func(n *corev1.Node) any {
		status := "Unknown"
		for _, c := range n.Status.Conditions {
			if c.Type == corev1.NodeReady {
				status = "NotReady"
				if c.Status == corev1.ConditionTrue {
					status = "Ready"
				}
			}
		}
		if n.Spec.Unschedulable {
			status += ",SchedulingDisabled"
		}
		return status
	})),
	col("Roles", "string", "The roles of the node", cell(func(n *corev1.Node) any {
		var roles []string
		for k := range n.Labels {
			if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
				roles = append(roles, r)
			}
		}
		sort.Strings(roles)
		return orNone(strings.Join(roles, ","))
	})),
	ageColumn,
	col("Version", "string", "Kubelet Version reported by the node.", cell(func(n *corev1.Node) any { return n.Status.NodeInfo.KubeletVersion })),
	wide(col("Internal-IP", "string", "List of addresses reachable to the node.", cell(func(n *corev1.Node) any { return nodeAddress(n, corev1.NodeInternalIP) }))),
	wide(col("External-IP", "string", "List of addresses reachable to the node.", cell(func(n *corev1.Node) any { return nodeAddress(n, corev1.NodeExternalIP) }))),
	wide(col("OS-Image", "string", "OS Image reported by the node.", cell(func(n *corev1.Node) any { return orDefault(n.Status.NodeInfo.OSImage, "<unknown>") }))),
	wide(col("Kernel-Version", "string", "Kernel Version reported by the node.", cell(func(n *corev1.Node) any { return orDefault(n.Status.NodeInfo.KernelVersion, "<unknown>") }))),
	wide(col("Container-Runtime", "string", "Container Runtime Version reported by the node.", cell(func(n *corev1.Node) any {
		return orDefault(n.Status.NodeInfo.ContainerRuntimeVersion, "<unknown>")
	}))),
}

func servicePorts(s *corev1.Service) string {
	var ports []string
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			ports = append(ports, fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol))
		} else {
			ports = append(ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	return orNone(strings.Join(ports, ","))
}

var serviceColumns = []Column{
	col("Type", "string", "The type of the service.", cell(func(s *corev1.Service) any { return string(s.Spec.Type) })),
	col("Cluster-IP", "string", "The IP address of the service.", cell(func(s *corev1.Service) any { return orNone(s.Spec.ClusterIP) })),
	col("External-IP", "string", "The external IP address of the service.", cell(func(s *corev1.Service) any {
		switch {
		case s.Spec.Type == corev1.ServiceTypeExternalName:
			return s.Spec.ExternalName
		case len(s.Spec.ExternalIPs) > 0:
			return strings.Join(s.Spec.ExternalIPs, ",")
		case s.Spec.Type == corev1.ServiceTypeLoadBalancer && len(s.Status.LoadBalancer.Ingress) == 0:
			return "<pending>"
		}
		return "<none>"
	})),
	col("Port(s)", "string", "The ports of the service.", cell(func(s *corev1.Service) any { return servicePorts(s) })),
	ageColumn,
	wide(col("Selector", "string", "The selector of the service.", cell(func(s *corev1.Service) any {
		var kv []string
		for k, v := range s.Spec.Selector {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		return orNone(strings.Join(kv, ","))
	}))),
}

var endpointsColumns = []Column{
	col("Endpoints", "string", "The endpoints of the service.", cell(func(e *corev1.Endpoints) any {
		var eps []string
		for _, s := range e.Subsets {
			for _, a := range s.Addresses {
				for _, p := range s.Ports {
					eps = append(eps, fmt.Sprintf("%s:%d", a.IP, p.Port))
				}
			}
		}
		return orNone(strings.Join(eps, ","))
	})),
	ageColumn,
}

var configMapColumns = []Column{
	col("Data", "string", "Number of data entries.", cell(func(c *corev1.ConfigMap) any { return int64(len(c.Data) + len(c.BinaryData)) })),
	ageColumn,
}

var secretColumns = []Column{
	col("Type", "string", "The type of the secret.", cell(func(s *corev1.Secret) any { return string(s.Type) })),
	col("Data", "string", "Number of data entries.", cell(func(s *corev1.Secret) any { return int64(len(s.Data)) })),
	ageColumn,
}

var serviceAccountColumns = []Column{
	col("Secrets", "string", "The number of secrets of the service account.", cell(func(s *corev1.ServiceAccount) any { return int64(len(s.Secrets)) })),
	ageColumn,
}

func eventTime(e *corev1.Event, t metav1.Time) string {
	if t.IsZero() {
		if e.EventTime.IsZero() {
			return "<unknown>"
		}
		return duration.HumanDuration(time.Since(e.EventTime.Time))
	}
	return Age(t)
}

var eventColumns = []Column{
	col("Last Seen", "string", "The last time the event was seen.", cell(func(e *corev1.Event) any {
		if e.Series != nil {
			return duration.HumanDuration(time.Since(e.Series.LastObservedTime.Time))
		}
		return eventTime(e, e.LastTimestamp)
	})),
	col("Type", "string", "The type of the event.", cell(func(e *corev1.Event) any { return e.Type })),
	col("Reason", "string", "The reason of the event.", cell(func(e *corev1.Event) any { return e.Reason })),
	col("Object", "string", "The object the event is about.", cell(func(e *corev1.Event) any {
		return strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name
	})),
	wide(col("Subobject", "string", "The field of the object the event is about.", cell(func(e *corev1.Event) any { return e.InvolvedObject.FieldPath }))),
	wide(col("Source", "string", "The component that reported the event.", cell(func(e *corev1.Event) any {
		src := orDefault(e.Source.Component, e.ReportingController)
		if e.Source.Host != "" {
			src += ", " + e.Source.Host
		}
		return src
	}))),
	col("Message", "string", "The message of the event.", cell(func(e *corev1.Event) any { return strings.TrimSpace(e.Message) })),
	wide(col("First Seen", "string", "The first time the event was seen.", cell(func(e *corev1.Event) any { return eventTime(e, e.FirstTimestamp) }))),
	wide(col("Count", "string", "How many times the event was seen.", cell(func(e *corev1.Event) any {
		if e.Series != nil {
			return itoa(e.Series.Count)
		}
		return itoa(e.Count)
	}))),
	wide(col("Name", "string", "The name of the event.", cell(func(e *corev1.Event) any { return e.Name }))),
}

var deploymentColumns = append([]Column{
	col("Ready", "string", "Number of the pod with ready state", cell(func(d *appsv1.Deployment) any {
		return fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, ptr.Deref(d.Spec.Replicas, 1))
	})),
	col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", cell(func(d *appsv1.Deployment) any { return int64(d.Status.UpdatedReplicas) })),
	col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", cell(func(d *appsv1.Deployment) any { return int64(d.Status.AvailableReplicas) })),
	ageColumn,
}, workloadWide(func(d *appsv1.Deployment) *corev1.PodTemplateSpec { return &d.Spec.Template }, func(d *appsv1.Deployment) *metav1.LabelSelector { return d.Spec.Selector })...)

var replicationControllerColumns = append([]Column{
	col("Desired", "integer", "Number of desired pods.", cell(func(r *corev1.ReplicationController) any { return int64(ptr.Deref(r.Spec.Replicas, 1)) })),
	col("Current", "integer", "Number of actual replicas.", cell(func(r *corev1.ReplicationController) any { return int64(r.Status.Replicas) })),
	col("Ready", "integer", "Number of ready replicas.", cell(func(r *corev1.ReplicationController) any { return int64(r.Status.ReadyReplicas) })),
	ageColumn,
}, workloadWide(func(r *corev1.ReplicationController) *corev1.PodTemplateSpec { return templateOrEmpty(r.Spec.Template) },
	replicationControllerSelector)...)

// templateOrEmpty is a ReplicationController's template, which may be nil.
func templateOrEmpty(t *corev1.PodTemplateSpec) *corev1.PodTemplateSpec {
	if t == nil {
		return &corev1.PodTemplateSpec{}
	}
	return t
}

var replicaSetColumns = append([]Column{
	col("Desired", "integer", "Number of desired pods.", cell(func(r *appsv1.ReplicaSet) any { return int64(ptr.Deref(r.Spec.Replicas, 1)) })),
	col("Current", "integer", "Number of actual replicas.", cell(func(r *appsv1.ReplicaSet) any { return int64(r.Status.Replicas) })),
	col("Ready", "integer", "Number of ready replicas.", cell(func(r *appsv1.ReplicaSet) any { return int64(r.Status.ReadyReplicas) })),
	ageColumn,
}, workloadWide(func(r *appsv1.ReplicaSet) *corev1.PodTemplateSpec { return &r.Spec.Template }, func(r *appsv1.ReplicaSet) *metav1.LabelSelector { return r.Spec.Selector })...)

var statefulSetColumns = append([]Column{
	col("Ready", "string", "Number of the pod with ready state", cell(func(s *appsv1.StatefulSet) any {
		return fmt.Sprintf("%d/%d", s.Status.ReadyReplicas, ptr.Deref(s.Spec.Replicas, 1))
	})),
	ageColumn,
}, workloadWide(func(s *appsv1.StatefulSet) *corev1.PodTemplateSpec { return &s.Spec.Template }, func(s *appsv1.StatefulSet) *metav1.LabelSelector { return s.Spec.Selector })[:2]...)

var daemonSetColumns = append([]Column{
	col("Desired", "integer", "The desired number of daemon pods.", cell(func(d *appsv1.DaemonSet) any { return int64(d.Status.DesiredNumberScheduled) })),
	col("Current", "integer", "The current number of daemon pods.", cell(func(d *appsv1.DaemonSet) any { return int64(d.Status.CurrentNumberScheduled) })),
	col("Ready", "integer", "The number of daemon pods that are ready.", cell(func(d *appsv1.DaemonSet) any { return int64(d.Status.NumberReady) })),
	col("Up-to-date", "integer", "The number of daemon pods that run the desired pod template.", cell(func(d *appsv1.DaemonSet) any { return int64(d.Status.UpdatedNumberScheduled) })),
	col("Available", "integer", "The number of daemon pods that are available.", cell(func(d *appsv1.DaemonSet) any { return int64(d.Status.NumberAvailable) })),
	col("Node Selector", "string", "The node selector of the daemon pods.", cell(func(d *appsv1.DaemonSet) any {
		var kv []string
		for k, v := range d.Spec.Template.Spec.NodeSelector {
			kv = append(kv, k+"="+v)
		}
		sort.Strings(kv)
		return orNone(strings.Join(kv, ","))
	})),
	ageColumn,
}, workloadWide(func(d *appsv1.DaemonSet) *corev1.PodTemplateSpec { return &d.Spec.Template }, func(d *appsv1.DaemonSet) *metav1.LabelSelector { return d.Spec.Selector })...)

func jobCondition(j *batchv1.Job, t batchv1.JobConditionType) bool {
	for _, c := range j.Status.Conditions {
		if c.Type == t && c.Status == corev1.ConditionTrue {
			return true
		}
	}
	return false
}

var jobColumns = append([]Column{
	col("Status", "string", "Status of the job.", cell(func(j *batchv1.Job) any {
		switch {
		case jobCondition(j, batchv1.JobComplete):
			return "Complete"
		case jobCondition(j, batchv1.JobFailed):
			return "Failed"
		case j.DeletionTimestamp != nil:
			return "Terminating"
		case jobCondition(j, batchv1.JobSuspended):
			return "Suspended"
		case jobCondition(j, batchv1.JobFailureTarget):
			return "FailureTarget"
		case jobCondition(j, batchv1.JobSuccessCriteriaMet):
			return "SuccessCriteriaMet"
		}
		return "Running"
	})),
	col("Completions", "string", "The desired number of successfully finished pods the job should be run with.", cell(func(j *batchv1.Job) any {
		if j.Spec.Completions == nil {
			return fmt.Sprintf("%d/1 of %d", j.Status.Succeeded, ptr.Deref(j.Spec.Parallelism, 1))
		}
		return fmt.Sprintf("%d/%d", j.Status.Succeeded, *j.Spec.Completions)
	})),
	col("Duration", "string", "Time required to complete the job.", cell(func(j *batchv1.Job) any {
		switch {
		case j.Status.StartTime == nil:
			return ""
		case j.Status.CompletionTime == nil:
			return duration.HumanDuration(time.Since(j.Status.StartTime.Time))
		}
		return duration.HumanDuration(j.Status.CompletionTime.Sub(j.Status.StartTime.Time))
	})),
	ageColumn,
}, workloadWide(func(j *batchv1.Job) *corev1.PodTemplateSpec { return &j.Spec.Template }, func(j *batchv1.Job) *metav1.LabelSelector { return j.Spec.Selector })...)

var cronJobColumns = append([]Column{
	col("Schedule", "string", "The schedule for running the job.", cell(func(c *batchv1.CronJob) any { return c.Spec.Schedule })),
	col("Timezone", "string", "The time zone of the schedule.", cell(func(c *batchv1.CronJob) any {
		if c.Spec.TimeZone == nil {
			return "<none>"
		}
		return *c.Spec.TimeZone
	})),
	col("Suspend", "boolean", "Whether the cron job is suspended.", cell(func(c *batchv1.CronJob) any { return boolString(c.Spec.Suspend != nil && *c.Spec.Suspend) })),
	col("Active", "integer", "The number of running jobs.", cell(func(c *batchv1.CronJob) any { return int64(len(c.Status.Active)) })),
	col("Last Schedule", "string", "When the job was last scheduled.", cell(func(c *batchv1.CronJob) any {
		if c.Status.LastScheduleTime == nil {
			return "<none>"
		}
		return Age(*c.Status.LastScheduleTime)
	})),
	ageColumn,
}, workloadWide(func(c *batchv1.CronJob) *corev1.PodTemplateSpec { return &c.Spec.JobTemplate.Spec.Template },
	func(c *batchv1.CronJob) *metav1.LabelSelector { return c.Spec.JobTemplate.Spec.Selector })...)

var controllerRevisionColumns = []Column{
	col("Controller", "string", "Controller of the object.", cell(func(r *appsv1.ControllerRevision) any {
		ref := metav1.GetControllerOf(r)
		if ref == nil {
			return "<none>"
		}
		gv, _ := schema.ParseGroupVersion(ref.APIVersion)
		return strings.ToLower(gv.WithKind(ref.Kind).GroupKind().String()) + "/" + ref.Name
	})),
	col("Revision", "integer", "Revision indicates the revision of the state represented by Data.", cell(func(r *appsv1.ControllerRevision) any { return r.Revision })),
	ageColumn,
}

var leaseColumns = []Column{
	col("Holder", "string", "The holder of the lease.", cell(func(l *coordinationv1.Lease) any {
		if l.Spec.HolderIdentity == nil {
			return ""
		}
		return *l.Spec.HolderIdentity
	})),
	ageColumn,
}

var endpointSliceColumns = []Column{
	col("AddressType", "string", "The type of addresses in the slice.", cell(func(e *discoveryv1.EndpointSlice) any { return string(e.AddressType) })),
	col("Ports", "string", "The ports of the slice.", cell(func(e *discoveryv1.EndpointSlice) any {
		var ports []string
		for _, p := range e.Ports {
			if p.Port != nil {
				ports = append(ports, itoa(*p.Port))
			}
		}
		return orDefault(strings.Join(ports, ","), "<unset>")
	})),
	col("Endpoints", "string", "The addresses of the slice.", cell(func(e *discoveryv1.EndpointSlice) any {
		var addrs []string
		for _, ep := range e.Endpoints {
			addrs = append(addrs, ep.Addresses...)
		}
		return orDefault(strings.Join(addrs, ","), "<unset>")
	})),
	ageColumn,
}

var priorityClassColumns = []Column{
	col("Value", "integer", "The value of this priority class.", cell(func(pc *schedulingv1.PriorityClass) any { return int64(pc.Value) })),
	col("Global-Default", "boolean", "Whether this is the default priority class of pods without one.", cell(func(pc *schedulingv1.PriorityClass) any { return pc.GlobalDefault })),
	ageColumn,
	col("PreemptionPolicy", "string", "The policy for preempting pods with lower priority.", cell(func(pc *schedulingv1.PriorityClass) any {
		if pc.PreemptionPolicy == nil {
			return ""
		}
		return string(*pc.PreemptionPolicy)
	})),
}

var ingressColumns = []Column{
	col("Class", "string", "The name of the IngressClass resource that should be used for ingress.", cell(func(i *networkingv1.Ingress) any {
		return orNone(ptr.Deref(i.Spec.IngressClassName, ""))
	})),
	col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule", cell(func(i *networkingv1.Ingress) any {
		var hosts []string
		for _, r := range i.Spec.Rules {
			if r.Host != "" {
				hosts = append(hosts, r.Host)
			}
		}
		switch {
		case len(hosts) == 0:
			return "*"
		case len(hosts) > 3:
			return fmt.Sprintf("%s + %d more...", strings.Join(hosts[:3], ","), len(i.Spec.Rules)-3)
		}
		return strings.Join(hosts, ",")
	})),
	col("Address", "string", "Address is a list containing ingress points for the load-balancer", cell(func(i *networkingv1.Ingress) any {
		var addrs []string
		for _, in := range i.Status.LoadBalancer.Ingress {
			if a := cmp.Or(in.IP, in.Hostname); a != "" && !slices.Contains(addrs, a) {
				addrs = append(addrs, a)
			}
		}
		sort.Strings(addrs)
		return strings.Join(addrs, ",")
	})),
	col("Ports", "string", "Ports of TLS configurations that open", cell(func(i *networkingv1.Ingress) any {
		if len(i.Spec.TLS) > 0 {
			return "80, 443"
		}
		return "80"
	})),
	ageColumn,
}

var ingressClassColumns = []Column{
	col("Controller", "string", "Controller that is responsible for handling this class", cell(func(c *networkingv1.IngressClass) any { return c.Spec.Controller })),
	col("Parameters", "string", "A reference to a resource with additional parameters", cell(func(c *networkingv1.IngressClass) any {
		p := c.Spec.Parameters
		if p == nil {
			return "<none>"
		}
		kind := p.Kind
		if p.APIGroup != nil {
			kind += "." + *p.APIGroup
		}
		return kind + "/" + p.Name
	})),
	ageColumn,
}

var serviceCIDRColumns = []Column{
	col("CIDRs", "string", "The IP ranges of the ServiceCIDR.", cell(func(c *networkingv1.ServiceCIDR) any { return strings.Join(c.Spec.CIDRs, ",") })),
	ageColumn,
}

var ipAddressColumns = []Column{
	col("ParentRef", "string", "The object that holds the address.", cell(func(ip *networkingv1.IPAddress) any {
		ref := ip.Spec.ParentRef
		if ref == nil {
			return "<none>"
		}
		out := strings.ToLower(schema.GroupResource{Group: ref.Group, Resource: ref.Resource}.String())
		if ref.Namespace != "" {
			out += "/" + ref.Namespace
		}
		return out + "/" + ref.Name
	})),
	ageColumn,
}
