package node

import (
	"context"
	"fmt"
	"maps"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	runtimeapi "k8s.io/cri-api/pkg/apis/runtime/v1"
)

// containerEnv is the container's environment as the kubelet makes it:
// envFrom first, then env in order, each value able to refer to the ones
// before it with $(NAME).
func (k *Kubelet) containerEnv(ctx context.Context, pod *corev1.Pod, c *corev1.Container, podIP string) ([]*runtimeapi.KeyValue, error) {
	var order []string
	vars := map[string]string{}
	set := func(name, value string) {
		if _, ok := vars[name]; !ok {
			order = append(order, name)
		}
		vars[name] = value
	}
	// The services' variables: referred to by $(NAME), and given to the
	// container unless it sets the same name itself.
	services := k.serviceEnv(pod)
	expandWith := func(v string) string {
		return expand(v, func(name string) (string, bool) {
			if v, ok := vars[name]; ok {
				return v, true
			}
			v, ok := services[name]
			return v, ok
		})
	}
	for _, from := range c.EnvFrom {
		data, err := k.envSource(ctx, pod.Namespace, from)
		if err != nil {
			return nil, err
		}
		for _, name := range slices.Sorted(maps.Keys(data)) {
			set(from.Prefix+name, data[name])
		}
	}
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			set(e.Name, expandWith(e.Value))
			continue
		}
		v, ok, err := k.envValueFrom(ctx, pod, c, e.ValueFrom, podIP)
		if err != nil {
			return nil, fmt.Errorf("env %s: %w", e.Name, err)
		}
		if ok {
			set(e.Name, v)
		}
	}
	for _, name := range slices.Sorted(maps.Keys(services)) {
		if _, ok := vars[name]; !ok {
			set(name, services[name])
		}
	}
	env := make([]*runtimeapi.KeyValue, 0, len(order))
	for _, name := range order {
		env = append(env, &runtimeapi.KeyValue{Key: name, Value: vars[name]})
	}
	return env, nil
}

// serviceEnv are the Docker-link variables of the services a pod sees, as
// the kubelet makes them: the kubernetes Service in default always, and
// with enableServiceLinks (the default) every service of the pod's
// namespace that has a ClusterIP.
func (k *Kubelet) serviceEnv(pod *corev1.Pod) map[string]string {
	out := map[string]string{}
	if k.services == nil {
		return out
	}
	var svcs []*corev1.Service
	if pod.Spec.EnableServiceLinks == nil || *pod.Spec.EnableServiceLinks {
		svcs, _ = k.services.Services(pod.Namespace).List(labels.Everything())
	}
	if api, err := k.services.Services(metav1.NamespaceDefault).Get("kubernetes"); err == nil {
		svcs = append(svcs, api)
	}
	for _, s := range svcs {
		ip := s.Spec.ClusterIP
		if ip == "" || ip == corev1.ClusterIPNone || len(s.Spec.Ports) == 0 {
			continue
		}
		name := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		first := s.Spec.Ports[0]
		out[name+"_SERVICE_HOST"] = ip
		out[name+"_SERVICE_PORT"] = strconv.Itoa(int(first.Port))
		out[name+"_PORT"] = fmt.Sprintf("%s://%s", strings.ToLower(string(first.Protocol)), net.JoinHostPort(ip, strconv.Itoa(int(first.Port))))
		for _, p := range s.Spec.Ports {
			proto := strings.ToLower(string(p.Protocol))
			port := strconv.Itoa(int(p.Port))
			if p.Name != "" {
				out[name+"_SERVICE_PORT_"+strings.ToUpper(strings.ReplaceAll(p.Name, "-", "_"))] = port
			}
			prefix := name + "_PORT_" + port + "_" + strings.ToUpper(proto)
			out[prefix] = proto + "://" + net.JoinHostPort(ip, port)
			out[prefix+"_PROTO"] = proto
			out[prefix+"_PORT"] = port
			out[prefix+"_ADDR"] = ip
		}
	}
	return out
}

// envSource reads the ConfigMap or Secret an envFrom names.
func (k *Kubelet) envSource(ctx context.Context, ns string, from corev1.EnvFromSource) (map[string]string, error) {
	var data map[string][]byte
	var err error
	switch {
	case from.ConfigMapRef != nil:
		data, err = k.sourceData(ctx, ns, false, from.ConfigMapRef.Name, from.ConfigMapRef.Optional)
	case from.SecretRef != nil:
		data, err = k.sourceData(ctx, ns, true, from.SecretRef.Name, from.SecretRef.Optional)
	}
	out := map[string]string{}
	for name, v := range data {
		out[name] = string(v)
	}
	return out, err
}

// sourceData reads the data of a ConfigMap (its binary data too) or of a
// Secret, by key. A missing optional one has none.
func (k *Kubelet) sourceData(ctx context.Context, ns string, secret bool, name string, optional *bool) (map[string][]byte, error) {
	kind := "configmap"
	if secret {
		kind = "secret"
	}
	// The pods' volumes keep a watch on what they show; anything else
	// (or what is not listed yet) is read from the API.
	obj, watched := k.sources.get(source{secret, ns, name})
	var err error
	switch {
	case watched && obj == nil:
		err = apierrors.NewNotFound(corev1.Resource(kind+"s"), name)
	case watched:
	case secret:
		obj, err = k.cfg.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	default:
		obj, err = k.cfg.Client.CoreV1().ConfigMaps(ns).Get(ctx, name, metav1.GetOptions{})
	}
	var data map[string][]byte
	switch o := obj.(type) {
	case *corev1.Secret:
		data = o.Data
	case *corev1.ConfigMap:
		data = maps.Clone(o.BinaryData)
		if data == nil {
			data = map[string][]byte{}
		}
		for key, v := range o.Data {
			data[key] = []byte(v)
		}
	}
	switch {
	case apierrors.IsNotFound(err) && optional != nil && *optional:
		return nil, nil
	case apierrors.IsNotFound(err):
		return nil, fmt.Errorf("%s %q not found", kind, name)
	case err != nil:
		return nil, fmt.Errorf("%s %q: %w", kind, name, err)
	}
	return data, nil
}

// envValueFrom resolves one env var's source. ok is false for an optional
// key that is missing: the variable is left out.
func (k *Kubelet) envValueFrom(ctx context.Context, pod *corev1.Pod, c *corev1.Container, from *corev1.EnvVarSource, podIP string) (string, bool, error) {
	switch {
	case from.FieldRef != nil:
		v, err := podField(pod, from.FieldRef.FieldPath, podIP, k.cfg.NodeIPs)
		return v, err == nil, err
	case from.ResourceFieldRef != nil:
		v, err := resourceField(c, pod, from.ResourceFieldRef, k.allocatable)
		return v, err == nil, err
	case from.ConfigMapKeyRef != nil:
		ref := from.ConfigMapKeyRef
		return k.sourceKey(ctx, pod.Namespace, false, ref.Name, ref.Key, ref.Optional)
	case from.SecretKeyRef != nil:
		ref := from.SecretKeyRef
		return k.sourceKey(ctx, pod.Namespace, true, ref.Name, ref.Key, ref.Optional)
	}
	return "", false, fmt.Errorf("no value source")
}

// sourceKey is one key of a ConfigMap or Secret; ok is false for an
// optional one that is missing.
func (k *Kubelet) sourceKey(ctx context.Context, ns string, secret bool, name, key string, optional *bool) (string, bool, error) {
	data, err := k.sourceData(ctx, ns, secret, name, optional)
	if err != nil {
		return "", false, err
	}
	v, ok := data[key]
	if !ok && (optional == nil || !*optional) {
		return "", false, fmt.Errorf("couldn't find key %s in %s %s/%s", key, map[bool]string{true: "Secret", false: "ConfigMap"}[secret], ns, name)
	}
	return string(v), ok, nil
}

// podField is the value of a downward API field path.
func podField(pod *corev1.Pod, path, podIP string, hostIPs []string) (string, error) {
	if name, ok := strings.CutPrefix(path, "metadata.labels['"); ok {
		return pod.Labels[strings.TrimSuffix(name, "']")], nil
	}
	if name, ok := strings.CutPrefix(path, "metadata.annotations['"); ok {
		return pod.Annotations[strings.TrimSuffix(name, "']")], nil
	}
	switch path {
	case "metadata.name":
		return pod.Name, nil
	case "metadata.namespace":
		return pod.Namespace, nil
	case "metadata.uid":
		return string(pod.UID), nil
	case "metadata.labels":
		return formatMap(pod.Labels), nil
	case "metadata.annotations":
		return formatMap(pod.Annotations), nil
	case "spec.nodeName":
		return pod.Spec.NodeName, nil
	case "spec.serviceAccountName":
		return pod.Spec.ServiceAccountName, nil
	case "status.podIP", "status.podIPs":
		return podIP, nil
	case "status.hostIP":
		if len(hostIPs) > 0 {
			return hostIPs[0], nil
		}
		return "", nil
	case "status.hostIPs":
		return strings.Join(hostIPs, ","), nil
	}
	return "", fmt.Errorf("unsupported field path %q", path)
}

// formatMap writes a map as the downward API does: key="value" lines,
// sorted.
func formatMap(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "%s=%q\n", k, m[k])
	}
	return strings.TrimSuffix(b.String(), "\n")
}

// resourceField is a container's request or limit as the downward API
// gives it, in units of the divisor, rounded up.
func resourceField(c *corev1.Container, pod *corev1.Pod, ref *corev1.ResourceFieldSelector, allocatable corev1.ResourceList) (string, error) {
	if ref.ContainerName != "" && ref.ContainerName != c.Name {
		for _, other := range append(append([]corev1.Container{}, pod.Spec.InitContainers...), pod.Spec.Containers...) {
			if other.Name == ref.ContainerName {
				c = &other
				break
			}
		}
	}
	divisor := ref.Divisor
	if divisor.IsZero() {
		divisor = resource.MustParse("1")
	}
	q := quantity(c, ref.Resource)
	if kind, res, _ := strings.Cut(ref.Resource, "."); kind == "limits" && q.IsZero() {
		// No limit: the node's allocatable, as the kubelet gives it.
		q = allocatable[corev1.ResourceName(res)]
	}
	switch ref.Resource {
	case "limits.cpu", "requests.cpu":
		return strconv.FormatInt((q.MilliValue()+divisor.MilliValue()-1)/divisor.MilliValue(), 10), nil
	case "limits.memory", "requests.memory", "limits.ephemeral-storage", "requests.ephemeral-storage":
		return strconv.FormatInt((q.Value()+divisor.Value()-1)/divisor.Value(), 10), nil
	}
	return "", fmt.Errorf("unsupported resource %q", ref.Resource)
}

func quantity(c *corev1.Container, name string) resource.Quantity {
	kind, res, _ := strings.Cut(name, ".")
	list := c.Resources.Limits
	if kind == "requests" {
		list = c.Resources.Requests
	}
	return list[corev1.ResourceName(res)]
}

// expandAll expands $(VAR) references in each of ss.
func expandAll(ss []string, vars func(string) (string, bool)) []string {
	if ss == nil {
		return nil
	}
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = expand(s, vars)
	}
	return out
}

// expand replaces $(NAME) with the value of NAME when it is defined, and
// $$ with $, leaving other references as they are, as Kubernetes expands
// commands, args and env values.
func expand(s string, vars func(string) (string, bool)) string {
	if !strings.Contains(s, "$") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '(':
			end := strings.IndexByte(s[i+2:], ')')
			if end < 0 {
				b.WriteString(s[i:])
				return b.String()
			}
			name := s[i+2 : i+2+end]
			if v, ok := vars(name); ok {
				b.WriteString(v)
			} else {
				b.WriteString(s[i : i+3+end])
			}
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String()
}
