package harness

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Pod is a small but realistic pod: labels, one container with a port,
// resource requests and an environment variable, as a Deployment would stamp.
func Pod(ns, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: ns,
			Labels:    map[string]string{"app": "bench", "tier": "web"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "web",
				Image: "nginx:1.14.2",
				Ports: []corev1.ContainerPort{{ContainerPort: 80, Protocol: corev1.ProtocolTCP}},
				Env:   []corev1.EnvVar{{Name: "POD_ROLE", Value: "bench"}},
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
					corev1.ResourceCPU:    resource.MustParse("100m"),
					corev1.ResourceMemory: resource.MustParse("64Mi"),
				}},
			}},
		},
	}
}

// ConfigMap is a configmap with a few hundred bytes of data.
func ConfigMap(ns, name string) *corev1.ConfigMap {
	return &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "bench"}},
		Data: map[string]string{
			"config.yaml": "listen: 0.0.0.0:8080\nworkers: 4\nlog_level: info\nupstreams:\n  - http://backend-0:9000\n  - http://backend-1:9000\n  - http://backend-2:9000\n",
			"owner":       name,
		},
	}
}

// Parallel runs fn(ctx, worker, i) for every i in [0, n) on workers
// goroutines and returns the first error (which stops the others).
func Parallel(ctx context.Context, n, workers int, fn func(ctx context.Context, worker, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var first error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(ctx, w, i); err != nil {
					once.Do(func() { first = fmt.Errorf("item %d: %w", i, err); cancel() })
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		// The parent context ended before all items were done.
		if int(next.Load()) < n {
			return ctx.Err()
		}
	}
	return first
}
