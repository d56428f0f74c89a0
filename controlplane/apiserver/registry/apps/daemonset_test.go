package apps

import (
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
)

func newDS() *appsv1.DaemonSet {
	lbls := map[string]string{"app": "agent"}
	return &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "agent"}, Spec: appsv1.DaemonSetSpec{
		Selector: &metav1.LabelSelector{MatchLabels: lbls},
		Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: lbls},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "img"}}}}}}
}

func TestDaemonSetStrategy(t *testing.T) {
	st := daemonSetResource().Strategy
	ds := newDS()
	st.PrepareForCreate(ds)
	st.Default(ds)
	if errs := st.Validate(ds); len(errs) != 0 {
		t.Fatalf("valid daemonset refused: %v", errs)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ds.Spec.UpdateStrategy.Type != appsv1.RollingUpdateDaemonSetStrategyType || ru.MaxUnavailable.IntValue() != 1 || ru.MaxSurge.IntValue() != 0 ||
		*ds.Spec.RevisionHistoryLimit != 10 || ds.Annotations[TemplateGenerationAnnotation] != "1" {
		t.Errorf("defaults %+v %v", ds.Spec, ds.Annotations)
	}
	// A template change counts a generation; a spec change elsewhere not.
	upd := func(mut func(*appsv1.DaemonSet)) string {
		n := ds.DeepCopy()
		mut(n)
		st.PrepareForUpdate(n, ds)
		st.Default(n)
		return n.Annotations[TemplateGenerationAnnotation]
	}
	if g := upd(func(d *appsv1.DaemonSet) { d.Spec.MinReadySeconds = 5 }); g != "1" {
		t.Errorf("minReadySeconds change: generation %s", g)
	}
	if g := upd(func(d *appsv1.DaemonSet) { d.Spec.Template.Spec.Containers[0].Image = "v2" }); g != "2" {
		t.Errorf("image change: generation %s", g)
	}
	for name, mut := range map[string]func(*appsv1.DaemonSet){
		"spec.template.spec.restartPolicy": func(d *appsv1.DaemonSet) { d.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever },
		"maxUnavailable": func(d *appsv1.DaemonSet) {
			d.Spec.UpdateStrategy.RollingUpdate.MaxUnavailable = ptr.To(intstr.FromInt32(0))
		},
		"spec.template.metadata.labels": func(d *appsv1.DaemonSet) { d.Spec.Template.Labels = map[string]string{"app": "x"} },
		"spec.updateStrategy.type":      func(d *appsv1.DaemonSet) { d.Spec.UpdateStrategy.Type = "Sometimes" },
	} {
		d := ds.DeepCopy()
		mut(d)
		if errs := st.Validate(d); !strings.Contains(errs.ToAggregate().Error(), name) {
			t.Errorf("%s: errors %v", name, errs)
		}
	}
	other := ds.DeepCopy()
	other.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "agent", "x": "y"}}
	other.Spec.Template.Labels = other.Spec.Selector.MatchLabels
	if errs := st.ValidateUpdate(other, ds); !strings.Contains(errs.ToAggregate().Error(), "immutable") {
		t.Errorf("selector change allowed: %v", errs)
	}
}

func TestControllerRevision(t *testing.T) {
	st := controllerRevisionResource().Strategy
	r := &appsv1.ControllerRevision{ObjectMeta: metav1.ObjectMeta{Name: "agent-1"}, Revision: 1, Data: runtime.RawExtension{Raw: []byte(`{"a":1}`)}}
	if errs := st.Validate(r); len(errs) != 0 {
		t.Fatal(errs)
	}
	n := r.DeepCopy()
	n.Revision = 3 // a rollback renumbers it
	if errs := st.ValidateUpdate(n, r); len(errs) != 0 {
		t.Errorf("renumbering refused: %v", errs)
	}
	n.Data.Raw = []byte(`{"a":2}`)
	if errs := st.ValidateUpdate(n, r); len(errs) == 0 {
		t.Error("data changed")
	}
	r.OwnerReferences = []metav1.OwnerReference{*metav1.NewControllerRef(newDS(), appsv1.SchemeGroupVersion.WithKind("DaemonSet"))}
	if row := controllerRevisionRow(r); row[0] != "daemonset.apps/agent" || row[1] != int64(1) {
		t.Errorf("row %v", row)
	}
}
