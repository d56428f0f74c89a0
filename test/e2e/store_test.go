package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// TestSecretsEncryptedAtRest writes a secret and a configmap through the API,
// stops the server, and reads every file of the data dir: the configmap's
// value must be there (so the search works), the secret's value must not be,
// in plain or base64 form. After a restart the secret reads back intact.
// Credentials files are private to the owner.
func TestSecretsEncryptedAtRest(t *testing.T) {
	srv := startServer(t)
	cs := clientset(t, restConfig(t, srv))
	ctx := context.Background()
	const secretValue = "hunter2-e2e-9f3c1b7a-plaintext-must-not-appear"
	const configValue = "configmap-e2e-4d2a8c6e-plaintext-should-appear"
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "db-pass"},
		Data:       map[string][]byte{"password": []byte(secretValue)},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret: %v", err)
	}
	if _, err := cs.CoreV1().Secrets("default").Create(ctx, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "api-token"},
		StringData: map[string]string{"token": secretValue + "-stringdata"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create secret with stringData: %v", err)
	}
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Data:       map[string]string{"v": configValue},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create configmap: %v", err)
	}
	if err := srv.Stop(15 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	var sawConfig bool
	err := filepath.WalkDir(srv.DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, needle := range []string{secretValue, base64.StdEncoding.EncodeToString([]byte(secretValue))} {
			if bytes.Contains(b, []byte(needle)) {
				t.Errorf("%s holds the secret's value in the clear (%q)", path, needle)
			}
		}
		sawConfig = sawConfig || bytes.Contains(b, []byte(configValue))
		// Certificates are public; everything else is not.
		if info, err := d.Info(); err == nil && !strings.HasSuffix(path, ".crt") && info.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v: the data dir's files (store, keys, token, kubeconfig) are the owner's alone", path, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !sawConfig {
		t.Errorf("no file of the data dir holds the configmap's value: the search for the secret proves nothing")
	}

	restart(t, srv)
	s, err := cs.CoreV1().Secrets("default").Get(ctx, "db-pass", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get secret after restart: %v", err)
	}
	if string(s.Data["password"]) != secretValue {
		t.Errorf("secret after restart: %q", s.Data["password"])
	}
	s, err = cs.CoreV1().Secrets("default").Get(ctx, "api-token", metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get stringData secret after restart: %v", err)
	}
	if string(s.Data["token"]) != secretValue+"-stringdata" || len(s.StringData) != 0 {
		t.Errorf("stringData secret after restart: data %q stringData %v (stringData is write-only, merged into data)", s.Data, s.StringData)
	}
}

// TestWatchFromBeforeRestartIsGone: the event log lives in memory, so after
// a restart a watch from a revision older than the restart cannot be served
// whole (a create and a delete happened after it) and must end with 410 Gone
// (reason Expired) — as an HTTP status or as an ERROR event — which is what
// tells an informer to relist. (A server that kept its log across restarts
// may instead replay exactly those two events.) A watch from the current
// revision works and sees new writes.
func TestWatchFromBeforeRestartIsGone(t *testing.T) {
	srv := startServer(t)
	cs := clientset(t, restConfig(t, srv))
	ctx := context.Background()
	cm, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "old"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	oldRV := cm.ResourceVersion
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "mid"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := cs.CoreV1().ConfigMaps("default").Delete(ctx, "mid", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.Stop(15 * time.Second); err != nil {
		t.Fatal(err)
	}
	restart(t, srv)
	for _, n := range []string{"new-0", "new-1"} {
		if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	c, token, err := srv.HTTPClient()
	if err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(wctx, http.MethodGet, "https://"+srv.Addr+"/api/v1/namespaces/default/configmaps?watch=true&resourceVersion="+oldRV, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("watch from %s: %v", oldRV, err)
	}
	defer resp.Body.Close()
	var st metav1.Status
	switch resp.StatusCode {
	case http.StatusGone:
		if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
			t.Fatalf("410 body is not a Status: %v", err)
		}
	case http.StatusOK:
		rd := bufio.NewReader(resp.Body)
		type event struct {
			Type   string          `json:"type"`
			Object json.RawMessage `json:"object"`
		}
		next := func() (event, string) {
			line, err := rd.ReadBytes('\n')
			if err != nil {
				t.Fatalf("watch from %s before the restart: no event within 10s (%v); want 410 Gone", oldRV, err)
			}
			var ev event
			if err := json.Unmarshal(line, &ev); err != nil {
				t.Fatalf("watch event %q: %v", line, err)
			}
			var m metav1.PartialObjectMetadata
			_ = json.Unmarshal(ev.Object, &m)
			return ev, m.Name
		}
		ev, name := next()
		if ev.Type == "ADDED" && name == "mid" {
			// A replay of the whole history: the delete must follow.
			if ev, name = next(); ev.Type != "DELETED" || name != "mid" {
				t.Errorf("watch from %s replayed ADDED mid, then %s %s, want DELETED mid", oldRV, ev.Type, name)
			}
			return
		}
		if ev.Type != "ERROR" {
			t.Fatalf("watch from %s (before a create and a delete and a restart): first event %s %s, want ERROR 410 (events were lost)", oldRV, ev.Type, ev.Object)
		}
		if err := json.Unmarshal(ev.Object, &st); err != nil {
			t.Fatal(err)
		}
	default:
		t.Fatalf("watch from %s: HTTP %d, want 410 or an ERROR event", oldRV, resp.StatusCode)
	}
	if st.Code != http.StatusGone || st.Reason != metav1.StatusReasonExpired {
		t.Errorf("watch from before the restart: Status code %d reason %q message %q, want 410 Expired", st.Code, st.Reason, st.Message)
	}

	// From the current revision the watch works.
	l, err := cs.CoreV1().ConfigMaps("default").List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps("default").Watch(wctx, metav1.ListOptions{ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	if _, err := cs.CoreV1().ConfigMaps("default").Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "new-2"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for ev := range w.ResultChan() {
		if cm, ok := ev.Object.(*corev1.ConfigMap); ok && cm.Name == "new-2" {
			return
		}
		if !strings.EqualFold(string(ev.Type), "ADDED") {
			t.Fatalf("watch from the current revision: unexpected %s %v", ev.Type, ev.Object)
		}
	}
	t.Fatal("watch from the current revision did not deliver new-2 within 10s")
}

// TestSecondServerOnSameDataDirRefuses: a second `skep server` on a data dir
// in use must exit with an error quickly (not hang on the store's file lock,
// not share it), and the first must go on serving.
func TestSecondServerOnSameDataDirRefuses(t *testing.T) {
	srv := startServer(t)
	addr, err := harness.FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	start := time.Now()
	out, err := exec.CommandContext(ctx, skepBin, "server", "--data-dir", srv.DataDir, "--listen", addr).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("a second server on the same data dir was still running after 20s:\n%s", out)
	}
	if err == nil {
		t.Fatalf("a second server on the same data dir exited 0:\n%s", out)
	}
	t.Logf("second server refused after %v: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
	if _, err := srv.WaitReady(5 * time.Second); err != nil {
		t.Errorf("first server after the second one's attempt: %v", err)
	}
	cs := clientset(t, restConfig(t, srv))
	if _, err := cs.CoreV1().ConfigMaps("default").Create(context.Background(), harness.ConfigMap("default", "still-here"), metav1.CreateOptions{}); err != nil {
		t.Errorf("create on the first server: %v", err)
	}
}
