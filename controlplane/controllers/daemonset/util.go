package daemonset

import (
	"fmt"
	"strconv"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	schedulingcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

const (
	// TemplateGenerationAnnotation is where the API server counts a
	// DaemonSet's template changes (see registry/apps).
	TemplateGenerationAnnotation = "deprecated.daemonset.template.generation"
	// TemplateGenerationLabel carries that count on each pod.
	TemplateGenerationLabel = "pod-template-generation"
)

// daemonTolerations are the tolerations every DaemonSet pod gets (what
// upstream's AddOrUpdateDaemonPodTolerations adds): a node that is not
// ready, unreachable, under pressure or cordoned still runs its daemons.
var daemonTolerations = []corev1.Toleration{
	{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeUnreachable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute},
	{Key: corev1.TaintNodeDiskPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeMemoryPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodePIDPressure, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
	{Key: corev1.TaintNodeUnschedulable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
}

// hostNetworkToleration is added for pods on the host network, which need
// no pod network to run.
var hostNetworkToleration = corev1.Toleration{Key: corev1.TaintNodeNetworkUnavailable, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}

// addDaemonTolerations adds the daemon tolerations a spec does not have.
func addDaemonTolerations(spec *corev1.PodSpec) {
	add := func(t corev1.Toleration) {
		for _, have := range spec.Tolerations {
			if have.MatchToleration(&t) {
				return
			}
		}
		spec.Tolerations = append(spec.Tolerations, t)
	}
	for _, t := range daemonTolerations {
		add(t)
	}
	if spec.HostNetwork {
		add(hostNetworkToleration)
	}
}

// podTemplate is the template of the DaemonSet's pods now: its own, with
// the daemon tolerations and the template generation and revision hash
// labels.
func podTemplate(ds *appsv1.DaemonSet, hash string) *corev1.PodTemplateSpec {
	t := ds.Spec.Template.DeepCopy()
	addDaemonTolerations(&t.Spec)
	if t.Labels == nil {
		t.Labels = map[string]string{}
	}
	if gen, ok := templateGeneration(ds); ok {
		t.Labels[TemplateGenerationLabel] = strconv.FormatInt(gen, 10)
	}
	if hash != "" {
		t.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] = hash
	}
	return t
}

func templateGeneration(ds *appsv1.DaemonSet) (int64, bool) {
	v, ok := ds.Annotations[TemplateGenerationAnnotation]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	return n, err == nil
}

// nodeAffinityTo makes affinity require the node: upstream schedules
// DaemonSet pods through the default scheduler with this affinity, in
// place of any required node affinity the template had (the DaemonSet
// already chose nodes that satisfy it).
func nodeAffinityTo(affinity *corev1.Affinity, node string) *corev1.Affinity {
	term := corev1.NodeSelectorTerm{MatchFields: []corev1.NodeSelectorRequirement{{
		Key: metav1.ObjectNameField, Operator: corev1.NodeSelectorOpIn, Values: []string{node}}}}
	if affinity == nil {
		affinity = &corev1.Affinity{}
	}
	if affinity.NodeAffinity == nil {
		affinity.NodeAffinity = &corev1.NodeAffinity{}
	}
	affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{term}}
	return affinity
}

// targetNode is the node a daemon pod runs on or is meant for: its
// nodeName, or the node its required affinity names.
func targetNode(p *corev1.Pod) (string, error) {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName, nil
	}
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, r := range term.MatchFields {
				if r.Key == metav1.ObjectNameField && r.Operator == corev1.NodeSelectorOpIn && len(r.Values) == 1 {
					return r.Values[0], nil
				}
			}
		}
	}
	return "", fmt.Errorf("no node name found for pod %s/%s", p.Namespace, p.Name)
}

// nodeShouldRun says whether the DaemonSet should run a pod on node
// (template nodeName, node selector and required node affinity match,
// and every NoSchedule and NoExecute taint is tolerated, counting the
// daemon tolerations) and whether a pod already there should keep
// running (the same, but only NoExecute taints count).
func nodeShouldRun(node *corev1.Node, ds *appsv1.DaemonSet) (shouldRun, shouldContinue bool) {
	if n := ds.Spec.Template.Spec.NodeName; n != "" && n != node.Name {
		return false, false
	}
	pod := &corev1.Pod{ObjectMeta: ds.Spec.Template.ObjectMeta, Spec: *ds.Spec.Template.Spec.DeepCopy()}
	pod.Namespace, pod.Spec.NodeName = ds.Namespace, node.Name
	addDaemonTolerations(&pod.Spec)
	if fits, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(node); !fits {
		return false, false
	}
	_, untolerated := schedulingcorev1.FindMatchingUntoleratedTaint(node.Spec.Taints, pod.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoExecute || t.Effect == corev1.TaintEffectNoSchedule
	})
	if !untolerated {
		return true, true
	}
	_, evicting := schedulingcorev1.FindMatchingUntoleratedTaint(node.Spec.Taints, pod.Spec.Tolerations, func(t *corev1.Taint) bool {
		return t.Effect == corev1.TaintEffectNoExecute
	})
	return false, !evicting
}

// isPodUpdated: the pod runs the current revision (by hash, or by
// template generation for pods made before revisions).
func isPodUpdated(p *corev1.Pod, hash string, ds *appsv1.DaemonSet) bool {
	if hash != "" && p.Labels[appsv1.DefaultDaemonSetUniqueLabelKey] == hash {
		return true
	}
	gen, ok := templateGeneration(ds)
	return ok && p.Labels[TemplateGenerationLabel] == strconv.FormatInt(gen, 10)
}

// surgeAndUnavailable resolve the rolling update's maxSurge and
// maxUnavailable (both rounded up) for n scheduled nodes; when both come
// out 0, one node may be unavailable.
func surgeAndUnavailable(ds *appsv1.DaemonSet, n int) (surge, unavailable int) {
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil {
		return 0, 0
	}
	scaled := func(v *intstr.IntOrString) int {
		if v == nil {
			return 0
		}
		x, err := intstr.GetScaledValueFromIntOrPercent(v, n, true)
		if err != nil {
			return 0
		}
		return x
	}
	surge, unavailable = scaled(ru.MaxSurge), scaled(ru.MaxUnavailable)
	if n > 0 && surge == 0 && unavailable == 0 {
		unavailable = 1
	}
	return surge, unavailable
}

// allowsSurge: the rolling update starts a new pod before the old one
// goes.
func allowsSurge(ds *appsv1.DaemonSet) bool {
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru == nil || ru.MaxSurge == nil {
		return false
	}
	n, err := intstr.GetScaledValueFromIntOrPercent(ru.MaxSurge, 1, true)
	return err == nil && n != 0
}

// byCreationAndScheduled sorts scheduled pods first, then oldest first.
type byCreationAndScheduled []*corev1.Pod

func (o byCreationAndScheduled) Len() int      { return len(o) }
func (o byCreationAndScheduled) Swap(i, j int) { o[i], o[j] = o[j], o[i] }
func (o byCreationAndScheduled) Less(i, j int) bool {
	if (o[i].Spec.NodeName != "") != (o[j].Spec.NodeName != "") {
		return o[i].Spec.NodeName != ""
	}
	if o[i].CreationTimestamp.Equal(&o[j].CreationTimestamp) {
		return o[i].Name < o[j].Name
	}
	return o[i].CreationTimestamp.Before(&o[j].CreationTimestamp)
}
