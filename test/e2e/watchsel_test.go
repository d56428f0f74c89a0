package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/skep-dev/skep/test/e2e/harness"
)

// TestWatchSelectorTransitions checks the watch semantics that filtered
// informers (a node agent watching spec.nodeName=<node>, a controller
// watching a label) depend on: an object that starts matching arrives as
// ADDED, one that changes while matching as MODIFIED, and one that stops
// matching as DELETED — though nothing was deleted.
func TestWatchSelectorTransitions(t *testing.T) {
	srv := startServer(t)
	cs := clientset(t, restConfig(t, srv))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	pods := cs.CoreV1().Pods("default")

	if _, err := pods.Create(ctx, harness.Pod("default", "p"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	l, err := pods.List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	byLabel, err := pods.Watch(ctx, metav1.ListOptions{LabelSelector: "stage=canary", ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer byLabel.Stop()
	byNode, err := cs.CoreV1().Pods("").Watch(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=node-1", ResourceVersion: l.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer byNode.Stop()

	patch := func(p string) {
		t.Helper()
		if _, err := pods.Patch(ctx, "p", "application/merge-patch+json", []byte(p), metav1.PatchOptions{}); err != nil {
			t.Fatalf("patch %s: %v", p, err)
		}
	}
	patch(`{"metadata":{"labels":{"stage":"canary"}}}`)
	patch(`{"metadata":{"annotations":{"note":"still canary"}}}`)
	patch(`{"metadata":{"labels":{"stage":"stable"}}}`)
	expect(t, byLabel, "label stage=canary", []watch.EventType{watch.Added, watch.Modified, watch.Deleted})

	// Binding puts the pod on node-1: the node's watch sees it arrive.
	if err := pods.Bind(ctx, &corev1.Binding{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Target: corev1.ObjectReference{Kind: "Node", Name: "node-1"}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("bind: %v", err)
	}
	if err := pods.Delete(ctx, "p", metav1.DeleteOptions{GracePeriodSeconds: new(int64)}); err != nil {
		t.Fatalf("delete: %v", err)
	}
	got := collect(t, byNode, 2)
	if len(got) < 2 || got[0] != watch.Added {
		t.Errorf("field spec.nodeName=node-1: events %v, want ADDED on bind, then the delete (MODIFIED with deletionTimestamp and/or DELETED)", got)
	}
}

func expect(t *testing.T, w watch.Interface, what string, want []watch.EventType) {
	t.Helper()
	got := collect(t, w, len(want))
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: events %v, want %v", what, got, want)
	}
}

// collect reads up to n events (ignoring bookmarks) or until 5 s pass.
func collect(t *testing.T, w watch.Interface, n int) []watch.EventType {
	t.Helper()
	var got []watch.EventType
	timeout := time.After(5 * time.Second)
	for len(got) < n {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				return got
			}
			if ev.Type == watch.Bookmark {
				continue
			}
			if ev.Type == watch.Error {
				t.Errorf("watch error: %v", ev.Object)
				return got
			}
			got = append(got, ev.Type)
		case <-timeout:
			return got
		}
	}
	return got
}
