package resource

import (
	"bytes"
	"fmt"
	"maps"
	"math"
	"net"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	pathvalidation "k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	metav1validation "k8s.io/apimachinery/pkg/apis/meta/v1/validation"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/utils/ptr"
)

// The checks below are the part of kube-apiserver's validation that keeps
// stored objects usable by controllers and the kubelet: required fields,
// names, selectors that match their templates, ports in range, rollout
// strategies that can make progress, and the update rules that keep what
// pods were made from (a pod's spec, a Job's template, a StatefulSet's
// identity) as it was. Object metadata is validated for every resource by
// the REST handler.

func dnsLabel(errs field.ErrorList, path *field.Path, v string) field.ErrorList {
	for _, msg := range validation.IsDNS1123Label(v) {
		errs = append(errs, field.Invalid(path, v, msg))
	}
	return errs
}

func validatePod(p, old *corev1.Pod) field.ErrorList {
	errs := validatePodSpec(&p.Spec, field.NewPath("spec"))
	if old != nil {
		return append(errs, validatePodUpdate(&p.Spec, &old.Spec)...)
	}
	if p.Spec.NodeName != "" && len(p.Spec.SchedulingGates) > 0 {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "nodeName"), "cannot be set until all schedulingGates have been cleared"))
	}
	return errs
}

// updatablePodSpecFields are the parts of a pod's spec an update may
// change, in kube-apiserver's words.
var updatablePodSpecFields = []string{
	"`spec.containers[*].image`",
	"`spec.initContainers[*].image`",
	"`spec.activeDeadlineSeconds`",
	"`spec.tolerations` (only additions to existing tolerations)",
	"`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
}

// validatePodUpdate is kube-apiserver's ValidatePodUpdate for the spec: a
// running pod is what the kubelet made of its spec, so an update may only
// change images, shorten the deadline, add tolerations and remove
// scheduling gates. Everything else is forbidden, with the difference
// shown. The node is set through the binding subresource, not here.
func validatePodUpdate(s, old *corev1.PodSpec) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	for _, c := range []struct {
		cs, old []corev1.Container
		path    *field.Path
	}{{s.Containers, old.Containers, spec.Child("containers")}, {s.InitContainers, old.InitContainers, spec.Child("initContainers")}} {
		if len(c.cs) != len(c.old) {
			return append(errs, field.Forbidden(c.path, "pod updates may not add or remove containers"))
		}
		for i, ctr := range c.cs {
			if strings.TrimSpace(ctr.Image) != ctr.Image {
				errs = append(errs, field.Invalid(c.path.Index(i).Child("image"), ctr.Image, "must not have leading or trailing whitespace"))
			}
		}
	}
	deadline := spec.Child("activeDeadlineSeconds")
	switch n, o := s.ActiveDeadlineSeconds, old.ActiveDeadlineSeconds; {
	case n == nil && o != nil:
		return append(errs, field.Invalid(deadline, n, "must not update from a positive integer to nil value"))
	case n != nil && (*n < 0 || *n > math.MaxInt32):
		return append(errs, field.Invalid(deadline, *n, validation.InclusiveRangeError(0, math.MaxInt32)))
	case n != nil && o != nil && *o < *n:
		return append(errs, field.Invalid(deadline, *n, "must be less than or equal to previous value"))
	}
	for _, o := range old.Tolerations {
		kept := slices.ContainsFunc(s.Tolerations, func(t corev1.Toleration) bool {
			o.TolerationSeconds = t.TolerationSeconds
			return reflect.DeepEqual(o, t)
		})
		if !kept {
			return append(errs, field.Forbidden(spec.Child("tolerations"), "existing toleration can not be modified except its tolerationSeconds"))
		}
	}
	for i, g := range s.SchedulingGates {
		if !slices.Contains(old.SchedulingGates, g) {
			errs = append(errs, field.Forbidden(spec.Child("schedulingGates").Index(i).Child("name"), fmt.Sprintf("only deletion is allowed, but found new scheduling gate '%s'", g.Name)))
		}
	}
	if apiequality.Semantic.DeepEqual(s, old) {
		return errs
	}
	munged := s.DeepCopy()
	for i := range munged.Containers {
		munged.Containers[i].Image = old.Containers[i].Image
	}
	for i := range munged.InitContainers {
		munged.InitContainers[i].Image = old.InitContainers[i].Image
	}
	munged.ActiveDeadlineSeconds = old.ActiveDeadlineSeconds
	munged.SchedulingGates = old.SchedulingGates
	munged.Tolerations = old.Tolerations
	if g, og := munged.TerminationGracePeriodSeconds, old.TerminationGracePeriodSeconds; og != nil && *og < 0 && g != nil && *g == 1 {
		munged.TerminationGracePeriodSeconds = og
	}
	if !apiequality.Semantic.DeepEqual(munged, old) {
		errs = append(errs, field.Forbidden(spec, fmt.Sprintf("pod updates may not change fields other than %s\n%v",
			strings.Join(updatablePodSpecFields, ","), cmp.Diff(*old, *munged))))
	}
	return errs
}

func validatePodSpec(s *corev1.PodSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(path.Child("containers"), ""))
	}
	volumes := sets.New[string]()
	for i, v := range s.Volumes {
		vp := path.Child("volumes").Index(i)
		switch {
		case v.Name == "":
			errs = append(errs, field.Required(vp.Child("name"), ""))
		case volumes.Has(v.Name):
			errs = append(errs, field.Duplicate(vp.Child("name"), v.Name))
		default:
			errs = dnsLabel(errs, vp.Child("name"), v.Name)
		}
		volumes.Insert(v.Name)
		errs = append(errs, validateVolumeSource(&v.VolumeSource, vp)...)
	}
	names := sets.New[string]()
	check := func(cs []corev1.Container, p *field.Path) {
		for i, c := range cs {
			cp := p.Index(i)
			if c.Name == "" {
				errs = append(errs, field.Required(cp.Child("name"), ""))
			} else {
				errs = dnsLabel(errs, cp.Child("name"), c.Name)
				if names.Has(c.Name) {
					errs = append(errs, field.Duplicate(cp.Child("name"), c.Name))
				}
				names.Insert(c.Name)
			}
			if c.Image == "" {
				errs = append(errs, field.Required(cp.Child("image"), ""))
			}
			for j, port := range c.Ports {
				if port.ContainerPort < 1 || port.ContainerPort > 65535 {
					errs = append(errs, field.Invalid(cp.Child("ports").Index(j).Child("containerPort"), port.ContainerPort, validation.InclusiveRangeError(1, 65535)))
				}
			}
			mountPaths := sets.New[string]()
			for j, m := range c.VolumeMounts {
				mp := cp.Child("volumeMounts").Index(j)
				switch {
				case m.Name == "":
					errs = append(errs, field.Required(mp.Child("name"), ""))
				case !volumes.Has(m.Name):
					errs = append(errs, field.NotFound(mp.Child("name"), m.Name))
				}
				switch {
				case m.MountPath == "":
					errs = append(errs, field.Required(mp.Child("mountPath"), ""))
				case mountPaths.Has(m.MountPath):
					errs = append(errs, field.Invalid(mp.Child("mountPath"), m.MountPath, "must be unique"))
				}
				mountPaths.Insert(m.MountPath)
				if strings.HasPrefix(m.SubPath, "/") || slices.Contains(strings.Split(m.SubPath, "/"), "..") {
					errs = append(errs, field.Invalid(mp.Child("subPath"), m.SubPath, "must be a relative path without '..'"))
				}
			}
			for j, from := range c.EnvFrom {
				fp := cp.Child("envFrom").Index(j)
				switch {
				case from.ConfigMapRef != nil && from.SecretRef != nil:
					errs = append(errs, field.Invalid(fp, "", "may not have more than one field specified at a time"))
				case from.ConfigMapRef != nil && from.ConfigMapRef.Name == "":
					errs = append(errs, field.Required(fp.Child("configMapRef", "name"), ""))
				case from.SecretRef != nil && from.SecretRef.Name == "":
					errs = append(errs, field.Required(fp.Child("secretRef", "name"), ""))
				case from.ConfigMapRef == nil && from.SecretRef == nil:
					errs = append(errs, field.Invalid(fp, "", "must specify one of: `configMapRef` or `secretRef`"))
				}
			}
		}
	}
	check(s.InitContainers, path.Child("initContainers"))
	check(s.Containers, path.Child("containers"))
	switch s.RestartPolicy {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(path.Child("restartPolicy"), s.RestartPolicy,
			[]corev1.RestartPolicy{corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}))
	}
	if s.NodeName != "" {
		for _, msg := range validation.IsDNS1123Subdomain(s.NodeName) {
			errs = append(errs, field.Invalid(path.Child("nodeName"), s.NodeName, msg))
		}
	}
	if s.SecurityContext != nil {
		seen := map[string]bool{}
		for i, sysctl := range s.SecurityContext.Sysctls {
			p := path.Child("securityContext", "sysctls").Index(i).Child("name")
			switch {
			case len(sysctl.Name) > 253 || !sysctlName.MatchString(sysctl.Name):
				errs = append(errs, field.Invalid(p, sysctl.Name, "must have at most 253 characters and match regex "+sysctlName.String()))
			case seen[sysctl.Name]:
				errs = append(errs, field.Duplicate(p, sysctl.Name))
			}
			seen[sysctl.Name] = true
		}
	}
	return errs
}

// sysctlName is what a sysctl's name must look like, as kube-apiserver
// checks it (dots or slashes between segments).
var sysctlName = regexp.MustCompile(`^([a-z0-9]([-_a-z0-9]*[a-z0-9])?[\./])*[a-z0-9]([-_a-z0-9]*[a-z0-9])?$`)

// validateVolumeSource checks that a volume has exactly one source, as
// kube-apiserver requires, and the names its common sources need.
func validateVolumeSource(v *corev1.VolumeSource, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	n := 0
	for _, set := range []bool{v.HostPath != nil, v.EmptyDir != nil, v.GCEPersistentDisk != nil, v.AWSElasticBlockStore != nil, v.GitRepo != nil,
		v.Secret != nil, v.NFS != nil, v.ISCSI != nil, v.Glusterfs != nil, v.PersistentVolumeClaim != nil, v.RBD != nil, v.FlexVolume != nil,
		v.Cinder != nil, v.CephFS != nil, v.Flocker != nil, v.DownwardAPI != nil, v.FC != nil, v.AzureFile != nil, v.ConfigMap != nil,
		v.VsphereVolume != nil, v.Quobyte != nil, v.AzureDisk != nil, v.PhotonPersistentDisk != nil, v.Projected != nil, v.PortworxVolume != nil,
		v.ScaleIO != nil, v.StorageOS != nil, v.CSI != nil, v.Ephemeral != nil, v.Image != nil} {
		if set {
			n++
		}
	}
	switch {
	case n == 0:
		errs = append(errs, field.Required(path, "must specify a volume type"))
	case n > 1:
		errs = append(errs, field.Forbidden(path, "may not specify more than 1 volume type"))
	}
	switch {
	case v.ConfigMap != nil && v.ConfigMap.Name == "":
		errs = append(errs, field.Required(path.Child("configMap", "name"), ""))
	case v.Secret != nil && v.Secret.SecretName == "":
		errs = append(errs, field.Required(path.Child("secret", "secretName"), ""))
	case v.HostPath != nil && v.HostPath.Path == "":
		errs = append(errs, field.Required(path.Child("hostPath", "path"), ""))
	case v.PersistentVolumeClaim != nil && v.PersistentVolumeClaim.ClaimName == "":
		errs = append(errs, field.Required(path.Child("persistentVolumeClaim", "claimName"), ""))
	}
	return errs
}

// validateSelected checks a workload's selector and that its pod template
// carries the labels it selects.
func validateSelected(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if sel == nil {
		return append(errs, field.Required(path.Child("selector"), ""))
	}
	errs = append(errs, metav1validation.ValidateLabelSelector(sel, metav1validation.LabelSelectorValidationOptions{}, path.Child("selector"))...)
	if len(sel.MatchLabels)+len(sel.MatchExpressions) == 0 {
		errs = append(errs, field.Invalid(path.Child("selector"), sel, "empty selector is invalid for a workload"))
	}
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil && !s.Matches(labels.Set(tmpl.Labels)) {
		errs = append(errs, field.Invalid(path.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
	}
	return append(errs, validatePodSpec(&tmpl.Spec, path.Child("template", "spec"))...)
}

// nonNegative checks an optional count.
func nonNegative(v *int32, path *field.Path) field.ErrorList {
	if v == nil {
		return nil
	}
	return apivalidation.ValidateNonnegativeField(int64(*v), path)
}

// validateWorkload checks what the apps/v1 workloads share: a selector
// that matches the template and, on update, has not changed (oldSel reads
// it from the old object), and replicas that are not negative (nil for a
// DaemonSet).
func validateWorkload(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, replicas *int32, update bool, oldSel func() *metav1.LabelSelector) field.ErrorList {
	spec := field.NewPath("spec")
	errs := validateSelected(sel, tmpl, spec)
	errs = append(errs, nonNegative(replicas, spec.Child("replicas"))...)
	if update {
		errs = append(errs, apivalidation.ValidateImmutableField(sel, oldSel(), spec.Child("selector"))...)
	}
	return errs
}

func validateDeployment(d, old *appsv1.Deployment) field.ErrorList {
	errs := validateWorkload(d.Spec.Selector, &d.Spec.Template, d.Spec.Replicas, old != nil, func() *metav1.LabelSelector { return old.Spec.Selector })
	errs = append(errs, restartsAlways(&d.Spec.Template)...)
	spec := field.NewPath("spec")
	strategy := spec.Child("strategy")
	switch d.Spec.Strategy.Type {
	case appsv1.RecreateDeploymentStrategyType:
		if d.Spec.Strategy.RollingUpdate != nil {
			errs = append(errs, field.Forbidden(strategy.Child("rollingUpdate"), "may not be specified when strategy `type` is 'Recreate'"))
		}
	case appsv1.RollingUpdateDeploymentStrategyType:
		if ru := d.Spec.Strategy.RollingUpdate; ru != nil {
			path := strategy.Child("rollingUpdate")
			errs = append(errs, validateRollingUpdate(ru.MaxUnavailable, ru.MaxSurge, false, path)...)
			if intOrPercent(ru.MaxUnavailable) == 0 && intOrPercent(ru.MaxSurge) == 0 {
				errs = append(errs, field.Invalid(path.Child("maxUnavailable"), ru.MaxUnavailable, "may not be 0 when `maxSurge` is 0"))
			}
		}
	default:
		errs = append(errs, field.NotSupported(strategy, d.Spec.Strategy, []string{string(appsv1.RecreateDeploymentStrategyType), string(appsv1.RollingUpdateDeploymentStrategyType)}))
	}
	errs = append(errs, apivalidation.ValidateNonnegativeField(int64(d.Spec.MinReadySeconds), spec.Child("minReadySeconds"))...)
	errs = append(errs, nonNegative(d.Spec.RevisionHistoryLimit, spec.Child("revisionHistoryLimit"))...)
	if p := d.Spec.ProgressDeadlineSeconds; p != nil && *p <= d.Spec.MinReadySeconds {
		errs = append(errs, field.Invalid(spec.Child("progressDeadlineSeconds"), *p, "must be greater than minReadySeconds"))
	}
	return errs
}

// validateRollingUpdate checks a rolling update's maxUnavailable and
// maxSurge as kube-apiserver does: counts that are not negative or
// percentages, no more than all pods unavailable and, for a DaemonSet
// (surgeCapped), no more than all pods surging.
func validateRollingUpdate(maxUnavailable, maxSurge *intstr.IntOrString, surgeCapped bool, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	fields := []struct {
		v      *intstr.IntOrString
		name   string
		capped bool
	}{{maxUnavailable, "maxUnavailable", true}, {maxSurge, "maxSurge", surgeCapped}}
	for _, f := range fields {
		switch {
		case f.v == nil:
		case f.v.Type == intstr.Int:
			errs = append(errs, apivalidation.ValidateNonnegativeField(int64(f.v.IntValue()), path.Child(f.name))...)
		default:
			for _, msg := range validation.IsValidPercent(f.v.StrVal) {
				errs = append(errs, field.Invalid(path.Child(f.name), f.v, msg))
			}
		}
	}
	// After the form of both, in kube-apiserver's order of causes.
	for _, f := range fields {
		if f.capped && f.v != nil && f.v.Type == intstr.String && intOrPercent(f.v) > 100 {
			errs = append(errs, field.Invalid(path.Child(f.name), f.v, "must not be greater than 100%"))
		}
	}
	return errs
}

// intOrPercent is the number in a count or a valid percentage, 0 for
// anything else.
func intOrPercent(v *intstr.IntOrString) int {
	switch {
	case v == nil:
		return 0
	case v.Type == intstr.Int:
		return v.IntValue()
	case len(validation.IsValidPercent(v.StrVal)) == 0:
		n, _ := strconv.Atoi(strings.TrimSuffix(v.StrVal, "%"))
		return n
	}
	return 0
}

// validateReplicationController judges a ReplicationController as a
// ReplicaSet, but that its selector is a set of labels, which may change.
func validateReplicationController(r, _ *corev1.ReplicationController) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if len(r.Spec.Selector) == 0 {
		errs = append(errs, field.Required(spec.Child("selector"), ""))
	}
	if r.Spec.Template == nil {
		return append(errs, field.Required(spec.Child("template"), ""))
	}
	errs = append(errs, validateWorkload(replicationControllerSelector(r), r.Spec.Template, r.Spec.Replicas, false, nil)...)
	errs = append(errs, restartsAlways(r.Spec.Template)...)
	return append(errs, apivalidation.ValidateNonnegativeField(int64(r.Spec.MinReadySeconds), spec.Child("minReadySeconds"))...)
}

// restartsAlways refuses a template whose pods would not be restarted: a
// controller that keeps pods running needs them to be.
func restartsAlways(t *corev1.PodTemplateSpec) field.ErrorList {
	if p := t.Spec.RestartPolicy; p != corev1.RestartPolicyAlways {
		return field.ErrorList{field.NotSupported(field.NewPath("spec", "template", "spec", "restartPolicy"), p, []string{string(corev1.RestartPolicyAlways)})}
	}
	return nil
}

func validateReplicaSet(r, old *appsv1.ReplicaSet) field.ErrorList {
	return validateWorkload(r.Spec.Selector, &r.Spec.Template, r.Spec.Replicas, old != nil, func() *metav1.LabelSelector { return old.Spec.Selector })
}

func validateStatefulSet(s, old *appsv1.StatefulSet) field.ErrorList {
	errs := validateWorkload(s.Spec.Selector, &s.Spec.Template, s.Spec.Replicas, old != nil, func() *metav1.LabelSelector { return old.Spec.Selector })
	switch s.Spec.PodManagementPolicy {
	case appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("spec", "podManagementPolicy"), s.Spec.PodManagementPolicy,
			[]appsv1.PodManagementPolicyType{appsv1.OrderedReadyPodManagement, appsv1.ParallelPodManagement}))
	}
	strategy := field.NewPath("spec", "updateStrategy")
	switch ru := s.Spec.UpdateStrategy.RollingUpdate; s.Spec.UpdateStrategy.Type {
	case appsv1.OnDeleteStatefulSetStrategyType:
		if ru != nil {
			errs = append(errs, field.Invalid(strategy.Child("rollingUpdate"), ru, "only allowed for updateStrategy 'RollingUpdate'"))
		}
	case appsv1.RollingUpdateStatefulSetStrategyType:
		if ru != nil {
			errs = append(errs, nonNegative(ru.Partition, strategy.Child("rollingUpdate", "partition"))...)
		}
	default:
		errs = append(errs, field.NotSupported(strategy.Child("type"), s.Spec.UpdateStrategy.Type,
			[]appsv1.StatefulSetUpdateStrategyType{appsv1.RollingUpdateStatefulSetStrategyType, appsv1.OnDeleteStatefulSetStrategyType}))
	}
	if old != nil {
		// What a StatefulSet's pods and claims were made from stays.
		spec := s.Spec.DeepCopy()
		spec.Replicas, spec.Template, spec.UpdateStrategy = old.Spec.Replicas, old.Spec.Template, old.Spec.UpdateStrategy
		spec.MinReadySeconds, spec.Ordinals, spec.RevisionHistoryLimit = old.Spec.MinReadySeconds, old.Spec.Ordinals, old.Spec.RevisionHistoryLimit
		spec.PersistentVolumeClaimRetentionPolicy = old.Spec.PersistentVolumeClaimRetentionPolicy
		if !apiequality.Semantic.DeepEqual(*spec, old.Spec) {
			errs = append(errs, field.Forbidden(field.NewPath("spec"), "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"))
		}
	}
	return errs
}

func validateDaemonSet(d, old *appsv1.DaemonSet) field.ErrorList {
	errs := validateWorkload(d.Spec.Selector, &d.Spec.Template, nil, old != nil, func() *metav1.LabelSelector { return old.Spec.Selector })
	if ru := d.Spec.UpdateStrategy.RollingUpdate; ru != nil && d.Spec.UpdateStrategy.Type == appsv1.RollingUpdateDaemonSetStrategyType {
		// A DaemonSet either surges or takes pods down, one of the two.
		path := field.NewPath("spec", "updateStrategy", "rollingUpdate")
		errs = append(errs, validateRollingUpdate(ru.MaxUnavailable, ru.MaxSurge, true, path)...)
		switch unavailable, surge := intOrPercent(ru.MaxUnavailable) != 0, intOrPercent(ru.MaxSurge) != 0; {
		case unavailable && surge:
			errs = append(errs, field.Invalid(path.Child("maxSurge"), ru.MaxSurge, "may not be set when maxUnavailable is non-zero"))
		case !unavailable && !surge:
			errs = append(errs, field.Required(path.Child("maxUnavailable"), "cannot be 0 when maxSurge is 0"))
		}
	}
	return errs
}

// validateControllerRevision is kube-apiserver's: a revision holds data,
// a number that is not negative, and its data never changes.
func validateControllerRevision(r, old *appsv1.ControllerRevision) field.ErrorList {
	var errs field.ErrorList
	if r.Data.Raw == nil && r.Data.Object == nil {
		errs = append(errs, field.Required(field.NewPath("data"), "data is mandatory"))
	}
	errs = append(errs, apivalidation.ValidateNonnegativeField(r.Revision, field.NewPath("revision"))...)
	if old != nil && !bytes.Equal(r.Data.Raw, old.Data.Raw) {
		errs = append(errs, field.Invalid(field.NewPath("data"), nil, "field is immutable"))
	}
	return errs
}

func validateJobSpec(s *batchv1.JobSpec, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	switch s.Template.Spec.RestartPolicy {
	case corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(path.Child("template", "spec", "restartPolicy"), s.Template.Spec.RestartPolicy,
			[]corev1.RestartPolicy{corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever}))
	}
	errs = append(errs, nonNegative(s.Parallelism, path.Child("parallelism"))...)
	errs = append(errs, nonNegative(s.Completions, path.Child("completions"))...)
	errs = append(errs, nonNegative(s.BackoffLimit, path.Child("backoffLimit"))...)
	if s.ActiveDeadlineSeconds != nil && *s.ActiveDeadlineSeconds <= 0 {
		errs = append(errs, field.Invalid(path.Child("activeDeadlineSeconds"), *s.ActiveDeadlineSeconds, "must be greater than 0"))
	}
	errs = append(errs, validatePerIndexLimits(s, path)...)
	if s.PodFailurePolicy != nil {
		errs = append(errs, validatePodFailurePolicy(s, path)...)
	}
	if s.SuccessPolicy != nil {
		errs = append(errs, validateSuccessPolicy(s, path)...)
	}
	return append(errs, validatePodSpec(&s.Template.Spec, path.Child("template", "spec"))...)
}

// indexedJob says whether the Job spec gives its pods completion indexes.
func indexedJob(s *batchv1.JobSpec) bool {
	return s.CompletionMode != nil && *s.CompletionMode == batchv1.IndexedCompletion
}

// maxIndexedJobCompletions bounds completions and maxFailedIndexes of a
// Job with backoffLimitPerIndex, as kube-apiserver does: its status lists
// indexes.
const maxIndexedJobCompletions = 100000

// validatePerIndexLimits is kube-apiserver's check of backoffLimitPerIndex
// and maxFailedIndexes.
func validatePerIndexLimits(s *batchv1.JobSpec, spec *field.Path) field.ErrorList {
	var errs field.ErrorList
	if v := s.BackoffLimitPerIndex; v != nil {
		if !indexedJob(s) {
			errs = append(errs, field.Invalid(spec.Child("backoffLimitPerIndex"), *v, "requires indexed completion mode"))
		}
		errs = append(errs, nonNegative(v, spec.Child("backoffLimitPerIndex"))...)
		if c := s.Completions; c != nil && *c > maxIndexedJobCompletions {
			errs = append(errs, field.Invalid(spec.Child("completions"), *c, fmt.Sprintf("must be less than or equal to %d when backoffLimitPerIndex is specified", maxIndexedJobCompletions)))
		}
	}
	if v := s.MaxFailedIndexes; v != nil {
		switch {
		case s.BackoffLimitPerIndex == nil:
			errs = append(errs, field.Required(spec.Child("backoffLimitPerIndex"), "when maxFailedIndexes is specified"))
		case *v < 0 || *v > maxIndexedJobCompletions || (s.Completions != nil && *v > *s.Completions):
			errs = append(errs, field.Invalid(spec.Child("maxFailedIndexes"), *v, "must be between 0 and completions"))
		}
	}
	return errs
}

// validatePodFailurePolicy is kube-apiserver's check of the pod failure
// policy of the Job spec at spec.
func validatePodFailurePolicy(s *batchv1.JobSpec, spec *field.Path) field.ErrorList {
	policy, path := s.PodFailurePolicy, spec.Child("podFailurePolicy")
	var errs field.ErrorList
	if s.Template.Spec.RestartPolicy != corev1.RestartPolicyNever {
		errs = append(errs, field.Invalid(spec.Child("template", "spec", "restartPolicy"), s.Template.Spec.RestartPolicy,
			"only \"Never\" is supported when podFailurePolicy is specified"))
	}
	errs = append(errs, ruleCount(path.Child("rules"), len(policy.Rules), 0)...)
	containers := sets.New[string]()
	for _, c := range append(s.Template.Spec.InitContainers, s.Template.Spec.Containers...) {
		containers.Insert(c.Name)
	}
	actions := []batchv1.PodFailurePolicyAction{batchv1.PodFailurePolicyActionFailJob, batchv1.PodFailurePolicyActionFailIndex,
		batchv1.PodFailurePolicyActionIgnore, batchv1.PodFailurePolicyActionCount}
	for i, rule := range policy.Rules {
		rp := path.Child("rules").Index(i)
		switch {
		case !slices.Contains(actions, rule.Action):
			errs = append(errs, field.NotSupported(rp.Child("action"), rule.Action, actions))
		case rule.Action == batchv1.PodFailurePolicyActionFailIndex && s.BackoffLimitPerIndex == nil:
			errs = append(errs, field.Invalid(rp.Child("action"), rule.Action, "requires the backoffLimitPerIndex to be set"))
		}
		switch {
		case (rule.OnExitCodes == nil) == (len(rule.OnPodConditions) == 0):
			errs = append(errs, field.Invalid(rp, field.OmitValueType{}, "specifying one of OnExitCodes and OnPodConditions is required"))
		case rule.OnExitCodes != nil:
			errs = append(errs, validateOnExitCodes(rule.OnExitCodes, containers, rp.Child("onExitCodes"))...)
		}
		for j, c := range rule.OnPodConditions {
			cp := rp.Child("onPodConditions").Index(j)
			if c.Type == "" {
				errs = append(errs, field.Required(cp.Child("type"), ""))
			}
			statuses := []corev1.ConditionStatus{corev1.ConditionTrue, corev1.ConditionFalse, corev1.ConditionUnknown}
			if !slices.Contains(statuses, c.Status) {
				errs = append(errs, field.NotSupported(cp.Child("status"), c.Status, statuses))
			}
		}
	}
	return errs
}

// ruleCount checks the number of a Job policy's rules against
// kube-apiserver's bounds: at least least, at most 20.
func ruleCount(path *field.Path, n, least int) field.ErrorList {
	switch {
	case n < least:
		return field.ErrorList{field.Required(path, "")}
	case n > 20:
		return field.ErrorList{field.TooMany(path, n, 20)}
	}
	return nil
}

// validateSuccessPolicy is kube-apiserver's check of the success policy
// of the Job spec at spec: Indexed Jobs only; each rule names indexes (an
// ordered interval list within completions), a count, or both.
func validateSuccessPolicy(s *batchv1.JobSpec, spec *field.Path) field.ErrorList {
	policy, path := s.SuccessPolicy, spec.Child("successPolicy")
	var errs field.ErrorList
	if !indexedJob(s) {
		errs = append(errs, field.Invalid(spec.Child("completionMode"), s.CompletionMode, "requires the Indexed completion mode"))
	}
	errs = append(errs, ruleCount(path.Child("rules"), len(policy.Rules), 1)...)
	completions := int64(0)
	if s.Completions != nil {
		completions = int64(*s.Completions)
	}
	for i, rule := range policy.Rules {
		rp := path.Child("rules").Index(i)
		if rule.SucceededIndexes == nil && rule.SucceededCount == nil {
			errs = append(errs, field.Required(rp, "at least one of succeededCount or succeededIndexes must be specified"))
		}
		listed := completions
		if rule.SucceededIndexes != nil {
			n, err := countIndexes(*rule.SucceededIndexes, completions)
			if err != "" {
				errs = append(errs, field.Invalid(rp.Child("succeededIndexes"), *rule.SucceededIndexes, err))
			}
			listed = n
		}
		if c := rule.SucceededCount; c != nil && (*c < 0 || int64(*c) > listed) {
			errs = append(errs, field.Invalid(rp.Child("succeededCount"), *c, fmt.Sprintf("must be between 0 and %d", listed)))
		}
	}
	return errs
}

// countIndexes checks an interval list of completion indexes ("1,3-5":
// ascending, not overlapping, below completions) and counts them; the
// second result says what is wrong, if anything.
func countIndexes(list string, completions int64) (int64, string) {
	var n int64
	prev := int64(-1)
	for _, part := range strings.Split(list, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		first, err := strconv.ParseInt(lo, 10, 32)
		last := first
		if err == nil && isRange {
			last, err = strconv.ParseInt(hi, 10, 32)
		}
		switch {
		case err != nil || first < 0:
			return 0, fmt.Sprintf("%q is not an index or a range of indexes", part)
		case first > last || first <= prev:
			return 0, "must be ordered and non-overlapping"
		case last >= completions:
			return 0, fmt.Sprintf("too large: %d is not below completions (%d)", last, completions)
		}
		n += last - first + 1
		prev = last
	}
	return n, ""
}

func validateOnExitCodes(r *batchv1.PodFailurePolicyOnExitCodesRequirement, containers sets.Set[string], path *field.Path) field.ErrorList {
	var errs field.ErrorList
	if r.ContainerName != nil && !containers.Has(*r.ContainerName) {
		errs = append(errs, field.Invalid(path.Child("containerName"), *r.ContainerName, "must be one of the container or initContainer names in the pod template"))
	}
	operators := []batchv1.PodFailurePolicyOnExitCodesOperator{batchv1.PodFailurePolicyOnExitCodesOpIn, batchv1.PodFailurePolicyOnExitCodesOpNotIn}
	if !slices.Contains(operators, r.Operator) {
		errs = append(errs, field.NotSupported(path.Child("operator"), r.Operator, operators))
	}
	if len(r.Values) == 0 {
		errs = append(errs, field.Invalid(path.Child("values"), r.Values, "at least one value is required"))
	}
	if len(r.Values) > 255 {
		errs = append(errs, field.TooMany(path.Child("values"), len(r.Values), 255))
	}
	for i, v := range r.Values {
		vp := path.Child("values").Index(i)
		switch {
		case r.Operator == batchv1.PodFailurePolicyOnExitCodesOpIn && v == 0:
			errs = append(errs, field.Invalid(vp, v, "must not be 0 for the In operator"))
		case i > 0 && v == r.Values[i-1]:
			errs = append(errs, field.Duplicate(vp, v))
		case i > 0 && v < r.Values[i-1]:
			errs = append(errs, field.Invalid(vp, v, "must be ordered"))
		}
	}
	return errs
}

func validateJob(j, old *batchv1.Job) field.ErrorList {
	spec := field.NewPath("spec")
	errs := validateJobSpec(&j.Spec, spec)
	if j.Spec.Selector != nil {
		errs = append(errs, validateSelected(j.Spec.Selector, &j.Spec.Template, spec)...)
	}
	if old != nil {
		errs = append(errs, validateJobUpdate(&j.Spec, &old.Spec, old.Spec.Suspend != nil && *old.Spec.Suspend && old.Status.StartTime == nil)...)
	}
	return errs
}

// validateJobUpdate is kube-apiserver's: what a Job's pods were made from
// and how they are counted never change, except that an Indexed Job's
// completions change with its parallelism, and a Job suspended before it
// ever started may be moved to other nodes.
func validateJobUpdate(s, old *batchv1.JobSpec, neverStarted bool) field.ErrorList {
	spec := field.NewPath("spec")
	errs := apivalidation.ValidateImmutableField(s.Selector, old.Selector, spec.Child("selector"))
	if !indexedJob(s) {
		errs = append(errs, apivalidation.ValidateImmutableField(s.Completions, old.Completions, spec.Child("completions"))...)
	} else if s.Completions != nil && !reflect.DeepEqual(s.Completions, old.Completions) && (s.Parallelism == nil || *s.Completions != *s.Parallelism) {
		errs = append(errs, field.Invalid(spec.Child("completions"), s.Completions, "can only be modified in tandem with spec.parallelism"))
	}
	oldTmpl := &old.Template
	if neverStarted {
		t := s.Template.Spec.DeepCopy()
		oldTmpl = old.Template.DeepCopy()
		switch {
		case t.Affinity == nil && oldTmpl.Spec.Affinity != nil:
			oldTmpl.Spec.Affinity.NodeAffinity = nil
			if *oldTmpl.Spec.Affinity == (corev1.Affinity{}) {
				oldTmpl.Spec.Affinity = nil
			}
		case t.Affinity != nil && oldTmpl.Spec.Affinity == nil:
			oldTmpl.Spec.Affinity = &corev1.Affinity{NodeAffinity: t.Affinity.NodeAffinity}
		case t.Affinity != nil:
			oldTmpl.Spec.Affinity.NodeAffinity = t.Affinity.NodeAffinity
		}
		oldTmpl.Spec.NodeSelector, oldTmpl.Spec.Tolerations, oldTmpl.Spec.SchedulingGates = t.NodeSelector, t.Tolerations, t.SchedulingGates
		oldTmpl.Annotations, oldTmpl.Labels = s.Template.Annotations, s.Template.Labels
	}
	errs = append(errs, apivalidation.ValidateImmutableField(&s.Template, oldTmpl, spec.Child("template"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(s.CompletionMode, old.CompletionMode, spec.Child("completionMode"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(s.PodFailurePolicy, old.PodFailurePolicy, spec.Child("podFailurePolicy"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(s.BackoffLimitPerIndex, old.BackoffLimitPerIndex, spec.Child("backoffLimitPerIndex"))...)
	errs = append(errs, apivalidation.ValidateImmutableField(s.ManagedBy, old.ManagedBy, spec.Child("managedBy"))...)
	return append(errs, apivalidation.ValidateImmutableField(s.SuccessPolicy, old.SuccessPolicy, spec.Child("successPolicy"))...)
}

func validateCronJob(c, _ *batchv1.CronJob) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if c.Spec.Schedule == "" {
		errs = append(errs, field.Required(spec.Child("schedule"), ""))
	}
	switch c.Spec.ConcurrencyPolicy {
	case batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent:
	default:
		errs = append(errs, field.NotSupported(spec.Child("concurrencyPolicy"), c.Spec.ConcurrencyPolicy,
			[]batchv1.ConcurrencyPolicy{batchv1.AllowConcurrent, batchv1.ForbidConcurrent, batchv1.ReplaceConcurrent}))
	}
	return append(errs, validateJobSpec(&c.Spec.JobTemplate.Spec, spec.Child("jobTemplate", "spec"))...)
}

func validateService(s, old *corev1.Service) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName:
	default:
		errs = append(errs, field.NotSupported(spec.Child("type"), s.Spec.Type,
			[]corev1.ServiceType{corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer, corev1.ServiceTypeExternalName}))
	}
	if s.Spec.Type != corev1.ServiceTypeExternalName && len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
		errs = append(errs, field.Required(spec.Child("ports"), ""))
	}
	names := sets.New[string]()
	// A port, and a node port, serve one protocol once.
	ports, nodePorts := sets.New[corev1.ServicePort](), sets.New[corev1.ServicePort]()
	for i, p := range s.Spec.Ports {
		pp := spec.Child("ports").Index(i)
		if key := (corev1.ServicePort{Protocol: p.Protocol, Port: p.Port}); ports.Has(key) {
			errs = append(errs, field.Duplicate(pp, key))
		} else {
			ports.Insert(key)
		}
		if key := (corev1.ServicePort{Protocol: p.Protocol, NodePort: p.NodePort}); p.NodePort != 0 {
			if nodePorts.Has(key) {
				errs = append(errs, field.Duplicate(pp, p))
			}
			nodePorts.Insert(key)
		}
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), "when more than one port is defined"))
		}
		if p.Name != "" {
			errs = dnsLabel(errs, pp.Child("name"), p.Name)
			if names.Has(p.Name) {
				errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
			}
			names.Insert(p.Name)
		}
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, validation.InclusiveRangeError(1, 65535)))
		}
	}
	if old != nil && NeedsClusterIP(old) && NeedsClusterIP(s) && old.Spec.ClusterIP != "" && s.Spec.ClusterIP != old.Spec.ClusterIP {
		errs = append(errs, field.Invalid(spec.Child("clusterIP"), s.Spec.ClusterIP, "field is immutable"))
	}
	if !NeedsClusterIP(s) {
		for _, f := range []struct {
			name string
			set  bool
		}{{"clusterIPs", s.Spec.ClusterIP != "" || len(s.Spec.ClusterIPs) > 0}, {"ipFamilies", len(s.Spec.IPFamilies) > 0}, {"ipFamilyPolicy", s.Spec.IPFamilyPolicy != nil}} {
			if f.set {
				errs = append(errs, field.Forbidden(spec.Child(f.name), "may not be set for ExternalName services"))
			}
		}
	}
	if s.Spec.HealthCheckNodePort != 0 && !NeedsHealthCheckNodePort(s) {
		errs = append(errs, field.Forbidden(spec.Child("healthCheckNodePort"), "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'"))
	}
	for i, p := range s.Spec.Ports {
		if p.NodePort != 0 && s.Spec.Type == corev1.ServiceTypeClusterIP {
			errs = append(errs, field.Forbidden(spec.Child("ports").Index(i).Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
		}
	}
	return errs
}

// validateKeys checks the keys of a ConfigMap's or Secret's data.
func validateKeys[V any](data map[string]V, path *field.Path) field.ErrorList {
	var errs field.ErrorList
	for k := range data {
		for _, msg := range validation.IsConfigMapKey(k) {
			errs = append(errs, field.Invalid(path.Key(k), k, msg))
		}
	}
	return errs
}

// maxDataSize is the most data a ConfigMap or a Secret may hold, as in
// kube-apiserver.
const maxDataSize = 1 << 20

func dataSize[V string | []byte](data map[string]V) int {
	n := 0
	for _, v := range data {
		n += len(v)
	}
	return n
}

// immutableData refuses, once a ConfigMap or Secret is marked immutable,
// unmarking it or changing what the named fields hold.
func immutableData(immutable, oldImmutable *bool, changed map[string]bool) field.ErrorList {
	if oldImmutable == nil || !*oldImmutable {
		return nil
	}
	const msg = "field is immutable when `immutable` is set"
	var errs field.ErrorList
	if immutable == nil || !*immutable {
		errs = append(errs, field.Forbidden(field.NewPath("immutable"), msg))
	}
	for _, name := range slices.Sorted(maps.Keys(changed)) {
		if changed[name] {
			errs = append(errs, field.Forbidden(field.NewPath(name), msg))
		}
	}
	return errs
}

func validateConfigMap(c, old *corev1.ConfigMap) field.ErrorList {
	errs := validateKeys(c.Data, field.NewPath("data"))
	errs = append(errs, validateKeys(c.BinaryData, field.NewPath("binaryData"))...)
	for k := range c.BinaryData {
		if _, dup := c.Data[k]; dup {
			errs = append(errs, field.Invalid(field.NewPath("binaryData").Key(k), k, "duplicate of key present in data"))
		}
	}
	if dataSize(c.Data)+dataSize(c.BinaryData) > maxDataSize {
		errs = append(errs, field.TooLong(field.NewPath(""), "", maxDataSize))
	}
	if old != nil {
		errs = append(errs, immutableData(c.Immutable, old.Immutable, map[string]bool{
			"data":       !reflect.DeepEqual(c.Data, old.Data),
			"binaryData": !reflect.DeepEqual(c.BinaryData, old.BinaryData),
		})...)
	}
	return errs
}

func validateSecret(s, old *corev1.Secret) field.ErrorList {
	errs := validateKeys(s.Data, field.NewPath("data"))
	if dataSize(s.Data) > maxDataSize {
		errs = append(errs, field.TooLong(field.NewPath("data"), "", maxDataSize))
	}
	if old != nil {
		errs = append(errs, apivalidation.ValidateImmutableField(s.Type, old.Type, field.NewPath("type"))...)
		errs = append(errs, immutableData(s.Immutable, old.Immutable, map[string]bool{"data": !reflect.DeepEqual(s.Data, old.Data)})...)
	}
	return errs
}

// validateNode keeps a node's pod CIDRs and provider ID once they are set,
// as kube-apiserver does: node IPAM and the pod network rely on them.
func validateNode(n, old *corev1.Node) field.ErrorList {
	if old == nil {
		return nil
	}
	var errs field.ErrorList
	if (len(old.Spec.PodCIDRs) > 0 && !slices.Equal(n.Spec.PodCIDRs, old.Spec.PodCIDRs)) || (old.Spec.PodCIDR != "" && n.Spec.PodCIDR != old.Spec.PodCIDR) {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "podCIDRs"), "node updates may not change podCIDR except from \"\" to valid"))
	}
	if old.Spec.ProviderID != "" && n.Spec.ProviderID != old.Spec.ProviderID {
		errs = append(errs, field.Forbidden(field.NewPath("spec", "providerID"), "node updates may not change providerID except from \"\" to valid"))
	}
	return errs
}

// The priority classes every cluster has, as Kubernetes ships them, and
// the highest value a user's class may have.
const (
	SystemClusterCritical        = "system-cluster-critical"
	SystemNodeCritical           = "system-node-critical"
	systemCriticalPriority       = 2000000000
	highestUserDefinablePriority = 1000000000
)

// SystemPriorityClasses returns the classes the leader creates at
// bootstrap.
func SystemPriorityClasses() []*schedulingv1.PriorityClass {
	class := func(name string, value int32, desc string) *schedulingv1.PriorityClass {
		return &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Value: value, Description: desc}
	}
	return []*schedulingv1.PriorityClass{
		class(SystemClusterCritical, systemCriticalPriority, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
		class(SystemNodeCritical, systemCriticalPriority+1000, "Used for system critical pods that must not be moved from their current node."),
	}
}

func validatePriorityClass(pc, old *schedulingv1.PriorityClass) field.ErrorList {
	var errs field.ErrorList
	if strings.HasPrefix(pc.Name, "system-") {
		known := false
		for _, sys := range SystemPriorityClasses() {
			known = known || (sys.Name == pc.Name && sys.Value == pc.Value)
		}
		if !known {
			errs = append(errs, field.Forbidden(field.NewPath("metadata", "name"), "priority class names with 'system-' prefix are reserved for system use only"))
		}
	} else if pc.Value > highestUserDefinablePriority {
		errs = append(errs, field.Forbidden(field.NewPath("value"), fmt.Sprintf("maximum allowed value of a user defined priority is %d", highestUserDefinablePriority)))
	}
	if p := pc.PreemptionPolicy; p != nil && *p != corev1.PreemptLowerPriority && *p != corev1.PreemptNever {
		errs = append(errs, field.NotSupported(field.NewPath("preemptionPolicy"), *p, []string{string(corev1.PreemptLowerPriority), string(corev1.PreemptNever)}))
	}
	if old != nil {
		if pc.Value != old.Value {
			errs = append(errs, field.Invalid(field.NewPath("value"), pc.Value, "field is immutable"))
		}
		if !reflect.DeepEqual(pc.PreemptionPolicy, old.PreemptionPolicy) {
			errs = append(errs, field.Invalid(field.NewPath("preemptionPolicy"), pc.PreemptionPolicy, "field is immutable"))
		}
	}
	return errs
}

// ValidateEphemeralContainersUpdate checks a write of a pod's ephemeral
// containers as kube-apiserver does: they are only added, never changed
// or removed, each with a name unique in the pod and an image, and none
// with what only a regular container has (ports, probes, lifecycle,
// resources).
func ValidateEphemeralContainersUpdate(pod *corev1.Pod, old []corev1.EphemeralContainer) field.ErrorList {
	var errs field.ErrorList
	path := field.NewPath("spec", "ephemeralContainers")
	byName := map[string]corev1.EphemeralContainer{}
	for _, e := range pod.Spec.EphemeralContainers {
		byName[e.Name] = e
	}
	for _, o := range old {
		if e, ok := byName[o.Name]; !ok || !apiequality.Semantic.DeepEqual(e, o) {
			errs = append(errs, field.Forbidden(path, fmt.Sprintf("existing ephemeral containers %q may not be changed", o.Name)))
		}
	}
	names := map[string]bool{}
	for _, c := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
		names[c.Name] = true
	}
	for i, e := range pod.Spec.EphemeralContainers {
		p := path.Index(i)
		for _, msg := range validation.IsDNS1123Label(e.Name) {
			errs = append(errs, field.Invalid(p.Child("name"), e.Name, msg))
		}
		if names[e.Name] {
			errs = append(errs, field.Duplicate(p.Child("name"), e.Name))
		}
		names[e.Name] = true
		if e.Image == "" {
			errs = append(errs, field.Required(p.Child("image"), ""))
		}
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"ports", len(e.Ports) > 0}, {"livenessProbe", e.LivenessProbe != nil}, {"readinessProbe", e.ReadinessProbe != nil},
			{"startupProbe", e.StartupProbe != nil}, {"lifecycle", e.Lifecycle != nil},
			{"resources", len(e.Resources.Limits)+len(e.Resources.Requests) > 0},
		} {
			if f.set {
				errs = append(errs, field.Forbidden(p.Child(f.name), "cannot be set for an Ephemeral Container"))
			}
		}
	}
	return errs
}

// validateIngress checks an Ingress as kube-apiserver does: rules or a
// default backend, hosts that are DNS names (a leading wildcard allowed),
// absolute paths with a path type, backends that name exactly one Service
// port or resource, TLS hosts and Secret names, and an ingress class name
// that agrees with the legacy annotation.
func validateIngress(ing, old *networkingv1.Ingress) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if len(ing.Spec.Rules) == 0 && ing.Spec.DefaultBackend == nil {
		errs = append(errs, field.Invalid(spec, ing.Spec.Rules, "either `defaultBackend` or `rules` must be specified"))
	}
	if b := ing.Spec.DefaultBackend; b != nil {
		errs = append(errs, validateIngressBackend(b, spec.Child("defaultBackend"))...)
	}
	for i, rule := range ing.Spec.Rules {
		p := spec.Child("rules").Index(i)
		if rule.Host != "" {
			if net.ParseIP(rule.Host) != nil {
				errs = append(errs, field.Invalid(p.Child("host"), rule.Host, "must be a DNS name, not an IP address"))
			}
			errs = append(errs, ingressHost(rule.Host, p.Child("host"))...)
		}
		if rule.HTTP == nil {
			continue
		}
		if len(rule.HTTP.Paths) == 0 {
			errs = append(errs, field.Required(p.Child("http", "paths"), ""))
		}
		for j, path := range rule.HTTP.Paths {
			errs = append(errs, validateIngressPath(path, p.Child("http", "paths").Index(j))...)
		}
	}
	for i, tls := range ing.Spec.TLS {
		p := spec.Child("tls").Index(i)
		for j, host := range tls.Hosts {
			errs = append(errs, ingressHost(host, p.Child("hosts").Index(j))...)
		}
		if tls.SecretName != "" {
			for _, msg := range validation.IsDNS1123Subdomain(tls.SecretName) {
				errs = append(errs, field.Invalid(p.Child("secretName"), tls.SecretName, msg))
			}
		}
	}
	if name := ing.Spec.IngressClassName; name != nil {
		for _, msg := range validation.IsDNS1123Subdomain(*name) {
			errs = append(errs, field.Invalid(spec.Child("ingressClassName"), *name, msg))
		}
		if a, ok := ing.Annotations[ingressClassAnnotation]; ok && old == nil && a != *name {
			errs = append(errs, field.Invalid(field.NewPath("annotations").Child(ingressClassAnnotation), a, "must match `ingressClassName` when both are specified"))
		}
	}
	return errs
}

// ingressClassAnnotation names an Ingress's class before
// spec.ingressClassName did.
const ingressClassAnnotation = "kubernetes.io/ingress.class"

// ingressHost checks a host of an Ingress rule or TLS entry: a DNS name,
// or one whose first label is "*".
func ingressHost(host string, p *field.Path) field.ErrorList {
	check := validation.IsDNS1123Subdomain
	if strings.Contains(host, "*") {
		check = validation.IsWildcardDNS1123Subdomain
	}
	var errs field.ErrorList
	for _, msg := range check(host) {
		errs = append(errs, field.Invalid(p, host, msg))
	}
	return errs
}

// validateIngressPath checks one path of an HTTP rule: Exact and Prefix
// paths are absolute and free of sequences a proxy would reinterpret.
func validateIngressPath(path networkingv1.HTTPIngressPath, p *field.Path) field.ErrorList {
	if path.PathType == nil {
		return field.ErrorList{field.Required(p.Child("pathType"), "pathType must be specified")}
	}
	var errs field.ErrorList
	switch *path.PathType {
	case networkingv1.PathTypeExact, networkingv1.PathTypePrefix:
		if !strings.HasPrefix(path.Path, "/") {
			errs = append(errs, field.Invalid(p.Child("path"), path.Path, "must be an absolute path"))
		}
		for _, seq := range []string{"//", "/./", "/../", "%2f", "%2F"} {
			if strings.Contains(path.Path, seq) {
				errs = append(errs, field.Invalid(p.Child("path"), path.Path, fmt.Sprintf("must not contain '%s'", seq)))
			}
		}
		for _, suffix := range []string{"/..", "/."} {
			if strings.HasSuffix(path.Path, suffix) {
				errs = append(errs, field.Invalid(p.Child("path"), path.Path, fmt.Sprintf("cannot end with '%s'", suffix)))
			}
		}
	case networkingv1.PathTypeImplementationSpecific:
		if path.Path != "" && !strings.HasPrefix(path.Path, "/") {
			errs = append(errs, field.Invalid(p.Child("path"), path.Path, "must be an absolute path"))
		}
	default:
		errs = append(errs, field.NotSupported(p.Child("pathType"), *path.PathType,
			[]string{string(networkingv1.PathTypeExact), string(networkingv1.PathTypeImplementationSpecific), string(networkingv1.PathTypePrefix)}))
	}
	return append(errs, validateIngressBackend(&path.Backend, p.Child("backend"))...)
}

// validateIngressBackend checks that a backend is a Service port (by
// name or number, not both) or a typed reference to a resource.
func validateIngressBackend(b *networkingv1.IngressBackend, p *field.Path) field.ErrorList {
	switch {
	case b.Service != nil && b.Resource != nil:
		return field.ErrorList{field.Invalid(p, "", "cannot set both resource and service backends")}
	case b.Resource != nil:
		return validateTypedReference(b.Resource.APIGroup, b.Resource.Kind, b.Resource.Name, p.Child("resource"))
	case b.Service == nil:
		return field.ErrorList{field.Invalid(p, "", "resource or service backend is required")}
	}
	var errs field.ErrorList
	svc := p.Child("service")
	if b.Service.Name == "" {
		errs = append(errs, field.Required(svc.Child("name"), ""))
	} else {
		for _, msg := range validation.IsDNS1035Label(b.Service.Name) {
			errs = append(errs, field.Invalid(svc.Child("name"), b.Service.Name, msg))
		}
	}
	port := b.Service.Port
	switch {
	case port.Name != "" && port.Number != 0:
		errs = append(errs, field.Invalid(p, "", "cannot set both port name & port number"))
	case port.Name != "":
		for _, msg := range validation.IsValidPortName(port.Name) {
			errs = append(errs, field.Invalid(svc.Child("port", "name"), port.Name, msg))
		}
	case port.Number != 0:
		for _, msg := range validation.IsValidPortNum(int(port.Number)) {
			errs = append(errs, field.Invalid(svc.Child("port", "number"), port.Number, msg))
		}
	default:
		errs = append(errs, field.Required(p, "port name or number is required"))
	}
	return errs
}

// validateTypedReference checks a reference to an object of a kind:
// an optional API group, and a kind and a name that fit in a path.
func validateTypedReference(group *string, kind, name string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if group != nil {
		for _, msg := range validation.IsDNS1123Subdomain(*group) {
			errs = append(errs, field.Invalid(p.Child("apiGroup"), *group, msg))
		}
	}
	for _, f := range []struct{ name, value string }{{"kind", kind}, {"name", name}} {
		if f.value == "" {
			errs = append(errs, field.Required(p.Child(f.name), f.name+" is required"))
		}
		for _, msg := range pathvalidation.IsValidPathSegmentName(f.value) {
			errs = append(errs, field.Invalid(p.Child(f.name), f.value, msg))
		}
	}
	return errs
}

// validateIngressClass checks an IngressClass: a controller named by a
// domain-prefixed path, which never changes, and parameters whose scope
// says where they live.
func validateIngressClass(c, old *networkingv1.IngressClass) field.ErrorList {
	spec := field.NewPath("spec")
	var errs field.ErrorList
	if len(c.Spec.Controller) > 250 {
		errs = append(errs, field.TooLong(spec.Child("controller"), "", 250))
	}
	errs = append(errs, validation.IsDomainPrefixedPath(spec.Child("controller"), c.Spec.Controller)...)
	if old != nil {
		errs = append(errs, apivalidation.ValidateImmutableField(c.Spec.Controller, old.Spec.Controller, spec.Child("controller"))...)
	}
	params := c.Spec.Parameters
	if params == nil {
		return errs
	}
	p := spec.Child("parameters")
	errs = append(errs, validateTypedReference(params.APIGroup, params.Kind, params.Name, p)...)
	switch scope := ptr.Deref(params.Scope, ""); scope {
	case networkingv1.IngressClassParametersReferenceScopeNamespace:
		if params.Namespace == nil {
			errs = append(errs, field.Required(p.Child("namespace"), "`parameters.scope` is set to 'Namespace'"))
		} else {
			for _, msg := range apivalidation.ValidateNamespaceName(*params.Namespace, false) {
				errs = append(errs, field.Invalid(p.Child("namespace"), *params.Namespace, msg))
			}
		}
	case networkingv1.IngressClassParametersReferenceScopeCluster:
		if params.Namespace != nil {
			errs = append(errs, field.Forbidden(p.Child("namespace"), "`parameters.scope` is set to 'Cluster'"))
		}
	case "":
		errs = append(errs, field.Required(p.Child("scope"), ""))
	default:
		errs = append(errs, field.NotSupported(p.Child("scope"), scope,
			[]string{networkingv1.IngressClassParametersReferenceScopeCluster, networkingv1.IngressClassParametersReferenceScopeNamespace}))
	}
	return errs
}

// validateServiceCIDR checks a ServiceCIDR: one IPv4 range (Pontoon's
// Services are IPv4 only), which never changes.
func validateServiceCIDR(c, old *networkingv1.ServiceCIDR) field.ErrorList {
	p := field.NewPath("spec", "cidrs")
	if old != nil {
		return apivalidation.ValidateImmutableField(c.Spec.CIDRs, old.Spec.CIDRs, p)
	}
	if len(c.Spec.CIDRs) != 1 {
		return field.ErrorList{field.Invalid(p, c.Spec.CIDRs, "must hold one IPv4 range: Services are IPv4 only")}
	}
	errs := validation.IsValidCIDR(p.Index(0), c.Spec.CIDRs[0])
	if ip, _, err := net.ParseCIDR(c.Spec.CIDRs[0]); err == nil && ip.To4() == nil {
		errs = append(errs, field.Invalid(p.Index(0), c.Spec.CIDRs[0], "must be an IPv4 range: Services are IPv4 only"))
	}
	return errs
}

// validateIPAddress checks an IPAddress: named by an IP in canonical form
// (IPAddressNames), with a reference to the object that holds it, which
// never changes.
func validateIPAddress(ip, old *networkingv1.IPAddress) field.ErrorList {
	p := field.NewPath("spec", "parentRef")
	if old != nil {
		return apivalidation.ValidateImmutableField(ip.Spec.ParentRef, old.Spec.ParentRef, p)
	}
	ref := ip.Spec.ParentRef
	if ref == nil {
		return field.ErrorList{field.Required(p, "")}
	}
	var errs field.ErrorList
	if ref.Group != "" {
		for _, msg := range validation.IsDNS1123Subdomain(ref.Group) {
			errs = append(errs, field.Invalid(p.Child("group"), ref.Group, msg))
		}
	}
	for _, f := range []struct{ name, value string }{{"resource", ref.Resource}, {"name", ref.Name}, {"namespace", ref.Namespace}} {
		if f.value == "" && f.name != "namespace" {
			errs = append(errs, field.Required(p.Child(f.name), ""))
		}
		for _, msg := range pathvalidation.IsValidPathSegmentName(f.value) {
			errs = append(errs, field.Invalid(p.Child(f.name), f.value, msg))
		}
	}
	return errs
}

// IPAddressNames accepts the name of an IPAddress: an IP written as Go
// (and kube-apiserver) writes it, so one address has one name.
func IPAddressNames(name string, _ bool) []string {
	var msgs []string
	for _, err := range validation.IsValidIP(field.NewPath("metadata", "name"), name) {
		msgs = append(msgs, err.Detail)
	}
	return msgs
}
