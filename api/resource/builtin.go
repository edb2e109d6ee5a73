package resource

import (
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	batchv1 "k8s.io/api/batch/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// typed adapts a hook written for one type to the registry's signature.
func typed[T runtime.Object](f func(T)) func(runtime.Object) {
	return func(obj runtime.Object) { f(obj.(T)) }
}

func typedValidate[T runtime.Object](f func(obj, old T) field.ErrorList) func(obj, old runtime.Object) field.ErrorList {
	return func(obj, old runtime.Object) field.ErrorList {
		var o T
		if old != nil {
			o = old.(T)
		}
		return f(obj.(T), o)
	}
}

func typedUpdate[T runtime.Object](f func(obj, old T)) func(obj, old runtime.Object) {
	return func(obj, old runtime.Object) { f(obj.(T), old.(T)) }
}

func typedFields[T runtime.Object](f func(T) fields.Set) func(runtime.Object) fields.Set {
	return func(obj runtime.Object) fields.Set { return f(obj.(T)) }
}

// Builtin returns the registry of every resource Pontoon serves.
func Builtin() *Registry {
	core, apps, batch := corev1.SchemeGroupVersion, appsv1.SchemeGroupVersion, batchv1.SchemeGroupVersion
	return NewRegistry(
		&Resource{GroupVersion: core, Name: "namespaces", SingularName: "namespace", Kind: "Namespace", ShortNames: []string{"ns"}, Names: validation.ValidateNamespaceName,
			Status: true, New: func() runtime.Object { return &corev1.Namespace{} }, NewList: func() runtime.Object { return &corev1.NamespaceList{} },
			Default: typed(defaultNamespace), PrepareCreate: typed(prepareNamespace), Columns: namespaceColumns, Fields: typedFields(namespaceFields)},
		&Resource{GroupVersion: core, Name: "pods", SingularName: "pod", Kind: "Pod", Namespaced: true, ShortNames: []string{"po"}, Categories: []string{"all"},
			Status: true, Generation: true, Actions: []string{"binding", "eviction"}, Parts: []string{"ephemeralcontainers"},
			Streams: []string{"log", "exec", "attach", "portforward", "proxy"},
			New:     func() runtime.Object { return &corev1.Pod{} }, NewList: func() runtime.Object { return &corev1.PodList{} },
			Default: typed(defaultPod), PrepareCreate: typed(preparePod), PrepareUpdate: typedUpdate(preparePodUpdate), Validate: typedValidate(validatePod), Columns: podColumns, Fields: typedFields(podFields)},
		&Resource{GroupVersion: core, Name: "nodes", SingularName: "node", Kind: "Node", ShortNames: []string{"no"}, Status: true, Streams: []string{"proxy"},
			New: func() runtime.Object { return &corev1.Node{} }, NewList: func() runtime.Object { return &corev1.NodeList{} },
			Validate: typedValidate(validateNode), Columns: nodeColumns, Fields: typedFields(nodeFields)},
		&Resource{GroupVersion: core, Name: "services", SingularName: "service", Kind: "Service", Namespaced: true, ShortNames: []string{"svc"}, Categories: []string{"all"},
			Names: validation.NameIsDNS1035Label, Streams: []string{"proxy"},
			Status: true, New: func() runtime.Object { return &corev1.Service{} }, NewList: func() runtime.Object { return &corev1.ServiceList{} },
			Default: typed(defaultService), PrepareUpdate: typedUpdate(prepareServiceUpdate), Validate: typedValidate(validateService), Columns: serviceColumns,
			Fields: typedFields(serviceFields)},
		&Resource{GroupVersion: core, Name: "endpoints", SingularName: "endpoints", Kind: "Endpoints", Namespaced: true, ShortNames: []string{"ep"},
			New: func() runtime.Object { return &corev1.Endpoints{} }, NewList: func() runtime.Object { return &corev1.EndpointsList{} },
			Columns: endpointsColumns},
		&Resource{GroupVersion: core, Name: "configmaps", SingularName: "configmap", Kind: "ConfigMap", Namespaced: true, ShortNames: []string{"cm"},
			New: func() runtime.Object { return &corev1.ConfigMap{} }, NewList: func() runtime.Object { return &corev1.ConfigMapList{} },
			Validate: typedValidate(validateConfigMap), Columns: configMapColumns},
		&Resource{GroupVersion: core, Name: "secrets", SingularName: "secret", Kind: "Secret", Namespaced: true,
			New: func() runtime.Object { return &corev1.Secret{} }, NewList: func() runtime.Object { return &corev1.SecretList{} },
			Default: typed(defaultSecret), Validate: typedValidate(validateSecret), Columns: secretColumns, Fields: typedFields(secretFields)},
		&Resource{GroupVersion: core, Name: "serviceaccounts", SingularName: "serviceaccount", Kind: "ServiceAccount", Namespaced: true, ShortNames: []string{"sa"},
			New: func() runtime.Object { return &corev1.ServiceAccount{} }, NewList: func() runtime.Object { return &corev1.ServiceAccountList{} },
			Columns: serviceAccountColumns},
		&Resource{GroupVersion: core, Name: "events", SingularName: "event", Kind: "Event", Namespaced: true, ShortNames: []string{"ev"},
			New: func() runtime.Object { return &corev1.Event{} }, NewList: func() runtime.Object { return &corev1.EventList{} },
			Columns: eventColumns, Fields: typedFields(eventFields)},

		&Resource{GroupVersion: apps, Name: "deployments", SingularName: "deployment", Kind: "Deployment", Namespaced: true, ShortNames: []string{"deploy"}, Categories: []string{"all"},
			Status: true, Generation: true, Scale: &Scale{Get: typedScaleGet(deploymentScale), Set: typedScaleSet(func(d *appsv1.Deployment, n int32) { d.Spec.Replicas = &n })},
			New: func() runtime.Object { return &appsv1.Deployment{} }, NewList: func() runtime.Object { return &appsv1.DeploymentList{} },
			Default: typed(defaultDeployment), Validate: typedValidate(validateDeployment), Columns: deploymentColumns},
		&Resource{GroupVersion: core, Name: "replicationcontrollers", SingularName: "replicationcontroller", Kind: "ReplicationController", Namespaced: true, ShortNames: []string{"rc"}, Categories: []string{"all"},
			Status: true, Generation: true, Scale: &Scale{Get: typedScaleGet(replicationControllerScale), Set: typedScaleSet(func(r *corev1.ReplicationController, n int32) { r.Spec.Replicas = &n })},
			New: func() runtime.Object { return &corev1.ReplicationController{} }, NewList: func() runtime.Object { return &corev1.ReplicationControllerList{} },
			Default: typed(defaultReplicationController), Validate: typedValidate(validateReplicationController), Columns: replicationControllerColumns},
		&Resource{GroupVersion: apps, Name: "replicasets", SingularName: "replicaset", Kind: "ReplicaSet", Namespaced: true, ShortNames: []string{"rs"}, Categories: []string{"all"},
			Status: true, Generation: true, Scale: &Scale{Get: typedScaleGet(replicaSetScale), Set: typedScaleSet(func(r *appsv1.ReplicaSet, n int32) { r.Spec.Replicas = &n })},
			New: func() runtime.Object { return &appsv1.ReplicaSet{} }, NewList: func() runtime.Object { return &appsv1.ReplicaSetList{} },
			Default: typed(defaultReplicaSet), Validate: typedValidate(validateReplicaSet), Columns: replicaSetColumns},
		&Resource{GroupVersion: apps, Name: "statefulsets", SingularName: "statefulset", Kind: "StatefulSet", Namespaced: true, ShortNames: []string{"sts"}, Categories: []string{"all"},
			Status: true, Generation: true, Scale: &Scale{Get: typedScaleGet(statefulSetScale), Set: typedScaleSet(func(s *appsv1.StatefulSet, n int32) { s.Spec.Replicas = &n })},
			New: func() runtime.Object { return &appsv1.StatefulSet{} }, NewList: func() runtime.Object { return &appsv1.StatefulSetList{} },
			Default: typed(defaultStatefulSet), Validate: typedValidate(validateStatefulSet), Columns: statefulSetColumns},
		&Resource{GroupVersion: apps, Name: "daemonsets", SingularName: "daemonset", Kind: "DaemonSet", Namespaced: true, ShortNames: []string{"ds"}, Categories: []string{"all"},
			Status: true, Generation: true,
			New: func() runtime.Object { return &appsv1.DaemonSet{} }, NewList: func() runtime.Object { return &appsv1.DaemonSetList{} },
			Default: typed(defaultDaemonSet), Validate: typedValidate(validateDaemonSet), Columns: daemonSetColumns},
		&Resource{GroupVersion: apps, Name: "controllerrevisions", SingularName: "controllerrevision", Kind: "ControllerRevision", Namespaced: true,
			New: func() runtime.Object { return &appsv1.ControllerRevision{} }, NewList: func() runtime.Object { return &appsv1.ControllerRevisionList{} },
			Validate: typedValidate(validateControllerRevision), Columns: controllerRevisionColumns},

		&Resource{GroupVersion: batch, Name: "jobs", SingularName: "job", Kind: "Job", Namespaced: true, Categories: []string{"all"},
			Status: true, Generation: true,
			New: func() runtime.Object { return &batchv1.Job{} }, NewList: func() runtime.Object { return &batchv1.JobList{} },
			Default: typed(defaultJob), PrepareCreate: typed(prepareJob), Validate: typedValidate(validateJob), Columns: jobColumns, Fields: typedFields(jobFields)},
		&Resource{GroupVersion: batch, Name: "cronjobs", SingularName: "cronjob", Kind: "CronJob", Namespaced: true, ShortNames: []string{"cj"}, Categories: []string{"all"},
			Status: true, Generation: true,
			New: func() runtime.Object { return &batchv1.CronJob{} }, NewList: func() runtime.Object { return &batchv1.CronJobList{} },
			Default: typed(defaultCronJob), Validate: typedValidate(validateCronJob), Columns: cronJobColumns},

		&Resource{GroupVersion: coordinationv1.SchemeGroupVersion, Name: "leases", SingularName: "lease", Kind: "Lease", Namespaced: true,
			New: func() runtime.Object { return &coordinationv1.Lease{} }, NewList: func() runtime.Object { return &coordinationv1.LeaseList{} },
			Columns: leaseColumns},
		&Resource{GroupVersion: discoveryv1.SchemeGroupVersion, Name: "endpointslices", SingularName: "endpointslice", Kind: "EndpointSlice", Namespaced: true,
			New: func() runtime.Object { return &discoveryv1.EndpointSlice{} }, NewList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
			Columns: endpointSliceColumns},
		&Resource{GroupVersion: networkingv1.SchemeGroupVersion, Name: "ingresses", SingularName: "ingress", Kind: "Ingress", Namespaced: true, ShortNames: []string{"ing"},
			Status: true, Generation: true,
			New: func() runtime.Object { return &networkingv1.Ingress{} }, NewList: func() runtime.Object { return &networkingv1.IngressList{} },
			Validate: typedValidate(validateIngress), Columns: ingressColumns},
		&Resource{GroupVersion: networkingv1.SchemeGroupVersion, Name: "ingressclasses", SingularName: "ingressclass", Kind: "IngressClass", Generation: true,
			New: func() runtime.Object { return &networkingv1.IngressClass{} }, NewList: func() runtime.Object { return &networkingv1.IngressClassList{} },
			Default: typed(defaultIngressClass), Validate: typedValidate(validateIngressClass), Columns: ingressClassColumns},
		&Resource{GroupVersion: networkingv1.SchemeGroupVersion, Name: "servicecidrs", SingularName: "servicecidr", Kind: "ServiceCIDR", Status: true,
			New: func() runtime.Object { return &networkingv1.ServiceCIDR{} }, NewList: func() runtime.Object { return &networkingv1.ServiceCIDRList{} },
			Validate: typedValidate(validateServiceCIDR), Columns: serviceCIDRColumns},
		&Resource{GroupVersion: networkingv1.SchemeGroupVersion, Name: "ipaddresses", SingularName: "ipaddress", Kind: "IPAddress", ShortNames: []string{"ip"},
			Names: IPAddressNames,
			New:   func() runtime.Object { return &networkingv1.IPAddress{} }, NewList: func() runtime.Object { return &networkingv1.IPAddressList{} },
			Validate: typedValidate(validateIPAddress), Columns: ipAddressColumns},
		&Resource{GroupVersion: schedulingv1.SchemeGroupVersion, Name: "priorityclasses", SingularName: "priorityclass", Kind: "PriorityClass", ShortNames: []string{"pc"},
			New: func() runtime.Object { return &schedulingv1.PriorityClass{} }, NewList: func() runtime.Object { return &schedulingv1.PriorityClassList{} },
			Default: typed(defaultPriorityClass), Validate: typedValidate(validatePriorityClass), Columns: priorityClassColumns},

		&Resource{GroupVersion: authorizationv1.SchemeGroupVersion, Name: "selfsubjectaccessreviews", SingularName: "selfsubjectaccessreview", Kind: "SelfSubjectAccessReview",
			New:      func() runtime.Object { return &authorizationv1.SelfSubjectAccessReview{} },
			Validate: typedValidate(validateAccessReview), Review: typedReview(reviewAccess)},
		&Resource{GroupVersion: authorizationv1.SchemeGroupVersion, Name: "selfsubjectrulesreviews", SingularName: "selfsubjectrulesreview", Kind: "SelfSubjectRulesReview",
			New:      func() runtime.Object { return &authorizationv1.SelfSubjectRulesReview{} },
			Validate: typedValidate(validateRulesReview), Review: typedReview(reviewRules)},
		&Resource{GroupVersion: authenticationv1.SchemeGroupVersion, Name: "selfsubjectreviews", SingularName: "selfsubjectreview", Kind: "SelfSubjectReview",
			New:      func() runtime.Object { return &authenticationv1.SelfSubjectReview{} },
			Validate: typedValidate(validateSelfReview), Review: typedReview(reviewSelf)},
	)
}

func typedScaleGet[T runtime.Object](f func(T) (int32, int32, *metav1.LabelSelector)) func(runtime.Object) (int32, int32, string) {
	return func(obj runtime.Object) (int32, int32, string) {
		spec, status, sel := f(obj.(T))
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			return spec, status, ""
		}
		return spec, status, s.String()
	}
}

func typedScaleSet[T runtime.Object](f func(T, int32)) func(runtime.Object, int32) {
	return func(obj runtime.Object, n int32) { f(obj.(T), n) }
}

func deploymentScale(d *appsv1.Deployment) (int32, int32, *metav1.LabelSelector) {
	return ptr.Deref(d.Spec.Replicas, 1), d.Status.Replicas, d.Spec.Selector
}

func replicationControllerScale(r *corev1.ReplicationController) (int32, int32, *metav1.LabelSelector) {
	return ptr.Deref(r.Spec.Replicas, 1), r.Status.Replicas, replicationControllerSelector(r)
}

// replicationControllerSelector is r's selector, a set of labels, as a
// label selector.
func replicationControllerSelector(r *corev1.ReplicationController) *metav1.LabelSelector {
	return &metav1.LabelSelector{MatchLabels: r.Spec.Selector}
}

func replicaSetScale(r *appsv1.ReplicaSet) (int32, int32, *metav1.LabelSelector) {
	return ptr.Deref(r.Spec.Replicas, 1), r.Status.Replicas, r.Spec.Selector
}

func statefulSetScale(s *appsv1.StatefulSet) (int32, int32, *metav1.LabelSelector) {
	return ptr.Deref(s.Spec.Replicas, 1), s.Status.Replicas, s.Spec.Selector
}

func namespaceFields(ns *corev1.Namespace) fields.Set {
	return fields.Set{"status.phase": string(ns.Status.Phase)}
}

func podFields(p *corev1.Pod) fields.Set {
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         boolString(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

func boolString(b bool) string {
	if b {
		return "true"
	}
	return "false"
}

// serviceFields are kube-apiserver's: kube-proxy lists the Services
// with spec.clusterIP!=None.
func serviceFields(s *corev1.Service) fields.Set {
	return fields.Set{"spec.clusterIP": s.Spec.ClusterIP, "spec.type": string(s.Spec.Type)}
}

func nodeFields(n *corev1.Node) fields.Set {
	return fields.Set{"spec.unschedulable": boolString(n.Spec.Unschedulable)}
}

func secretFields(s *corev1.Secret) fields.Set {
	return fields.Set{"type": string(s.Type)}
}

func jobFields(j *batchv1.Job) fields.Set {
	return fields.Set{"status.successful": itoa(j.Status.Succeeded)}
}

func eventFields(e *corev1.Event) fields.Set {
	return fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         e.Source.Component,
		"type":                           e.Type,
	}
}
