package apiserver

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	appsv1apply "k8s.io/client-go/applyconfigurations/apps/v1"
	corev1apply "k8s.io/client-go/applyconfigurations/core/v1"
	metav1apply "k8s.io/client-go/applyconfigurations/meta/v1"
)

func managers(m metav1.Object) map[string]metav1.ManagedFieldsOperationType {
	out := map[string]metav1.ManagedFieldsOperationType{}
	for _, e := range m.GetManagedFields() {
		out[e.Manager+"/"+e.Subresource] = e.Operation
	}
	return out
}

func deploymentApply(replicas int32, image string) *appsv1apply.DeploymentApplyConfiguration {
	return appsv1apply.Deployment("web", "default").
		WithLabels(map[string]string{"app": "web"}).
		WithSpec(appsv1apply.DeploymentSpec().
			WithReplicas(replicas).
			WithSelector(metav1apply.LabelSelector().WithMatchLabels(map[string]string{"app": "web"})).
			WithTemplate(corev1apply.PodTemplateSpec().
				WithLabels(map[string]string{"app": "web"}).
				WithSpec(corev1apply.PodSpec().WithContainers(corev1apply.Container().WithName("web").WithImage(image)))))
}

// TestServerSideApply: apply creates, merges by ownership, conflicts with
// another manager's fields (409 naming it) unless forced, leaves fields
// it does not name to their owners, and records every write's manager.
func TestServerSideApply(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	deps := ts.cs.AppsV1().Deployments("default")

	// Apply creates (client-go's typed Apply sends application/apply-patch+yaml).
	d, err := deps.Apply(ctx, deploymentApply(2, "nginx:1"), metav1.ApplyOptions{FieldManager: "alice"})
	if err != nil {
		t.Fatalf("apply create: %v", err)
	}
	if *d.Spec.Replicas != 2 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType {
		t.Fatalf("applied and defaulted: %+v", d.Spec)
	}
	if got := managers(d); got["alice/"] != metav1.ManagedFieldsOperationApply || len(got) != 1 {
		t.Fatalf("managers after apply create: %v", got)
	}

	// Another manager's update takes spec.replicas.
	if _, err := deps.Patch(ctx, "web", types.MergePatchType, []byte(`{"spec":{"replicas":5}}`), metav1.PatchOptions{FieldManager: "hpa"}); err != nil {
		t.Fatal(err)
	}
	// alice applying another value conflicts, naming hpa and the field.
	_, err = deps.Apply(ctx, deploymentApply(3, "nginx:1"), metav1.ApplyOptions{FieldManager: "alice"})
	if !apierrors.IsConflict(err) {
		t.Fatalf("conflicting apply: %v, want 409", err)
	}
	st := err.(apierrors.APIStatus).Status()
	if !strings.Contains(st.Message, `conflict with "hpa"`) || st.Details == nil || len(st.Details.Causes) != 1 || st.Details.Causes[0].Field != ".spec.replicas" {
		t.Fatalf("conflict status: %+v", st)
	}
	// The same value is shared ownership, not a conflict.
	if _, err := deps.Apply(ctx, deploymentApply(5, "nginx:2"), metav1.ApplyOptions{FieldManager: "alice"}); err != nil {
		t.Fatalf("apply with the current value: %v", err)
	}
	// Forced, alice takes the field from hpa.
	d, err = deps.Apply(ctx, deploymentApply(3, "nginx:2"), metav1.ApplyOptions{FieldManager: "alice", Force: true})
	if err != nil || *d.Spec.Replicas != 3 || d.Spec.Template.Spec.Containers[0].Image != "nginx:2" {
		t.Fatalf("forced apply: %v %+v", err, d)
	}

	// A field alice no longer applies is removed when she owned it alone...
	noLabels := deploymentApply(3, "nginx:2")
	noLabels.Labels = nil
	d, err = deps.Apply(ctx, noLabels, metav1.ApplyOptions{FieldManager: "alice"})
	if err != nil || d.Labels["app"] != "" {
		t.Fatalf("apply without a label alice owned: %v %v", err, d.Labels)
	}
	// ...and a field another manager set stays.
	if _, err := deps.Patch(ctx, "web", types.MergePatchType, []byte(`{"metadata":{"annotations":{"team":"x"}}}`), metav1.PatchOptions{FieldManager: "bob"}); err != nil {
		t.Fatal(err)
	}
	d, err = deps.Apply(ctx, noLabels, metav1.ApplyOptions{FieldManager: "alice"})
	if err != nil || d.Annotations["team"] != "x" {
		t.Fatalf("bob's annotation after alice's apply: %v %v", err, d.Annotations)
	}

	// Dry run changes nothing.
	if _, err := deps.Apply(ctx, deploymentApply(9, "nginx:3"), metav1.ApplyOptions{FieldManager: "alice", DryRun: []string{metav1.DryRunAll}}); err != nil {
		t.Fatal(err)
	}
	if d, _ = deps.Get(ctx, "web", metav1.GetOptions{}); *d.Spec.Replicas != 3 {
		t.Fatalf("dry-run apply stored: replicas %d", *d.Spec.Replicas)
	}

	// Status: applied through /status, owned as a status write.
	sa := appsv1apply.Deployment("web", "default").WithStatus(appsv1apply.DeploymentStatus().WithObservedGeneration(1).WithReplicas(3))
	d, err = deps.ApplyStatus(ctx, sa, metav1.ApplyOptions{FieldManager: "controller", Force: true})
	if err != nil || d.Status.Replicas != 3 {
		t.Fatalf("apply status: %v %+v", err, d)
	}
	if got := managers(d); got["controller/status"] != metav1.ManagedFieldsOperationApply {
		t.Fatalf("managers after status apply: %v", got)
	}
	// Status applied to the object itself is reset, as Kubernetes'.
	d, err = deps.Apply(ctx, deploymentApply(3, "nginx:2").WithStatus(appsv1apply.DeploymentStatus().WithReplicas(42)), metav1.ApplyOptions{FieldManager: "alice"})
	if err != nil || d.Status.Replicas != 3 {
		t.Fatalf("status through the object: %v %d", err, d.Status.Replicas)
	}
}

// TestManagedFieldsOnWrites: creates, updates and patches record their
// manager (fieldManager, else the User-Agent's product), as Update
// operations; an empty managedFields in a patch resets them.
func TestManagedFieldsOnWrites(t *testing.T) {
	ts := startServer(t, nil)
	ctx := context.Background()
	cms := ts.cs.CoreV1().ConfigMaps("default")
	cm, err := cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "c"}, Data: map[string]string{"a": "1"}}, metav1.CreateOptions{FieldManager: "maker"})
	if err != nil {
		t.Fatal(err)
	}
	if got := managers(cm); got["maker/"] != metav1.ManagedFieldsOperationUpdate || len(got) != 1 {
		t.Fatalf("after create: %v", got)
	}
	cm.Data["b"] = "2"
	if cm, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// client-go's User-Agent is "<binary>/<version> …": the manager is the binary.
	if got := managers(cm); len(got) != 2 || got["maker/"] == "" {
		t.Fatalf("after update: %v", got)
	}
	var fields map[string]any
	for _, e := range cm.ManagedFields {
		if e.Manager != "maker" {
			_ = json.Unmarshal(e.FieldsV1.Raw, &fields)
		}
	}
	if _, ok := fields["f:data"].(map[string]any)["f:b"]; !ok {
		t.Fatalf("updater's fields: %v", fields)
	}
	// Reset.
	cm, err = cms.Patch(ctx, "c", types.MergePatchType, []byte(`{"metadata":{"managedFields":[{}]}}`), metav1.PatchOptions{})
	if err != nil || len(cm.ManagedFields) != 0 {
		t.Fatalf("reset: %v %v", err, cm.ManagedFields)
	}
}

// TestApplyBadInput: each is a 4xx naming what is wrong, and nothing is
// stored.
func TestApplyBadInput(t *testing.T) {
	ts := startServer(t, nil)
	path := "/apis/apps/v1/namespaces/default/deployments/web?fieldManager=t"
	const ct = "application/apply-patch+yaml"
	for _, tc := range []struct {
		name, path, body string
		code             int
		want             string
	}{
		{"not an object", path, "- a\n- b\n", 400, "error decoding YAML"},
		{"scalar", path, "42", 400, "error decoding YAML"},
		{"unknown field", path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicaz: 2}\n", 400, ".spec.replicaz: field not declared in schema"},
		{"wrong type", path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: many}\n", 400, ".spec.replicas"},
		{"other version", path, "apiVersion: apps/v1beta1\nkind: Deployment\nmetadata: {name: web}\n", 400, "invalid object type: apps/v1beta1, Kind=Deployment"},
		{"other kind", path, "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: web}\n", 400, "kind"},
		{"managedFields", path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, managedFields: [{manager: x}]}\n", 400, "metadata.managedFields must be nil"},
		{"duplicate field, strict", path + "&fieldValidation=Strict", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nmetadata: {name: web}\n", 400, "already set in map"},
		{"other name", path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\n", 400, "does not match the name on the URL"},
		{"invalid object", path, "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec: {replicas: -1}\n", 422, "spec.replicas"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body, _ := ts.do(t, http.MethodPatch, tc.path, ct, tc.body)
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Fatalf("code %d, want %d with %q: %s", code, tc.code, tc.want, body)
			}
			decodeStatus(t, body)
		})
	}
	if _, err := ts.cs.AppsV1().Deployments("default").Get(context.Background(), "web", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("a bad apply stored something: %v", err)
	}
}
