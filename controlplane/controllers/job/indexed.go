package job

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/ptr"
)

// An Indexed Job's pods each carry a completion index in [0, completions):
// in the batch.kubernetes.io/job-completion-index annotation and label,
// in JOB_COMPLETION_INDEX (from the annotation through the downward API),
// and in their hostname <job>-<index>. The Job is complete when every
// index has a succeeded pod; status.completedIndexes lists them as
// intervals ("1,3-5").

const unknownIndex = -1

func isIndexed(j *batchv1.Job) bool {
	return ptr.Deref(j.Spec.CompletionMode, batchv1.NonIndexedCompletion) == batchv1.IndexedCompletion
}

// podIndex is the completion index of a pod, or unknownIndex.
func podIndex(p *corev1.Pod) int {
	v, ok := p.Annotations[batchv1.JobCompletionIndexAnnotation]
	if !ok {
		return unknownIndex
	}
	i, err := strconv.Atoi(v)
	if err != nil || i < 0 {
		return unknownIndex
	}
	return i
}

// validIndex: the pod has an index within completions.
func validIndex(j *batchv1.Job, p *corev1.Pod) bool {
	i := podIndex(p)
	return i != unknownIndex && i < int(*j.Spec.Completions)
}

// interval is a closed range of indexes.
type interval struct{ first, last int }

// indexes is a sorted list of disjoint, non-adjacent intervals.
type indexes []interval

func (s indexes) total() int {
	n := 0
	for _, iv := range s {
		n += iv.last - iv.first + 1
	}
	return n
}

func (s indexes) has(i int) bool {
	k := sort.Search(len(s), func(k int) bool { return s[k].last >= i })
	return k < len(s) && s[k].first <= i
}

func (s indexes) String() string {
	var b strings.Builder
	for k, iv := range s {
		if k > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Itoa(iv.first))
		if iv.last > iv.first {
			sep := "-"
			if iv.last == iv.first+1 {
				sep = ","
			}
			b.WriteString(sep + strconv.Itoa(iv.last))
		}
	}
	return b.String()
}

// with adds the indexes in add.
func (s indexes) with(add []int) indexes {
	all := map[int]bool{}
	for _, iv := range s {
		for i := iv.first; i <= iv.last; i++ {
			all[i] = true
		}
	}
	for _, i := range add {
		all[i] = true
	}
	list := make([]int, 0, len(all))
	for i := range all {
		list = append(list, i)
	}
	sort.Ints(list)
	var out indexes
	for _, i := range list {
		if n := len(out); n > 0 && out[n-1].last == i-1 {
			out[n-1].last = i
			continue
		}
		out = append(out, interval{i, i})
	}
	return out
}

// parseIndexes reads status.completedIndexes, keeping those below
// completions.
func parseIndexes(s string, completions int) indexes {
	var list []int
	for _, part := range strings.Split(s, ",") {
		if part == "" {
			continue
		}
		lo, hi, found := strings.Cut(part, "-")
		first, err := strconv.Atoi(lo)
		if err != nil {
			continue
		}
		last := first
		if found {
			if last, err = strconv.Atoi(hi); err != nil {
				continue
			}
		}
		for i := first; i <= last && i < completions; i++ {
			list = append(list, i)
		}
	}
	return indexes(nil).with(list)
}

// succeededIndexes are the indexes the status counts and those with a
// succeeded pod on top.
func succeededIndexes(j *batchv1.Job, pods []*corev1.Pod) (prev, now indexes) {
	prev = parseIndexes(j.Status.CompletedIndexes, int(*j.Spec.Completions))
	var add []int
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded && hasFinalizer(p) && validIndex(j, p) {
			add = append(add, podIndex(p))
		}
	}
	return prev, prev.with(add)
}

// pendingIndexes are the first n indexes below completions that neither
// succeeded nor have an active pod.
func pendingIndexes(j *batchv1.Job, active []*corev1.Pod, done indexes, n int) []int {
	taken := map[int]bool{}
	for _, p := range active {
		taken[podIndex(p)] = true
	}
	var out []int
	for i := 0; i < int(*j.Spec.Completions) && len(out) < n; i++ {
		if !taken[i] && !done.has(i) {
			out = append(out, i)
		}
	}
	return out
}

// withIndex makes tmpl the template of the pod of index i of Job name.
func withIndex(tmpl *corev1.PodTemplateSpec, name string, i int) {
	v := strconv.Itoa(i)
	if tmpl.Annotations == nil {
		tmpl.Annotations = map[string]string{}
	}
	tmpl.Annotations[batchv1.JobCompletionIndexAnnotation] = v
	if tmpl.Labels == nil {
		tmpl.Labels = map[string]string{}
	}
	tmpl.Labels[batchv1.JobCompletionIndexAnnotation] = v
	tmpl.Spec.Hostname = fmt.Sprintf("%s-%d", name, i)
}

// addIndexEnv gives every container JOB_COMPLETION_INDEX from the pod's
// index annotation.
func addIndexEnv(tmpl *corev1.PodTemplateSpec) {
	env := corev1.EnvVar{Name: "JOB_COMPLETION_INDEX", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{
		FieldPath: fmt.Sprintf("metadata.annotations['%s']", batchv1.JobCompletionIndexAnnotation)}}}
	add := func(cs []corev1.Container) {
		for i := range cs {
			found := false
			for _, e := range cs[i].Env {
				found = found || e.Name == env.Name
			}
			if !found {
				cs[i].Env = append(cs[i].Env, env)
			}
		}
	}
	add(tmpl.Spec.InitContainers)
	add(tmpl.Spec.Containers)
}
