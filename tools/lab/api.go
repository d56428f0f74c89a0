package lab

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"

	"github.com/skep-dev/skep/internal/pki"
)

// managedBy labels every object the lab writes, so a new `up` or `demo`
// finds and replaces what an earlier one left in the store.
const (
	managedByKey   = "app.kubernetes.io/managed-by"
	managedByValue = "skep-lab"
	demoNamespace  = "default"
)

var labLabels = map[string]string{managedByKey: managedByValue}

// Client is a clientset for the lab's admin kubeconfig.
func (c Config) Client() (kubernetes.Interface, error) {
	rc, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig())
	if err != nil {
		return nil, fmt.Errorf("kubeconfig: %w", err)
	}
	rc.Timeout = 10 * time.Second
	return kubernetes.NewForConfig(rc)
}

// writeNodeKubeconfig writes the nodes' kubeconfig: the admin one with
// the server at the API's underlay address (the certificate has it as a
// SAN: it is the server's advertise address), and the CA alone, for the
// demo's in-cluster check.
func (c Config) writeNodeKubeconfig(apiAddr string) error {
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig())
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	var ca []byte
	for _, cl := range kc.Clusters {
		cl.Server = "https://" + apiAddr
		ca = cl.CertificateAuthorityData
	}
	if err := clientcmd.WriteToFile(*kc, c.nodeKubeconfig()); err != nil {
		return fmt.Errorf("node kubeconfig: %w", err)
	}
	if err := os.WriteFile(c.caFile(), ca, 0o644); err != nil {
		return fmt.Errorf("ca file: %w", err)
	}
	return nil
}

// writeProxyKubeconfig writes the proxies' kubeconfig: the node one's
// server and CA with a client certificate for system:kube-proxy, signed by
// the cluster CA, so the proxies hold only kube-proxy's rights
// (system:node-proxier) and not the admin's.
func (c Config) writeProxyKubeconfig() error {
	kc, err := clientcmd.LoadFromFile(c.nodeKubeconfig())
	if err != nil {
		return fmt.Errorf("node kubeconfig: %w", err)
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(c.dataDir(), "pki", "ca.crt"), filepath.Join(c.dataDir(), "pki", "ca.key"))
	if err != nil {
		return fmt.Errorf("cluster CA: %w", err)
	}
	certPEM, keyPEM, err := ca.IssueClient("system:kube-proxy", nil, 365*24*time.Hour)
	if err != nil {
		return fmt.Errorf("proxy certificate: %w", err)
	}
	for _, ai := range kc.AuthInfos {
		*ai = clientcmdapi.AuthInfo{ClientCertificateData: certPEM, ClientKeyData: keyPEM}
	}
	if err := clientcmd.WriteToFile(*kc, c.proxyKubeconfig()); err != nil {
		return fmt.Errorf("proxy kubeconfig: %w", err)
	}
	return nil
}

func selector() string { return managedByKey + "=" + managedByValue }

// registerNodes writes the lab's Node objects, as a node agent would when
// it registers: podCIDR, InternalIP, and a Ready condition (no agent sends
// heartbeats yet, so nothing turns them NotReady). Nodes an earlier lab of
// another size left behind are deleted.
func (c Config) registerNodes(ctx context.Context, cs kubernetes.Interface) error {
	want := map[string]bool{}
	for _, n := range c.AllNodes() {
		want[n.Name] = true
		node := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: map[string]string{
				managedByKey: managedByValue, "kubernetes.io/hostname": n.Name, "kubernetes.io/os": "linux",
			}},
			Spec: corev1.NodeSpec{PodCIDR: n.PodCIDR.String(), PodCIDRs: []string{n.PodCIDR.String()}},
		}
		cur, err := cs.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			if cur, err = cs.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{}); err == nil {
				cur.Labels, cur.Spec.PodCIDR, cur.Spec.PodCIDRs = node.Labels, node.Spec.PodCIDR, node.Spec.PodCIDRs
				cur, err = cs.CoreV1().Nodes().Update(ctx, cur, metav1.UpdateOptions{})
			}
		}
		if err != nil {
			return fmt.Errorf("register node %s: %w", n.Name, err)
		}
		now := metav1.Now()
		cur.Status = corev1.NodeStatus{
			Addresses: []corev1.NodeAddress{
				{Type: corev1.NodeInternalIP, Address: n.IP.String()},
				{Type: corev1.NodeHostName, Address: n.Name},
			},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "SkepLab",
				Message: "made by skep lab (no node agent yet)", LastHeartbeatTime: now, LastTransitionTime: now,
			}},
			NodeInfo: corev1.NodeSystemInfo{OperatingSystem: "linux", Architecture: "amd64", KubeProxyVersion: "skep"},
		}
		if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("node %s status: %w", n.Name, err)
		}
	}
	old, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: selector()})
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, n := range old.Items {
		if !want[n.Name] {
			if err := cs.CoreV1().Nodes().Delete(ctx, n.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("delete node %s: %w", n.Name, err)
			}
		}
	}
	return nil
}

// deleteDemoObjects removes the pods and services an earlier demo wrote
// (the services' endpoint slices and Endpoints go with them).
func deleteDemoObjects(ctx context.Context, cs kubernetes.Interface) error {
	ls := metav1.ListOptions{LabelSelector: selector()}
	now := metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}
	svcs, err := cs.CoreV1().Services(demoNamespace).List(ctx, ls)
	if err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	for _, s := range svcs.Items {
		if err := cs.CoreV1().Services(demoNamespace).Delete(ctx, s.Name, now); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete service %s: %w", s.Name, err)
		}
	}
	pods, err := cs.CoreV1().Pods(demoNamespace).List(ctx, ls)
	if err != nil {
		return fmt.Errorf("list pods: %w", err)
	}
	for _, p := range pods.Items {
		if err := cs.CoreV1().Pods(demoNamespace).Delete(ctx, p.Name, now); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("delete pod %s: %w", p.Name, err)
		}
	}
	return nil
}

// publishPod writes a pod the lab started as a runtime and agent would:
// create (pending), bind to its node through pods/binding (the scheduler's
// call), then status Running and Ready with its IP (the agent's).
func publishPod(ctx context.Context, cs kubernetes.Interface, p *labPod, node Node) error {
	pods := cs.CoreV1().Pods(demoNamespace)
	labels := map[string]string{managedByKey: managedByValue, "app": p.App}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: demoNamespace, Labels: labels},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name:    "serve",
			Image:   "skep-lab/serve",
			Command: []string{"skep", "lab", "serve"},
			Ports:   []corev1.ContainerPort{{Name: "http", ContainerPort: int32(podPort), Protocol: corev1.ProtocolTCP}},
		}}},
	}
	created, err := pods.Create(ctx, obj, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create pod %s: %w", p.Name, err)
	}
	b := &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: demoNamespace, UID: created.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: node.Name},
	}
	if err := pods.Bind(ctx, b, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("bind pod %s: %w", p.Name, err)
	}
	cur, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("get pod %s: %w", p.Name, err)
	}
	now := metav1.Now()
	conds := []corev1.PodCondition{}
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.ContainersReady, corev1.PodReady} {
		conds = append(conds, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: now})
	}
	cur.Status = corev1.PodStatus{
		Phase:      corev1.PodRunning,
		Conditions: conds,
		HostIP:     node.IP.String(),
		HostIPs:    []corev1.HostIP{{IP: node.IP.String()}},
		PodIP:      p.IP.String(),
		PodIPs:     []corev1.PodIP{{IP: p.IP.String()}},
		StartTime:  &now,
		ContainerStatuses: []corev1.ContainerStatus{{
			Name: "serve", Image: "skep-lab/serve", ImageID: "skep-lab/serve", Ready: true, Started: ptr.To(true),
			ContainerID: "skeplab://" + strconv.Itoa(p.Pid),
			State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		}},
	}
	if _, err := pods.UpdateStatus(ctx, cur, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("pod %s status: %w", p.Name, err)
	}
	return nil
}

// publishService creates a service selecting app=<app>, its port http
// targeting the pods' port named http. The EndpointSlice controller lists
// the pods in its slices. It returns the service as stored (with the
// ClusterIP and node port the server allocated).
func publishService(ctx context.Context, cs kubernetes.Interface, name, app string, typ corev1.ServiceType) (*corev1.Service, error) {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: demoNamespace, Labels: labLabels},
		Spec: corev1.ServiceSpec{
			Type:     typ,
			Selector: map[string]string{"app": app},
			Ports: []corev1.ServicePort{{
				Name: "http", Port: 80, TargetPort: intstr.FromString("http"), Protocol: corev1.ProtocolTCP,
			}},
		},
	}
	created, err := cs.CoreV1().Services(demoNamespace).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("create service %s: %w", name, err)
	}
	return created, nil
}
