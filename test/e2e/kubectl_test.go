package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/skep-dev/skep/internal/testutil"
	"github.com/skep-dev/skep/test/e2e/harness"
)

// kubectls are the kubectl builds the walk-through runs with: the current one
// and the oldest one the machine carries. /usr/bin/kubectl is gcloud's
// dispatcher, which picks a build by the server's version, so the builds are
// named directly.
var kubectls = []struct{ name, path string }{
	{"1.33", "/usr/lib/google-cloud-sdk/bin/kubectl.1.33"},
	{"1.27", "/usr/lib/google-cloud-sdk/bin/kubectl.1.27"},
}

// kubectl runs one kubectl build against one server, as a user with a clean
// home directory (no discovery cache from another run) would.
type kubectl struct {
	t    *testing.T
	bin  string
	env  []string
	home string
}

func newKubectl(t *testing.T, bin string, srv *harness.Server) *kubectl {
	home := t.TempDir()
	env := []string{"HOME=" + home, "KUBECONFIG=" + srv.Kubeconfig(), "PATH=" + os.Getenv("PATH")}
	return &kubectl{t: t, bin: bin, env: env, home: home}
}

func (k *kubectl) run(extraEnv []string, args ...string) (string, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, args...)
	cmd.Env = append(append([]string{}, k.env...), extraEnv...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		err = errors.New("kubectl timed out after 60s")
	}
	return stdout.String(), stderr.String(), err
}

// ok runs kubectl and fails the test unless it exits 0.
func (k *kubectl) ok(args ...string) string {
	k.t.Helper()
	out, errOut, err := k.run(nil, args...)
	if err != nil {
		k.t.Fatalf("kubectl %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out, errOut)
	}
	return out
}

// fails runs kubectl, fails the test if it exits 0, and returns stderr.
func (k *kubectl) fails(args ...string) string {
	k.t.Helper()
	out, errOut, err := k.run(nil, args...)
	if err == nil {
		k.t.Fatalf("kubectl %s: succeeded, want an error\nstdout: %s\nstderr: %s", strings.Join(args, " "), out, errOut)
	}
	// Bad input is the client's fault: a 4xx, never a server error.
	if strings.Contains(errOut, "InternalError") || strings.Contains(errOut, "(InternalServerError)") {
		k.t.Errorf("kubectl %s: the server answered bad input with a server error:\n%s", strings.Join(args, " "), errOut)
	}
	return errOut
}

func (k *kubectl) deployment(name string) *appsv1.Deployment {
	k.t.Helper()
	var d appsv1.Deployment
	out := k.ok("get", "deployment", name, "-o", "json")
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		k.t.Fatalf("parse deployment json: %v\n%s", err, out)
	}
	return &d
}

func wantContains(t *testing.T, what, got string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(got, w) {
			t.Errorf("%s: output lacks %q:\n%s", what, w, got)
		}
	}
}

// TestKubectlWalkthrough is the README's walk-through done by the real
// kubectl: apply the documentation's manifests with no extra flags, read them
// back in every output format, change them with every verb kubectl has for
// it, watch, and check that bad input gets the server's error.
func TestKubectlWalkthrough(t *testing.T) {
	for _, kc := range kubectls {
		t.Run(kc.name, func(t *testing.T) {
			t.Parallel()
			bin := testutil.RequireBinary(t, kc.path)
			srv := startServer(t)
			k := newKubectl(t, bin, srv)
			walkthrough(t, k)
			chunkedGet(t, k, srv)
		})
	}
}

func walkthrough(t *testing.T, k *kubectl) {
	deployFile, _ := filepath.Abs("testdata/nginx-deployment.yaml")
	svcFile, _ := filepath.Abs("testdata/service.yaml")

	// apply, then apply again unchanged, then a changed copy.
	out := k.ok("apply", "-f", deployFile)
	wantContains(t, "apply deployment", out, "deployment.apps/nginx-deployment created")
	out = k.ok("apply", "-f", svcFile)
	wantContains(t, "apply service", out, "service/my-service created")
	out = k.ok("apply", "-f", deployFile)
	wantContains(t, "re-apply deployment", out, "deployment.apps/nginx-deployment unchanged")
	out = k.ok("apply", "-f", svcFile)
	wantContains(t, "re-apply service", out, "service/my-service unchanged")

	raw, err := os.ReadFile(deployFile)
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(k.home, "nginx-deployment-1.16.yaml")
	if err := os.WriteFile(changed, bytes.ReplaceAll(raw, []byte("nginx:1.14.2"), []byte("nginx:1.16.1")), 0o644); err != nil {
		t.Fatal(err)
	}
	out = k.ok("apply", "-f", changed)
	wantContains(t, "apply changed deployment", out, "deployment.apps/nginx-deployment configured")
	if img := k.deployment("nginx-deployment").Spec.Template.Spec.Containers[0].Image; img != "nginx:1.16.1" {
		t.Errorf("after apply of the changed manifest: image %q, want nginx:1.16.1", img)
	}

	// get: table, yaml, json.
	out = k.ok("get", "deployments")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 {
		t.Errorf("get deployments: want a header and one row:\n%s", out)
	} else {
		wantContains(t, "get deployments header", lines[0], "NAME", "READY", "AGE")
		if !strings.HasPrefix(lines[1], "nginx-deployment ") {
			t.Errorf("get deployments: row %q, want nginx-deployment", lines[1])
		}
	}
	out = k.ok("get", "services")
	wantContains(t, "get services", out, "NAME", "my-service")

	out = k.ok("get", "deployment", "nginx-deployment", "-o", "yaml")
	var y map[string]any
	if err := yaml.Unmarshal([]byte(out), &y); err != nil {
		t.Fatalf("get -o yaml: not YAML: %v\n%s", err, out)
	}
	var dy appsv1.Deployment
	if err := yaml.Unmarshal([]byte(out), &dy); err != nil {
		t.Fatalf("get -o yaml: not a Deployment: %v", err)
	}
	if dy.Kind != "Deployment" || dy.APIVersion != "apps/v1" || dy.Name != "nginx-deployment" || dy.Namespace != "default" {
		t.Errorf("get -o yaml: kind %q apiVersion %q name %q namespace %q", dy.Kind, dy.APIVersion, dy.Name, dy.Namespace)
	}
	if dy.UID == "" || dy.ResourceVersion == "" || dy.CreationTimestamp.IsZero() {
		t.Errorf("get -o yaml: server-set fields missing: uid %q resourceVersion %q creationTimestamp %v", dy.UID, dy.ResourceVersion, dy.CreationTimestamp)
	}
	if dy.Spec.Replicas == nil || *dy.Spec.Replicas != 3 {
		t.Errorf("get -o yaml: spec.replicas %v, want 3", dy.Spec.Replicas)
	}
	if _, ok := dy.Annotations["kubectl.kubernetes.io/last-applied-configuration"]; !ok {
		t.Errorf("get -o yaml: no last-applied-configuration annotation: %v", dy.Annotations)
	}

	d := k.deployment("nginx-deployment")
	if d.Spec.Selector == nil || d.Spec.Selector.MatchLabels["app"] != "nginx" || d.Labels["app"] != "nginx" {
		t.Errorf("get -o json: selector %v labels %v", d.Spec.Selector, d.Labels)
	}
	if c := d.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Name != "nginx" || len(c[0].Ports) != 1 || c[0].Ports[0].ContainerPort != 80 {
		t.Errorf("get -o json: containers %+v", c)
	}
	var svc corev1.Service
	out = k.ok("get", "service", "my-service", "-o", "json")
	if err := json.Unmarshal([]byte(out), &svc); err != nil {
		t.Fatalf("get service -o json: %v", err)
	}
	if p := svc.Spec.Ports; len(p) != 1 || p[0].Port != 80 || p[0].TargetPort.IntValue() != 9376 || p[0].Protocol != corev1.ProtocolTCP {
		t.Errorf("service ports %+v, want TCP 80 -> 9376", p)
	}
	if svc.Spec.Selector["app.kubernetes.io/name"] != "MyApp" {
		t.Errorf("service selector %v", svc.Spec.Selector)
	}

	// describe.
	out = k.ok("describe", "deployment", "nginx-deployment")
	wantContains(t, "describe deployment", out, "Name:", "nginx-deployment", "Namespace:", "default", "Replicas:", "nginx:1.16.1", "Selector:", "app=nginx")

	// label and annotate.
	out = k.ok("label", "deployment", "nginx-deployment", "tier=web")
	wantContains(t, "label", out, "deployment.apps/nginx-deployment labeled")
	out = k.ok("annotate", "deployment", "nginx-deployment", "owner=team-a")
	// kubectl 1.27 prints "annotate", later builds "annotated".
	wantContains(t, "annotate", out, "deployment.apps/nginx-deployment annotate")
	d = k.deployment("nginx-deployment")
	if d.Labels["tier"] != "web" || d.Labels["app"] != "nginx" {
		t.Errorf("after label: labels %v", d.Labels)
	}
	if d.Annotations["owner"] != "team-a" {
		t.Errorf("after annotate: annotations %v", d.Annotations)
	}
	out = k.ok("get", "deployments", "-l", "tier=web", "-o", "name")
	if strings.TrimSpace(out) != "deployment.apps/nginx-deployment" {
		t.Errorf("get -l tier=web: %q", out)
	}
	out = k.ok("get", "deployments", "-l", "tier=db", "-o", "name")
	if strings.TrimSpace(out) != "" {
		t.Errorf("get -l tier=db: %q, want nothing", out)
	}

	// scale (the scale subresource).
	out = k.ok("scale", "deployment", "nginx-deployment", "--replicas=5")
	wantContains(t, "scale", out, "deployment.apps/nginx-deployment scaled")
	if r := k.deployment("nginx-deployment").Spec.Replicas; r == nil || *r != 5 {
		t.Errorf("after scale: spec.replicas %v, want 5", r)
	}

	// patch: strategic (containers merge by name, so the port survives), merge, json.
	out = k.ok("patch", "deployment", "nginx-deployment", "-p", `{"spec":{"template":{"spec":{"containers":[{"name":"nginx","image":"nginx:1.17.0"}]}}}}`)
	wantContains(t, "strategic patch", out, "deployment.apps/nginx-deployment patched")
	d = k.deployment("nginx-deployment")
	if c := d.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Image != "nginx:1.17.0" || len(c[0].Ports) != 1 || c[0].Ports[0].ContainerPort != 80 {
		t.Errorf("after strategic merge patch: containers %+v, want image nginx:1.17.0 with port 80 kept", c)
	}
	out = k.ok("patch", "deployment", "nginx-deployment", "--type", "merge", "-p", `{"metadata":{"labels":{"patched":"merge"}}}`)
	wantContains(t, "merge patch", out, "deployment.apps/nginx-deployment patched")
	out = k.ok("patch", "deployment", "nginx-deployment", "--type", "json", "-p", `[{"op":"replace","path":"/spec/replicas","value":2}]`)
	wantContains(t, "json patch", out, "deployment.apps/nginx-deployment patched")
	d = k.deployment("nginx-deployment")
	if d.Labels["patched"] != "merge" || d.Labels["tier"] != "web" {
		t.Errorf("after merge patch: labels %v", d.Labels)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("after json patch: spec.replicas %v, want 2", d.Spec.Replicas)
	}
	k.fails("patch", "deployment", "nginx-deployment", "--type", "json", "-p", `[{"op":"replace","path":"/spec/nosuchfield/x","value":2}]`)

	// edit through KUBE_EDITOR: a script that rewrites the annotation.
	editor := filepath.Join(k.home, "editor.sh")
	if err := os.WriteFile(editor, []byte("#!/bin/sh\nsed -i 's/owner: team-a/owner: team-b/' \"$1\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := k.run([]string{"KUBE_EDITOR=" + editor}, "edit", "deployment", "nginx-deployment")
	if err != nil {
		t.Fatalf("kubectl edit: %v\nstdout: %s\nstderr: %s", err, out, errOut)
	}
	wantContains(t, "edit", out, "deployment.apps/nginx-deployment edited")
	if a := k.deployment("nginx-deployment").Annotations["owner"]; a != "team-b" {
		t.Errorf("after edit: annotation owner %q, want team-b", a)
	}

	// create secret generic / configmap.
	out = k.ok("create", "secret", "generic", "db-pass", "--from-literal=password=s3cr3t")
	wantContains(t, "create secret", out, "secret/db-pass created")
	out = k.ok("get", "secret", "db-pass", "-o", "jsonpath={.data.password}")
	if want := base64.StdEncoding.EncodeToString([]byte("s3cr3t")); out != want {
		t.Errorf("secret data.password %q, want %q", out, want)
	}
	out = k.ok("create", "configmap", "app-config", "--from-literal=key=value")
	wantContains(t, "create configmap", out, "configmap/app-config created")
	out = k.ok("get", "configmap", "app-config", "-o", "jsonpath={.data.key}")
	if out != "value" {
		t.Errorf("configmap data.key %q, want value", out)
	}

	// get -w sees a change made after it started.
	watchSeesCreate(t, k)

	// api-resources lists the core kinds with their short names.
	out = k.ok("api-resources")
	rows := map[string][]string{}
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) > 0 {
			rows[f[0]] = f
		}
	}
	for _, want := range [][]string{
		{"pods", "po", "v1", "true", "Pod"},
		{"deployments", "deploy", "apps/v1", "true", "Deployment"},
		{"services", "svc", "v1", "true", "Service"},
		{"configmaps", "cm", "v1", "true", "ConfigMap"},
		{"namespaces", "ns", "v1", "false", "Namespace"},
		{"nodes", "no", "v1", "false", "Node"},
	} {
		if got := rows[want[0]]; strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("api-resources row for %s: %q, want %q", want[0], got, want)
		}
	}
	// Short names resolve through discovery.
	out = k.ok("get", "deploy", "-o", "name")
	wantContains(t, "get deploy", out, "deployment.apps/nginx-deployment")
	out = k.ok("get", "svc", "-o", "name")
	wantContains(t, "get svc", out, "service/my-service")

	// Bad input: the server's message reaches the user and kubectl fails.
	errOut = k.fails("create", "configmap", "Bad_Name", "--from-literal=a=b")
	wantContains(t, "invalid name", errOut, "Bad_Name", "invalid")
	nsFile := filepath.Join(k.home, "cm-in-missing-ns.yaml")
	if err := os.WriteFile(nsFile, []byte("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: lost\n  namespace: nope\ndata:\n  a: b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	errOut = k.fails("apply", "-f", nsFile)
	wantContains(t, "apply into a missing namespace", errOut, "NotFound", `namespaces "nope" not found`)
	// A typo in a manifest is refused by the server's strict field validation.
	typo := filepath.Join(k.home, "typo.yaml")
	if err := os.WriteFile(typo, bytes.Replace(raw, []byte("name: nginx-deployment"), []byte("name: typo-deployment"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(typo, bytes.Replace(mustRead(t, typo), []byte("replicas: 3"), []byte("replica: 3"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	errOut = k.fails("apply", "-f", typo)
	wantContains(t, "apply with a typo", errOut, `unknown field "spec.replica"`)
	errOut = k.fails("get", "deployment", "no-such-deployment")
	wantContains(t, "get missing", errOut, "NotFound", `"no-such-deployment" not found`)

	// delete.
	out = k.ok("delete", "-f", svcFile)
	wantContains(t, "delete service", out, `service "my-service" deleted`)
	out = k.ok("delete", "deployment", "nginx-deployment")
	wantContains(t, "delete deployment", out, `deployment.apps "nginx-deployment" deleted`)
	errOut = k.fails("get", "deployment", "nginx-deployment")
	wantContains(t, "get deleted deployment", errOut, "NotFound")
	out = k.ok("get", "deployments", "-o", "name")
	if strings.TrimSpace(out) != "" {
		t.Errorf("get deployments after delete: %q", out)
	}
}

// watchSeesCreate starts `kubectl get configmaps -w`, waits for its first
// list, creates a configmap and waits for the watch to print it.
func watchSeesCreate(t *testing.T, k *kubectl) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, k.bin, "get", "configmaps", "-w")
	cmd.Env = k.env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cancel(); _ = cmd.Wait() }()
	lines := make(chan string, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	waitLine := func(prefix string) bool {
		for {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Errorf("kubectl get -w ended before a line starting %q\nstderr: %s", prefix, stderr.String())
					return false
				}
				if strings.HasPrefix(l, prefix) {
					return true
				}
			case <-ctx.Done():
				t.Errorf("kubectl get -w: no line starting %q within 30s\nstderr: %s", prefix, stderr.String())
				return false
			}
		}
	}
	if !waitLine("app-config ") {
		return
	}
	k.ok("create", "configmap", "watched", "--from-literal=seen=yes")
	waitLine("watched ")
}

// chunkedGet lists more objects than kubectl's default page (500) with a
// label selector, so kubectl follows continue tokens, with the default and an
// odd chunk size (kept to a dozen pages: kubectl throttles itself to 5
// requests/s): every object once, none of the unlabelled ones.
func chunkedGet(t *testing.T, k *kubectl, srv *harness.Server) {
	const n = 1100
	cs := clientset(t, restConfig(t, srv))
	err := harness.Parallel(context.Background(), n+50, 16, func(ctx context.Context, _, i int) error {
		cm := harness.ConfigMap("default", fmt.Sprintf("chunk-%04d", i))
		if i < n {
			cm.Labels["chunk"] = "yes"
		}
		_, err := cs.CoreV1().ConfigMaps("default").Create(ctx, cm, metav1.CreateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("create configmaps: %v", err)
	}
	for _, chunk := range []string{"500", "99"} {
		out := k.ok("get", "configmaps", "-l", "chunk=yes", "-o", "name", "--chunk-size="+chunk)
		seen := map[string]bool{}
		for _, l := range strings.Fields(out) {
			if seen[l] {
				t.Errorf("get --chunk-size=%s: %s listed twice", chunk, l)
			}
			seen[l] = true
		}
		if len(seen) != n || !seen["configmap/chunk-0000"] || !seen[fmt.Sprintf("configmap/chunk-%04d", n-1)] {
			t.Errorf("get -l chunk=yes --chunk-size=%s: %d configmaps, want %d", chunk, len(seen), n)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
