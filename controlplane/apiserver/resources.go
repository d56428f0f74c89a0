package apiserver

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

func col(name, typ, desc string, priority int32) metav1.TableColumnDefinition {
	return metav1.TableColumnDefinition{Name: name, Type: typ, Format: "", Description: desc, Priority: priority}
}

func ptr[T any](v T) *T { return &v }

// builtinResources is the table of every resource skep serves.
func builtinResources() []*resource {
	rs := []*resource{
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Namespace"), plural: "namespaces", shortNames: []string{"ns"},
			subresources: []string{"status", "finalize"},
			newObj:       func() runtime.Object { return &corev1.Namespace{} },
			newList:      func() runtime.Object { return &corev1.NamespaceList{} },
			nameFn:       apivalidation.NameIsDNSLabel,
			onCreate: func(o runtime.Object) {
				// The namespace controller removes this finalizer (PUT
				// namespaces/<n>/finalize) once the namespace is empty.
				ns := o.(*corev1.Namespace)
				if len(ns.Spec.Finalizers) == 0 {
					ns.Spec.Finalizers = []corev1.FinalizerName{corev1.FinalizerKubernetes}
				}
			},
			defaults: func(o runtime.Object) {
				ns := o.(*corev1.Namespace)
				if ns.Status.Phase == "" {
					ns.Status.Phase = corev1.NamespaceActive
				}
				if ns.Labels == nil {
					ns.Labels = map[string]string{}
				}
				ns.Labels[corev1.LabelMetadataName] = ns.Name
			},
			fields: func(o runtime.Object) fields.Set {
				return fields.Set{"status.phase": string(o.(*corev1.Namespace).Status.Phase)}
			},
			columns: []metav1.TableColumnDefinition{col("Status", "string", "The status of the namespace", 0)},
			row:     func(o runtime.Object) []interface{} { return []interface{}{string(o.(*corev1.Namespace).Status.Phase)} },
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Node"), plural: "nodes", shortNames: []string{"no"},
			subresources: []string{"status"},
			newObj:       func() runtime.Object { return &corev1.Node{} },
			newList:      func() runtime.Object { return &corev1.NodeList{} },
			fields: func(o runtime.Object) fields.Set {
				return fields.Set{"spec.unschedulable": strconv.FormatBool(o.(*corev1.Node).Spec.Unschedulable)}
			},
			columns: []metav1.TableColumnDefinition{
				col("Status", "string", "The status of the node", 0),
				col("Roles", "string", "The roles of the node", 0),
				col("Version", "string", "Kubelet Version reported by the node.", 0),
				col("Internal-IP", "string", "List of internal IPs for the node.", 1),
				col("External-IP", "string", "List of external IPs for the node.", 1),
				col("OS-Image", "string", "OS image reported by the node.", 1),
				col("Kernel-Version", "string", "Kernel version reported by the node.", 1),
				col("Container-Runtime", "string", "Container runtime reported by the node.", 1),
			},
			row: nodeRow,
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Pod"), plural: "pods", shortNames: []string{"po"}, categories: []string{"all"},
			subresources:   []string{"status", "binding", "log"},
			newObj:         func() runtime.Object { return &corev1.Pod{} },
			newList:        func() runtime.Object { return &corev1.PodList{} },
			defaults:       func(o runtime.Object) { defaultPod(o.(*corev1.Pod)) },
			validate:       validatePod,
			fields:         podFields,
			gracefulDelete: podGracefulDelete,
			columns: []metav1.TableColumnDefinition{
				col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic.", 0),
				col("Status", "string", "The aggregate status of the containers in this pod.", 0),
				col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.", 0),
				col("IP", "string", "IP address allocated to the pod.", 1),
				col("Node", "string", "Name of the Node this pod is assigned to.", 1),
				col("Nominated Node", "string", "Name of the node the pod is nominated to.", 1),
				col("Readiness Gates", "string", "Readiness gates of the pod.", 1),
			},
			row: podRow,
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Service"), plural: "services", shortNames: []string{"svc"}, categories: []string{"all"},
			subresources: []string{"status"},
			newObj:       func() runtime.Object { return &corev1.Service{} },
			newList:      func() runtime.Object { return &corev1.ServiceList{} },
			nameFn:       apivalidation.NameIsDNS1035Label,
			defaults:     func(o runtime.Object) { defaultService(o.(*corev1.Service)) },
			validate:     validateService,
			fields: func(o runtime.Object) fields.Set {
				s := o.(*corev1.Service)
				return fields.Set{"spec.clusterIP": s.Spec.ClusterIP, "spec.type": string(s.Spec.Type)}
			},
			columns: []metav1.TableColumnDefinition{
				col("Type", "string", "The type of the service.", 0),
				col("Cluster-IP", "string", "The cluster IP of the service.", 0),
				col("External-IP", "string", "The external IPs of the service.", 0),
				col("Port(s)", "string", "The ports of the service.", 0),
				col("Selector", "string", "The label selector of the service.", 1),
			},
			row: serviceRow,
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Endpoints"), plural: "endpoints", singular: "endpoints", shortNames: []string{"ep"},
			newObj:  func() runtime.Object { return &corev1.Endpoints{} },
			newList: func() runtime.Object { return &corev1.EndpointsList{} },
			columns: []metav1.TableColumnDefinition{col("Endpoints", "string", "Endpoints of the service.", 0)},
			row:     func(o runtime.Object) []interface{} { return []interface{}{endpointsString(o.(*corev1.Endpoints))} },
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("ConfigMap"), plural: "configmaps", shortNames: []string{"cm"},
			newObj:  func() runtime.Object { return &corev1.ConfigMap{} },
			newList: func() runtime.Object { return &corev1.ConfigMapList{} },
			columns: []metav1.TableColumnDefinition{col("Data", "string", "Number of data entries.", 0)},
			row: func(o runtime.Object) []interface{} {
				c := o.(*corev1.ConfigMap)
				return []interface{}{int64(len(c.Data) + len(c.BinaryData))}
			},
			validate: func(o, _ runtime.Object) field.ErrorList {
				c := o.(*corev1.ConfigMap)
				errs := validateDataKeys(keysOf(c.Data, c.BinaryData), field.NewPath("data"))
				size := 0
				for _, v := range c.Data {
					size += len(v)
				}
				for _, v := range c.BinaryData {
					size += len(v)
				}
				if size > maxDataBytes {
					// The whole object, as upstream (an empty path).
					errs = append(errs, field.TooLong(field.NewPath(""), "", maxDataBytes))
				}
				return errs
			},
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Secret"), plural: "secrets",
			newObj:  func() runtime.Object { return &corev1.Secret{} },
			newList: func() runtime.Object { return &corev1.SecretList{} },
			defaults: func(o runtime.Object) {
				s := o.(*corev1.Secret)
				if s.Type == "" {
					s.Type = corev1.SecretTypeOpaque
				}
				// stringData is write-only: it is merged into data.
				for k, v := range s.StringData {
					if s.Data == nil {
						s.Data = map[string][]byte{}
					}
					s.Data[k] = []byte(v)
				}
				s.StringData = nil
			},
			validate: func(o, _ runtime.Object) field.ErrorList {
				s := o.(*corev1.Secret)
				errs := validateDataKeys(keysOf(nil, s.Data), field.NewPath("data"))
				size := 0
				for _, v := range s.Data {
					size += len(v)
				}
				if size > maxDataBytes {
					errs = append(errs, field.TooLong(field.NewPath("data"), "", maxDataBytes))
				}
				return errs
			},
			fields: func(o runtime.Object) fields.Set {
				return fields.Set{"type": string(o.(*corev1.Secret).Type)}
			},
			columns: []metav1.TableColumnDefinition{
				col("Type", "string", "The type of the secret", 0),
				col("Data", "string", "The number of entries in data", 0),
			},
			row: func(o runtime.Object) []interface{} {
				s := o.(*corev1.Secret)
				return []interface{}{string(s.Type), int64(len(s.Data))}
			},
		},
		{
			gvk: corev1.SchemeGroupVersion.WithKind("Event"), plural: "events", shortNames: []string{"ev"},
			newObj:  func() runtime.Object { return &corev1.Event{} },
			newList: func() runtime.Object { return &corev1.EventList{} },
			fields:  eventFields,
			columns: []metav1.TableColumnDefinition{
				col("Last Seen", "string", "Time since the event was last seen.", 0),
				col("Type", "string", "Type of the event.", 0),
				col("Reason", "string", "Reason of the event.", 0),
				col("Object", "string", "The object the event is about.", 0),
				col("Message", "string", "The message of the event.", 0),
			},
			row: eventRow,
		},
		{
			gvk: coordinationv1.SchemeGroupVersion.WithKind("Lease"), plural: "leases",
			newObj:  func() runtime.Object { return &coordinationv1.Lease{} },
			newList: func() runtime.Object { return &coordinationv1.LeaseList{} },
			columns: []metav1.TableColumnDefinition{col("Holder", "string", "The holder of the lease.", 0)},
			row: func(o runtime.Object) []interface{} {
				l := o.(*coordinationv1.Lease)
				h := ""
				if l.Spec.HolderIdentity != nil {
					h = *l.Spec.HolderIdentity
				}
				return []interface{}{h}
			},
		},
		{
			gvk: discoveryv1.SchemeGroupVersion.WithKind("EndpointSlice"), plural: "endpointslices",
			newObj:  func() runtime.Object { return &discoveryv1.EndpointSlice{} },
			newList: func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
			validate: func(o, _ runtime.Object) field.ErrorList {
				s := o.(*discoveryv1.EndpointSlice)
				switch s.AddressType {
				case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
					return nil
				case "":
					return field.ErrorList{field.Required(field.NewPath("addressType"), "")}
				}
				return field.ErrorList{field.NotSupported(field.NewPath("addressType"), s.AddressType, []string{"IPv4", "IPv6", "FQDN"})}
			},
			columns: []metav1.TableColumnDefinition{
				col("AddressType", "string", "The address type of the slice.", 0),
				col("Ports", "string", "The ports of the slice.", 0),
				col("Endpoints", "string", "The endpoints of the slice.", 0),
			},
			row: endpointSliceRow,
		},
		{
			gvk: appsv1.SchemeGroupVersion.WithKind("Deployment"), plural: "deployments", shortNames: []string{"deploy"}, categories: []string{"all"},
			subresources: []string{"status", "scale"},
			newObj:       func() runtime.Object { return &appsv1.Deployment{} },
			newList:      func() runtime.Object { return &appsv1.DeploymentList{} },
			defaults:     func(o runtime.Object) { defaultDeployment(o.(*appsv1.Deployment)) },
			validate:     validateDeployment,
			columns: []metav1.TableColumnDefinition{
				col("Ready", "string", "Number of the pod with ready state", 0),
				col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec.", 0),
				col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.", 0),
				col("Containers", "string", "Names of each container in the template.", 1),
				col("Images", "string", "Images referenced by each container in the template.", 1),
				col("Selector", "string", "Label selector for pods.", 1),
			},
			row: deploymentRow,
		},
		{
			gvk: appsv1.SchemeGroupVersion.WithKind("ReplicaSet"), plural: "replicasets", shortNames: []string{"rs"}, categories: []string{"all"},
			subresources: []string{"status", "scale"},
			newObj:       func() runtime.Object { return &appsv1.ReplicaSet{} },
			newList:      func() runtime.Object { return &appsv1.ReplicaSetList{} },
			defaults:     func(o runtime.Object) { defaultReplicaSet(o.(*appsv1.ReplicaSet)) },
			validate:     validateReplicaSet,
			columns: []metav1.TableColumnDefinition{
				col("Desired", "integer", "Number of desired pods.", 0),
				col("Current", "integer", "Number of actual replicas.", 0),
				col("Ready", "integer", "The number of ready replicas.", 0),
				col("Containers", "string", "Names of each container in the template.", 1),
				col("Images", "string", "Images referenced by each container in the template.", 1),
				col("Selector", "string", "Label selector for pods.", 1),
			},
			row: replicaSetRow,
		},
		{
			gvk: networkingv1.SchemeGroupVersion.WithKind("Ingress"), plural: "ingresses", shortNames: []string{"ing"},
			subresources: []string{"status"},
			newObj:       func() runtime.Object { return &networkingv1.Ingress{} },
			newList:      func() runtime.Object { return &networkingv1.IngressList{} },
			defaults: func(o runtime.Object) {
				ing := o.(*networkingv1.Ingress)
				for i := range ing.Spec.Rules {
					if h := ing.Spec.Rules[i].HTTP; h != nil {
						for j := range h.Paths {
							if h.Paths[j].PathType == nil {
								h.Paths[j].PathType = ptr(networkingv1.PathTypeImplementationSpecific)
							}
						}
					}
				}
			},
			columns: []metav1.TableColumnDefinition{
				col("Class", "string", "The name of the IngressClass resource.", 0),
				col("Hosts", "string", "Hosts that incoming requests are matched against.", 0),
				col("Address", "string", "Address is a list containing ingress points for the load-balancer.", 0),
				col("Ports", "string", "Ports of TLS configurations that open.", 0),
			},
			row: ingressRow,
		},
	}
	for _, r := range rs {
		r.namespaced = r.gvk.Kind != "Namespace" && r.gvk.Kind != "Node"
	}
	return rs
}

func keysOf(a map[string]string, b map[string][]byte) []string {
	var out []string
	for k := range a {
		out = append(out, k)
	}
	for k := range b {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// maxDataBytes bounds the total data of a configmap or secret, as upstream
// (core.MaxSecretSize): such objects are mounted into pods whole.
const maxDataBytes = 1 << 20

// validateDataKeys checks configmap and secret keys as the real API does.
func validateDataKeys(keys []string, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	for _, k := range keys {
		if msgs := isConfigMapKey(k); len(msgs) > 0 {
			errs = append(errs, field.Invalid(p, k, strings.Join(msgs, "; ")))
		}
	}
	return errs
}

func isConfigMapKey(k string) []string {
	if k == "" || len(k) > 253 {
		return []string{"a valid config key must be between 1 and 253 characters"}
	}
	if k == "." || k == ".." || strings.HasPrefix(k, "..") {
		return []string{"must not be '.' or '..' or start with '..'"}
	}
	for _, c := range k {
		if !(c == '-' || c == '_' || c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return []string{"a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"}
		}
	}
	return nil
}

func podFields(o runtime.Object) fields.Set {
	p := o.(*corev1.Pod)
	return fields.Set{
		"spec.nodeName":            p.Spec.NodeName,
		"spec.restartPolicy":       string(p.Spec.RestartPolicy),
		"spec.schedulerName":       p.Spec.SchedulerName,
		"spec.serviceAccountName":  p.Spec.ServiceAccountName,
		"spec.hostNetwork":         strconv.FormatBool(p.Spec.HostNetwork),
		"status.phase":             string(p.Status.Phase),
		"status.podIP":             p.Status.PodIP,
		"status.nominatedNodeName": p.Status.NominatedNodeName,
	}
}

func eventFields(o runtime.Object) fields.Set {
	e := o.(*corev1.Event)
	src := e.Source.Component
	if src == "" {
		src = e.ReportingController
	}
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
		"source":                         src,
		"type":                           e.Type,
	}
}

// podGracefulDelete: a pod bound to a node is only marked for deletion (its
// node's agent removes it after the grace period); an unbound pod goes at once.
func podGracefulDelete(o runtime.Object, grace *int64) (int64, bool) {
	p := o.(*corev1.Pod)
	g := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if p.Spec.TerminationGracePeriodSeconds != nil {
		g = *p.Spec.TerminationGracePeriodSeconds
	}
	if grace != nil {
		g = *grace
	}
	if p.Spec.NodeName == "" || g <= 0 {
		return 0, false
	}
	if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
		return 0, false
	}
	return g, true
}

func defaultPodSpec(s *corev1.PodSpec) {
	if s.RestartPolicy == "" {
		s.RestartPolicy = corev1.RestartPolicyAlways
	}
	if s.DNSPolicy == "" {
		s.DNSPolicy = corev1.DNSClusterFirst
	}
	if s.SchedulerName == "" {
		s.SchedulerName = corev1.DefaultSchedulerName
	}
	if s.TerminationGracePeriodSeconds == nil {
		s.TerminationGracePeriodSeconds = ptr(int64(corev1.DefaultTerminationGracePeriodSeconds))
	}
	if s.SecurityContext == nil {
		s.SecurityContext = &corev1.PodSecurityContext{}
	}
	defaultContainers := func(cs []corev1.Container) {
		for i := range cs {
			c := &cs[i]
			if c.TerminationMessagePath == "" {
				c.TerminationMessagePath = corev1.TerminationMessagePathDefault
			}
			if c.TerminationMessagePolicy == "" {
				c.TerminationMessagePolicy = corev1.TerminationMessageReadFile
			}
			if c.ImagePullPolicy == "" {
				c.ImagePullPolicy = corev1.PullIfNotPresent
				img := c.Image
				if i := strings.LastIndex(img, "/"); i >= 0 {
					img = img[i+1:]
				}
				if !strings.Contains(img, ":") && !strings.Contains(img, "@") || strings.HasSuffix(img, ":latest") {
					c.ImagePullPolicy = corev1.PullAlways
				}
			}
			for j := range c.Ports {
				if c.Ports[j].Protocol == "" {
					c.Ports[j].Protocol = corev1.ProtocolTCP
				}
			}
		}
	}
	defaultContainers(s.InitContainers)
	defaultContainers(s.Containers)
}

func defaultPod(p *corev1.Pod) {
	defaultPodSpec(&p.Spec)
	if p.Spec.EnableServiceLinks == nil {
		p.Spec.EnableServiceLinks = ptr(true)
	}
	if p.Spec.Priority == nil {
		p.Spec.Priority = ptr(int32(0))
	}
	if p.Spec.ServiceAccountName == "" {
		p.Spec.ServiceAccountName = "default"
	}
	if p.Status.Phase == "" {
		p.Status.Phase = corev1.PodPending
	}
	if p.Status.QOSClass == "" {
		p.Status.QOSClass = podQOS(&p.Spec)
	}
}

// podQOS is a simplified version of the real QoS classification.
func podQOS(s *corev1.PodSpec) corev1.PodQOSClass {
	any, guaranteed := false, true
	for _, c := range s.Containers {
		if len(c.Resources.Requests) > 0 || len(c.Resources.Limits) > 0 {
			any = true
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			l, ok := c.Resources.Limits[r]
			if !ok {
				guaranteed = false
				continue
			}
			if q, ok := c.Resources.Requests[r]; ok && q.Cmp(l) != 0 {
				guaranteed = false
			}
		}
	}
	switch {
	case !any:
		return corev1.PodQOSBestEffort
	case guaranteed:
		return corev1.PodQOSGuaranteed
	}
	return corev1.PodQOSBurstable
}

func validatePodSpec(s *corev1.PodSpec, p *field.Path) field.ErrorList {
	var errs field.ErrorList
	if len(s.Containers) == 0 {
		errs = append(errs, field.Required(p.Child("containers"), ""))
	}
	names := map[string]bool{}
	check := func(cs []corev1.Container, cp *field.Path) {
		for i, c := range cs {
			ip := cp.Index(i)
			if c.Name == "" {
				errs = append(errs, field.Required(ip.Child("name"), ""))
			} else if msgs := apivalidation.NameIsDNSLabel(c.Name, false); len(msgs) > 0 {
				errs = append(errs, field.Invalid(ip.Child("name"), c.Name, strings.Join(msgs, "; ")))
			} else if names[c.Name] {
				errs = append(errs, field.Duplicate(ip.Child("name"), c.Name))
			}
			names[c.Name] = true
			if strings.TrimSpace(c.Image) == "" {
				errs = append(errs, field.Required(ip.Child("image"), ""))
			}
			for j, port := range c.Ports {
				if port.ContainerPort < 1 || port.ContainerPort > 65535 {
					errs = append(errs, field.Invalid(ip.Child("ports").Index(j).Child("containerPort"), port.ContainerPort, "must be between 1 and 65535, inclusive"))
				}
			}
		}
	}
	check(s.InitContainers, p.Child("initContainers"))
	check(s.Containers, p.Child("containers"))
	switch s.RestartPolicy {
	case corev1.RestartPolicyAlways, corev1.RestartPolicyOnFailure, corev1.RestartPolicyNever:
	default:
		errs = append(errs, field.NotSupported(p.Child("restartPolicy"), s.RestartPolicy, []string{"Always", "OnFailure", "Never"}))
	}
	return errs
}

func validatePod(o, old runtime.Object) field.ErrorList {
	p := o.(*corev1.Pod)
	errs := validatePodSpec(&p.Spec, field.NewPath("spec"))
	if old != nil {
		op := old.(*corev1.Pod)
		// Only a few fields of a pod's spec may change after creation.
		a, b := p.Spec.DeepCopy(), op.Spec.DeepCopy()
		for i := range a.Containers {
			if i < len(b.Containers) {
				a.Containers[i].Image = b.Containers[i].Image
			}
		}
		a.ActiveDeadlineSeconds = b.ActiveDeadlineSeconds
		a.Tolerations = b.Tolerations
		a.TerminationGracePeriodSeconds = b.TerminationGracePeriodSeconds
		if b.NodeName == "" {
			a.NodeName = ""
		}
		if !equalSemantic(a, b) {
			errs = append(errs, field.Forbidden(field.NewPath("spec"), "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"))
		}
	}
	return errs
}

func defaultService(s *corev1.Service) {
	if s.Spec.Type == "" {
		s.Spec.Type = corev1.ServiceTypeClusterIP
	}
	if s.Spec.SessionAffinity == "" {
		s.Spec.SessionAffinity = corev1.ServiceAffinityNone
	}
	if s.Spec.Type != corev1.ServiceTypeExternalName && s.Spec.InternalTrafficPolicy == nil {
		s.Spec.InternalTrafficPolicy = ptr(corev1.ServiceInternalTrafficPolicyCluster)
	}
	if (s.Spec.Type == corev1.ServiceTypeNodePort || s.Spec.Type == corev1.ServiceTypeLoadBalancer) && s.Spec.ExternalTrafficPolicy == "" {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
	}
	for i := range s.Spec.Ports {
		p := &s.Spec.Ports[i]
		if p.Protocol == "" {
			p.Protocol = corev1.ProtocolTCP
		}
		if p.TargetPort == (intstr.IntOrString{}) {
			p.TargetPort = intstr.FromInt32(p.Port)
		}
	}
}

func validateService(o, old runtime.Object) field.ErrorList {
	s := o.(*corev1.Service)
	var errs field.ErrorList
	sp := field.NewPath("spec")
	switch s.Spec.Type {
	case corev1.ServiceTypeClusterIP, corev1.ServiceTypeNodePort, corev1.ServiceTypeLoadBalancer:
		if len(s.Spec.Ports) == 0 && s.Spec.ClusterIP != corev1.ClusterIPNone {
			errs = append(errs, field.Required(sp.Child("ports"), ""))
		}
	case corev1.ServiceTypeExternalName:
		if s.Spec.ExternalName == "" {
			errs = append(errs, field.Required(sp.Child("externalName"), ""))
		}
	default:
		errs = append(errs, field.NotSupported(sp.Child("type"), s.Spec.Type, []string{"ClusterIP", "ExternalName", "LoadBalancer", "NodePort"}))
	}
	seen := map[string]bool{}
	for i, p := range s.Spec.Ports {
		pp := sp.Child("ports").Index(i)
		if len(s.Spec.Ports) > 1 && p.Name == "" {
			errs = append(errs, field.Required(pp.Child("name"), ""))
		}
		if p.Name != "" && seen[p.Name] {
			errs = append(errs, field.Duplicate(pp.Child("name"), p.Name))
		}
		seen[p.Name] = true
		if p.Port < 1 || p.Port > 65535 {
			errs = append(errs, field.Invalid(pp.Child("port"), p.Port, "must be between 1 and 65535, inclusive"))
		}
		switch p.Protocol {
		case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
		default:
			errs = append(errs, field.NotSupported(pp.Child("protocol"), p.Protocol, []string{"SCTP", "TCP", "UDP"}))
		}
		if p.NodePort != 0 && s.Spec.Type != corev1.ServiceTypeNodePort && s.Spec.Type != corev1.ServiceTypeLoadBalancer {
			errs = append(errs, field.Forbidden(pp.Child("nodePort"), "may not be used when `type` is 'ClusterIP'"))
		}
	}
	if old != nil {
		os := old.(*corev1.Service)
		// An empty clusterIP keeps the allocated one (filled in after validation).
		if os.Spec.ClusterIP != "" && s.Spec.ClusterIP != "" && s.Spec.ClusterIP != os.Spec.ClusterIP && s.Spec.Type != corev1.ServiceTypeExternalName && os.Spec.Type != corev1.ServiceTypeExternalName {
			errs = append(errs, field.Invalid(sp.Child("clusterIPs").Index(0), s.Spec.ClusterIP, "may not change once set"))
		}
	}
	return errs
}

func defaultDeployment(d *appsv1.Deployment) {
	if d.Spec.Replicas == nil {
		d.Spec.Replicas = ptr(int32(1))
	}
	if d.Spec.Strategy.Type == "" {
		d.Spec.Strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	}
	if d.Spec.Strategy.Type == appsv1.RollingUpdateDeploymentStrategyType {
		if d.Spec.Strategy.RollingUpdate == nil {
			d.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
		}
		if d.Spec.Strategy.RollingUpdate.MaxUnavailable == nil {
			d.Spec.Strategy.RollingUpdate.MaxUnavailable = ptr(intstr.FromString("25%"))
		}
		if d.Spec.Strategy.RollingUpdate.MaxSurge == nil {
			d.Spec.Strategy.RollingUpdate.MaxSurge = ptr(intstr.FromString("25%"))
		}
	}
	if d.Spec.RevisionHistoryLimit == nil {
		d.Spec.RevisionHistoryLimit = ptr(int32(10))
	}
	if d.Spec.ProgressDeadlineSeconds == nil {
		d.Spec.ProgressDeadlineSeconds = ptr(int32(600))
	}
	defaultPodSpec(&d.Spec.Template.Spec)
}

func defaultReplicaSet(rs *appsv1.ReplicaSet) {
	if rs.Spec.Replicas == nil {
		rs.Spec.Replicas = ptr(int32(1))
	}
	defaultPodSpec(&rs.Spec.Template.Spec)
}

// validateWorkload checks the selector/template pair deployments and
// replica sets share.
func validateWorkload(sel *metav1.LabelSelector, tmpl *corev1.PodTemplateSpec, replicas *int32) field.ErrorList {
	var errs field.ErrorList
	sp := field.NewPath("spec")
	if replicas != nil && *replicas < 0 {
		errs = append(errs, field.Invalid(sp.Child("replicas"), *replicas, "must be greater than or equal to 0"))
	}
	if sel == nil {
		errs = append(errs, field.Required(sp.Child("selector"), ""))
	} else {
		s, err := metav1.LabelSelectorAsSelector(sel)
		switch {
		case err != nil:
			errs = append(errs, field.Invalid(sp.Child("selector"), sel, err.Error()))
		case s.Empty():
			errs = append(errs, field.Invalid(sp.Child("selector"), sel, "empty selector is invalid for deployment"))
		case !s.Matches(labelsSet(tmpl.Labels)):
			errs = append(errs, field.Invalid(sp.Child("template", "metadata", "labels"), tmpl.Labels, "`selector` does not match template `labels`"))
		}
	}
	errs = append(errs, validatePodSpec(&tmpl.Spec, sp.Child("template", "spec"))...)
	if tmpl.Spec.RestartPolicy != corev1.RestartPolicyAlways && tmpl.Spec.RestartPolicy != "" {
		errs = append(errs, field.NotSupported(sp.Child("template", "spec", "restartPolicy"), tmpl.Spec.RestartPolicy, []string{"Always"}))
	}
	return errs
}

func validateDeployment(o, old runtime.Object) field.ErrorList {
	d := o.(*appsv1.Deployment)
	errs := validateWorkload(d.Spec.Selector, &d.Spec.Template, d.Spec.Replicas)
	if old != nil && !equalSemantic(old.(*appsv1.Deployment).Spec.Selector, d.Spec.Selector) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "selector"), d.Spec.Selector, "field is immutable"))
	}
	return errs
}

func validateReplicaSet(o, old runtime.Object) field.ErrorList {
	rs := o.(*appsv1.ReplicaSet)
	errs := validateWorkload(rs.Spec.Selector, &rs.Spec.Template, rs.Spec.Replicas)
	if old != nil && !equalSemantic(old.(*appsv1.ReplicaSet).Spec.Selector, rs.Spec.Selector) {
		errs = append(errs, field.Invalid(field.NewPath("spec", "selector"), rs.Spec.Selector, "field is immutable"))
	}
	return errs
}

func containersAndImages(cs []corev1.Container) (string, string) {
	var n, i []string
	for _, c := range cs {
		n = append(n, c.Name)
		i = append(i, c.Image)
	}
	return strings.Join(n, ","), strings.Join(i, ",")
}

func deploymentRow(o runtime.Object) []interface{} {
	d := o.(*appsv1.Deployment)
	want := int32(0)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	names, images := containersAndImages(d.Spec.Template.Spec.Containers)
	sel, _ := metav1.LabelSelectorAsSelector(d.Spec.Selector)
	selStr := "<none>"
	if sel != nil {
		selStr = sel.String()
	}
	return []interface{}{fmt.Sprintf("%d/%d", d.Status.ReadyReplicas, want), int64(d.Status.UpdatedReplicas), int64(d.Status.AvailableReplicas), names, images, selStr}
}

func replicaSetRow(o runtime.Object) []interface{} {
	rs := o.(*appsv1.ReplicaSet)
	want := int32(0)
	if rs.Spec.Replicas != nil {
		want = *rs.Spec.Replicas
	}
	names, images := containersAndImages(rs.Spec.Template.Spec.Containers)
	sel, _ := metav1.LabelSelectorAsSelector(rs.Spec.Selector)
	selStr := "<none>"
	if sel != nil {
		selStr = sel.String()
	}
	return []interface{}{int64(want), int64(rs.Status.Replicas), int64(rs.Status.ReadyReplicas), names, images, selStr}
}

func podRow(o runtime.Object) []interface{} {
	p := o.(*corev1.Pod)
	ready, total, restarts := 0, len(p.Spec.Containers), int64(0)
	reason := string(p.Status.Phase)
	if p.Status.Reason != "" {
		reason = p.Status.Reason
	}
	for i := len(p.Status.InitContainerStatuses) - 1; i >= 0; i-- {
		cs := p.Status.InitContainerStatuses[i]
		restarts += int64(cs.RestartCount)
		switch {
		case cs.State.Terminated != nil && cs.State.Terminated.ExitCode == 0:
		case cs.State.Terminated != nil:
			reason = "Init:" + cs.State.Terminated.Reason
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "" && cs.State.Waiting.Reason != "PodInitializing":
			reason = "Init:" + cs.State.Waiting.Reason
		}
	}
	for i := len(p.Status.ContainerStatuses) - 1; i >= 0; i-- {
		cs := p.Status.ContainerStatuses[i]
		restarts += int64(cs.RestartCount)
		switch {
		case cs.State.Waiting != nil && cs.State.Waiting.Reason != "":
			reason = cs.State.Waiting.Reason
		case cs.State.Terminated != nil && cs.State.Terminated.Reason != "":
			reason = cs.State.Terminated.Reason
		case cs.State.Terminated != nil:
			reason = fmt.Sprintf("ExitCode:%d", cs.State.Terminated.ExitCode)
		case cs.Ready && cs.State.Running != nil:
			ready++
		}
	}
	if p.DeletionTimestamp != nil {
		reason = "Terminating"
		if p.Status.Reason == "NodeLost" {
			reason = "Unknown"
		}
	}
	node, ip := p.Spec.NodeName, p.Status.PodIP
	if node == "" {
		node = "<none>"
	}
	if ip == "" {
		ip = "<none>"
	}
	nominated := p.Status.NominatedNodeName
	if nominated == "" {
		nominated = "<none>"
	}
	gates := "<none>"
	if len(p.Spec.ReadinessGates) > 0 {
		gates = fmt.Sprintf("0/%d", len(p.Spec.ReadinessGates))
	}
	return []interface{}{fmt.Sprintf("%d/%d", ready, total), reason, restarts, ip, node, nominated, gates}
}

func nodeRow(o runtime.Object) []interface{} {
	n := o.(*corev1.Node)
	status := "Unknown"
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			if c.Status == corev1.ConditionTrue {
				status = "Ready"
			} else {
				status = "NotReady"
			}
		}
	}
	if n.Spec.Unschedulable {
		status += ",SchedulingDisabled"
	}
	var roles []string
	for k := range n.Labels {
		if r, ok := strings.CutPrefix(k, "node-role.kubernetes.io/"); ok && r != "" {
			roles = append(roles, r)
		}
	}
	sort.Strings(roles)
	rolesStr := "<none>"
	if len(roles) > 0 {
		rolesStr = strings.Join(roles, ",")
	}
	internal, external := "<none>", "<none>"
	for _, a := range n.Status.Addresses {
		if a.Type == corev1.NodeInternalIP && internal == "<none>" {
			internal = a.Address
		}
		if a.Type == corev1.NodeExternalIP && external == "<none>" {
			external = a.Address
		}
	}
	ni := n.Status.NodeInfo
	return []interface{}{status, rolesStr, ni.KubeletVersion, internal, external, ni.OSImage, ni.KernelVersion, ni.ContainerRuntimeVersion}
}

func serviceRow(o runtime.Object) []interface{} {
	s := o.(*corev1.Service)
	cip := s.Spec.ClusterIP
	if cip == "" {
		cip = "<none>"
	}
	var ext []string
	for _, i := range s.Status.LoadBalancer.Ingress {
		if i.IP != "" {
			ext = append(ext, i.IP)
		} else if i.Hostname != "" {
			ext = append(ext, i.Hostname)
		}
	}
	ext = append(ext, s.Spec.ExternalIPs...)
	extStr := "<none>"
	switch {
	case s.Spec.Type == corev1.ServiceTypeExternalName:
		extStr = s.Spec.ExternalName
	case len(ext) > 0:
		extStr = strings.Join(ext, ",")
	case s.Spec.Type == corev1.ServiceTypeLoadBalancer:
		extStr = "<pending>"
	}
	var ports []string
	for _, p := range s.Spec.Ports {
		if p.NodePort != 0 {
			ports = append(ports, fmt.Sprintf("%d:%d/%s", p.Port, p.NodePort, p.Protocol))
		} else {
			ports = append(ports, fmt.Sprintf("%d/%s", p.Port, p.Protocol))
		}
	}
	portStr := "<none>"
	if len(ports) > 0 {
		portStr = strings.Join(ports, ",")
	}
	sel := "<none>"
	if len(s.Spec.Selector) > 0 {
		sel = labelsSet(s.Spec.Selector).String()
	}
	return []interface{}{string(s.Spec.Type), cip, extStr, portStr, sel}
}

func endpointsString(e *corev1.Endpoints) string {
	var out []string
	for _, ss := range e.Subsets {
		for _, a := range ss.Addresses {
			if len(ss.Ports) == 0 {
				out = append(out, a.IP)
			}
			for _, p := range ss.Ports {
				out = append(out, fmt.Sprintf("%s:%d", a.IP, p.Port))
			}
		}
	}
	if len(out) == 0 {
		return "<none>"
	}
	if len(out) > 3 {
		return strings.Join(out[:3], ",") + fmt.Sprintf(" + %d more...", len(out)-3)
	}
	return strings.Join(out, ",")
}

func endpointSliceRow(o runtime.Object) []interface{} {
	s := o.(*discoveryv1.EndpointSlice)
	var ports, addrs []string
	for _, p := range s.Ports {
		if p.Port != nil {
			ports = append(ports, strconv.Itoa(int(*p.Port)))
		}
	}
	for _, e := range s.Endpoints {
		addrs = append(addrs, e.Addresses...)
	}
	ps, as := "<unset>", "<unset>"
	if len(ports) > 0 {
		ps = strings.Join(ports, ",")
	}
	if len(addrs) > 3 {
		as = strings.Join(addrs[:3], ",") + fmt.Sprintf(" + %d more...", len(addrs)-3)
	} else if len(addrs) > 0 {
		as = strings.Join(addrs, ",")
	}
	return []interface{}{string(s.AddressType), ps, as}
}

func eventRow(o runtime.Object) []interface{} {
	e := o.(*corev1.Event)
	last := e.LastTimestamp.Time
	if last.IsZero() {
		last = e.EventTime.Time
	}
	if last.IsZero() {
		last = e.CreationTimestamp.Time
	}
	obj := strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name
	return []interface{}{age(last), e.Type, e.Reason, obj, strings.TrimSpace(e.Message)}
}

func ingressRow(o runtime.Object) []interface{} {
	ing := o.(*networkingv1.Ingress)
	class := "<none>"
	if ing.Spec.IngressClassName != nil {
		class = *ing.Spec.IngressClassName
	}
	var hosts []string
	for _, r := range ing.Spec.Rules {
		if r.Host != "" {
			hosts = append(hosts, r.Host)
		}
	}
	hostStr := "*"
	if len(hosts) > 0 {
		hostStr = strings.Join(hosts, ",")
	}
	var addrs []string
	for _, i := range ing.Status.LoadBalancer.Ingress {
		if i.IP != "" {
			addrs = append(addrs, i.IP)
		} else if i.Hostname != "" {
			addrs = append(addrs, i.Hostname)
		}
	}
	ports := "80"
	if len(ing.Spec.TLS) > 0 {
		ports = "80, 443"
	}
	return []interface{}{class, hostStr, strings.Join(addrs, ","), ports}
}
