package job

import (
	"sort"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// A Job replaces failed pods after an exponential backoff: base after the
// first failure since the last success, doubling up to a maximum
// (upstream's 10s and 10m). The record of failures lives in the
// controller, as in kube-controller-manager: a restart starts afresh.

type backoffRecord struct {
	key       string
	failures  int32 // since the last success
	lastFail  time.Time
	hasFailed bool
}

type backoffStore struct {
	mu sync.Mutex
	m  map[string]backoffRecord
}

func newBackoffStore() *backoffStore { return &backoffStore{m: map[string]backoffRecord{}} }

func (s *backoffStore) remove(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, key)
}

func (s *backoffStore) update(r backoffRecord) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[r.key] = r
}

// next is key's record once the newly finished pods are counted: a
// success resets it, failures after the last success count.
func (s *backoffStore) next(key string, succeeded, failed []*corev1.Pod) backoffRecord {
	s.mu.Lock()
	r, ok := s.m[key]
	s.mu.Unlock()
	if !ok {
		r = backoffRecord{key: key}
	}
	byFinish := func(ps []*corev1.Pod) {
		sort.Slice(ps, func(i, j int) bool { return finishedAt(ps[i]).Before(finishedAt(ps[j])) })
	}
	byFinish(succeeded)
	byFinish(failed)
	switch {
	case len(succeeded) == 0 && len(failed) == 0:
	case len(succeeded) == 0:
		r.failures += int32(len(failed))
		r.lastFail, r.hasFailed = finishedAt(failed[len(failed)-1]), true
	default:
		r.failures, r.hasFailed = 0, false
		lastSuccess := finishedAt(succeeded[len(succeeded)-1])
		for i := len(failed) - 1; i >= 0; i-- {
			t := finishedAt(failed[i])
			if !t.After(lastSuccess) {
				break
			}
			if !r.hasFailed {
				r.lastFail, r.hasFailed = t, true
			}
			r.failures++
		}
	}
	return r
}

// remaining is how long pod creation waits still, at now.
func (r backoffRecord) remaining(now time.Time, base, maxDelay time.Duration) time.Duration {
	if r.failures == 0 || !r.hasFailed {
		return 0
	}
	d := base
	for i := int32(1); i < r.failures; i++ {
		d *= 2
		if d >= maxDelay {
			d = maxDelay
			break
		}
	}
	if elapsed := now.Sub(r.lastFail); elapsed < d {
		return d - elapsed
	}
	return 0
}

// finishedAt is when a pod finished: its containers' last termination,
// else when it stopped being ready, else its deletion, else its creation.
func finishedAt(p *corev1.Pod) time.Time {
	var last time.Time
	for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if t := cs.State.Terminated; t != nil && t.FinishedAt.After(last) {
			last = t.FinishedAt.Time
		}
	}
	if !last.IsZero() {
		return last
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady && c.Status == corev1.ConditionFalse && !c.LastTransitionTime.IsZero() {
			return c.LastTransitionTime.Time
		}
	}
	if p.DeletionTimestamp != nil {
		return p.DeletionTimestamp.Time
	}
	return p.CreationTimestamp.Time
}
