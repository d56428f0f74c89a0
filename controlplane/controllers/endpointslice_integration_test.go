package controllers_test

import (
	"context"
	"fmt"
	"os/exec"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/controlplane/controllers/endpointslice"
	"github.com/skep-dev/skep/internal/testutil"
)

// servingPod creates a pod of app=web bound to node with a port named
// http on 8080, then reports it Running at ip, ready or not, as its node
// agent would.
func servingPod(t *testing.T, c *cluster, name, node, ip string, ready bool) {
	t.Helper()
	ctx := context.Background()
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}}}}},
	}
	p, err := c.cs.CoreV1().Pods("default").Create(ctx, p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s: %v", name, err)
	}
	setReady(t, c, p, ip, ready)
}

func setReady(t *testing.T, c *cluster, p *corev1.Pod, ip string, ready bool) {
	t.Helper()
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	p.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}},
	}
	if _, err := c.cs.CoreV1().Pods("default").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
		t.Fatalf("pod %s status: %v", p.Name, err)
	}
}

// sliceState is a Service's endpoints as its controller-managed slices
// say: "ip:port ready" per endpoint, sorted.
func sliceState(ctx context.Context, c *cluster, svc string) ([]string, []discoveryv1.EndpointSlice, error) {
	l, err := c.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{
		LabelSelector: discoveryv1.LabelServiceName + "=" + svc + "," + discoveryv1.LabelManagedBy + "=" + endpointslice.ControllerName,
	})
	if err != nil {
		return nil, nil, err
	}
	var out []string
	for _, s := range l.Items {
		for _, e := range s.Endpoints {
			for _, p := range s.Ports {
				out = append(out, fmt.Sprintf("%s:%d %v", e.Addresses[0], ptr.Deref(p.Port, 0), ptr.Deref(e.Conditions.Ready, false)))
			}
		}
	}
	sort.Strings(out)
	return out, l.Items, nil
}

// TestEndpointSliceController runs the controller inside the
// controller-manager against a real API server: slices and Endpoints
// follow the pods, kubectl shows them, and they go with the Service.
func TestEndpointSliceController(t *testing.T) {
	c := startCluster(t)
	ctx := context.Background()
	mustCreateNode(t, c.cs, "n1")
	servingPod(t, c, "web-1", "n1", "10.244.1.2", true)
	servingPod(t, c, "web-2", "n1", "10.244.1.3", true)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Labels: map[string]string{"tier": "front"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{
			{Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP}}},
	}
	svc, err := c.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}

	var slices []discoveryv1.EndpointSlice
	eventually(t, "slices list both pods, ready, on the resolved port", func(ctx context.Context) (bool, error) {
		got, items, err := sliceState(ctx, c, "web")
		slices = items
		return fmt.Sprint(got) == "[10.244.1.2:8080 true 10.244.1.3:8080 true]", err
	})
	s := slices[0]
	if len(slices) != 1 || len(s.OwnerReferences) != 1 || s.OwnerReferences[0].UID != svc.UID || s.Labels["tier"] != "front" {
		t.Errorf("slices %d, owner %+v, labels %v", len(slices), s.OwnerReferences, s.Labels)
	}
	eventually(t, "Endpoints list both pods", func(ctx context.Context) (bool, error) {
		ep, err := c.cs.CoreV1().Endpoints("default").Get(ctx, "web", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && len(ep.Subsets) == 1 && len(ep.Subsets[0].Addresses) == 2 && ep.Subsets[0].Ports[0].Port == 8080, err
	})

	t.Run("kubectl describe svc", func(t *testing.T) {
		kubectl := testutil.RequireBinary(t, "kubectl")
		out, err := exec.CommandContext(ctx, kubectl, "--kubeconfig", c.srv.KubeconfigPath(), "describe", "svc", "web").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "10.244.1.2:8080") || !strings.Contains(string(out), "10.244.1.3:8080") {
			t.Errorf("kubectl describe svc web: %v\n%s", err, out)
		}
	})

	// web-2 stops being ready; web-1 is deleted.
	p2, err := c.cs.CoreV1().Pods("default").Get(ctx, "web-2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	setReady(t, c, p2, "10.244.1.3", false)
	if err := c.cs.CoreV1().Pods("default").Delete(ctx, "web-1", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "slices follow the pods", func(ctx context.Context) (bool, error) {
		got, _, err := sliceState(ctx, c, "web")
		return fmt.Sprint(got) == "[10.244.1.3:8080 false]", err
	})
	eventually(t, "Endpoints follow the pods", func(ctx context.Context) (bool, error) {
		ep, err := c.cs.CoreV1().Endpoints("default").Get(ctx, "web", metav1.GetOptions{})
		return err == nil && len(ep.Subsets) == 1 && len(ep.Subsets[0].Addresses) == 0 &&
			len(ep.Subsets[0].NotReadyAddresses) == 1 && ep.Subsets[0].NotReadyAddresses[0].IP == "10.244.1.3", err
	})

	// The API server's own kubernetes Endpoints and slice stay its own.
	kep, err := c.cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{})
	if err != nil || kep.Labels[endpointslice.LabelEndpointsManagedBy] != "" {
		t.Errorf("kubernetes endpoints: %v %v", err, kep.Labels)
	}
	if got, _, _ := sliceState(ctx, c, "kubernetes"); len(got) != 0 {
		t.Errorf("controller-managed slices for the kubernetes service: %v", got)
	}

	if err := c.cs.CoreV1().Services("default").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "slices collected with their service", func(ctx context.Context) (bool, error) {
		l, err := c.cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		return err == nil && len(l.Items) == 0, err
	})
	eventually(t, "Endpoints deleted with their service", func(ctx context.Context) (bool, error) {
		_, err := c.cs.CoreV1().Endpoints("default").Get(ctx, "web", metav1.GetOptions{})
		return gone(err)
	})
	time.Sleep(200 * time.Millisecond)
	if _, err := c.cs.CoreV1().Endpoints("default").Get(ctx, "kubernetes", metav1.GetOptions{}); err != nil {
		t.Errorf("kubernetes endpoints: %v", err)
	}
}
