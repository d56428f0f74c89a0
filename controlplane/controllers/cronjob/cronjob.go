// Package cronjob is the CronJob controller: it creates a CronJob's Jobs
// on its schedule, as kube-controller-manager's cronjob controller (v2)
// does, in the sample-controller shape.
//
//   - The schedule is parsed by robfig/cron (as upstream), in spec.timeZone
//     (the controller's zone when unset). Each sync computes the most
//     recent schedule time not yet run; the next sync is queued for the
//     following one.
//   - A Job is named <cronjob>-<minutes since the epoch of its schedule
//     time>, with the scheduled-timestamp annotation, so a time is never
//     run twice.
//   - startingDeadlineSeconds: a schedule time missed by more is skipped
//     (MissSchedule). concurrencyPolicy: Allow runs Jobs side by side,
//     Forbid skips a time while one is active, Replace deletes the active
//     ones first. suspend stops new Jobs.
//   - Status: active (references to running Jobs), lastScheduleTime,
//     lastSuccessfulTime. Finished Jobs beyond successfulJobsHistoryLimit
//     and failedJobsHistoryLimit are deleted, oldest first.
//
// The controller's Clock decides what time it is (tests drive it).
package cronjob

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"sync"
	"time"

	"github.com/skep-dev/skep/controlplane/controllers/internal/controller"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	batchinformers "k8s.io/client-go/informers/batch/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	batchlisters "k8s.io/client-go/listers/batch/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/reference"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
)

var kind = batchv1.SchemeGroupVersion.WithKind("CronJob")

// Options tune a Controller; zero values pick the defaults.
type Options struct {
	// Workers is how many CronJobs are synced at once (default 5,
	// kube-controller-manager's --concurrent-cron-job-syncs).
	Workers int
	Logger  *slog.Logger
	// Clock is the time schedules are judged at, and wakes CronJobs at
	// their schedule times.
	Clock clock.WithDelayedExecution
}

// Controller runs CronJobs.
type Controller struct {
	*controller.Base
	cjLister  batchlisters.CronJobLister
	jobLister batchlisters.JobLister
	opts      Options

	// timers wake each CronJob at its next schedule time, on Clock.
	mu     sync.Mutex
	timers map[string]clock.Timer
}

// New builds the controller on shared informers (the caller starts them).
func New(kube kubernetes.Interface, jobInformer batchinformers.JobInformer, cjInformer batchinformers.CronJobInformer, opts Options) (*Controller, error) {
	if opts.Workers == 0 {
		opts.Workers = 5
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	base := controller.NewBase(kube, "cronjob", "cronjob-controller", opts.Workers, opts.Logger)
	base.WaitFor(jobInformer.Informer().HasSynced, cjInformer.Informer().HasSynced)
	c := &Controller{
		Base:      base,
		cjLister:  cjInformer.Lister(),
		jobLister: jobInformer.Lister(),
		opts:      opts,
		timers:    map[string]clock.Timer{},
	}
	if _, err := jobInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.jobChanged,
		UpdateFunc: c.updateJob,
		DeleteFunc: c.jobChanged,
	}); err != nil {
		return nil, err
	}
	if _, err := cjInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    c.Enqueue,
		UpdateFunc: c.updateCronJob,
		DeleteFunc: c.Enqueue,
	}); err != nil {
		return nil, err
	}
	return c, nil
}

// Run waits for the caches, then syncs CronJobs until ctx ends; each is
// woken again at its next schedule time.
func (c *Controller) Run(ctx context.Context) error {
	defer c.stopTimers()
	return c.Base.Run(ctx, func(ctx context.Context, key string) error {
		after, err := c.sync(ctx, key)
		if err == nil && after != nil {
			c.wakeAfter(key, *after)
		}
		return err
	})
}

// wakeAfter queues key once d passed on the controller's clock.
func (c *Controller) wakeAfter(key string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.timers[key]; ok {
		t.Stop()
	}
	c.timers[key] = c.opts.Clock.AfterFunc(d, func() {
		c.mu.Lock()
		delete(c.timers, key)
		c.mu.Unlock()
		c.Queue.Add(key)
	})
}

func (c *Controller) stopTimers() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for k, t := range c.timers {
		t.Stop()
		delete(c.timers, k)
	}
}

// updateCronJob: a new schedule or time zone moves the next wake-up;
// anything else syncs now.
func (c *Controller) updateCronJob(old, cur any) {
	o, cj := old.(*batchv1.CronJob), cur.(*batchv1.CronJob)
	if o.Spec.Schedule != cj.Spec.Schedule || !ptr.Equal(o.Spec.TimeZone, cj.Spec.TimeZone) {
		if sched, err := parseSchedule(cj); err == nil {
			c.wakeAfter(controller.Key(cj), untilNext(cj, c.opts.Clock.Now(), sched))
			return
		}
	}
	c.Enqueue(cj)
}

func (c *Controller) jobChanged(obj any) {
	j, ok := controller.Unwrap[*batchv1.Job](obj)
	if !ok {
		return
	}
	if cj, ok := controller.Resolve(metav1.GetControllerOfNoCopy(j), kind.Kind, c.cjLister.CronJobs(j.Namespace).Get); ok {
		c.Enqueue(cj)
	}
}

func (c *Controller) updateJob(old, cur any) {
	o, j := old.(*batchv1.Job), cur.(*batchv1.Job)
	if o.ResourceVersion == j.ResourceVersion {
		return
	}
	if controller.RefChanged(metav1.GetControllerOfNoCopy(o), metav1.GetControllerOfNoCopy(j)) {
		c.jobChanged(o)
	}
	c.jobChanged(j)
}

// sync runs one CronJob: history cleanup, active list, and the Job of
// the most recent unmet schedule time. It returns when to look again.
func (c *Controller) sync(ctx context.Context, key string) (*time.Duration, error) {
	shared, ok, err := controller.Get(c.Base, key, func(ns, name string) (*batchv1.CronJob, error) { return c.cjLister.CronJobs(ns).Get(name) })
	if !ok {
		return nil, err
	}
	ns := shared.Namespace
	all, err := c.jobLister.Jobs(ns).List(labels.Everything())
	if err != nil {
		return nil, err
	}
	var jobs []*batchv1.Job
	for _, j := range all {
		if ref := metav1.GetControllerOfNoCopy(j); ref != nil && ref.Kind == kind.Kind && ref.Name == shared.Name {
			jobs = append(jobs, j)
		}
	}
	cj := shared.DeepCopy()
	cleaned := c.cleanupFinished(ctx, cj, jobs)
	after, updated, syncErr := c.syncCronJob(ctx, cj, jobs)
	if cleaned || updated {
		if _, err := c.Kube.BatchV1().CronJobs(ns).UpdateStatus(ctx, cj, metav1.UpdateOptions{}); err != nil {
			return nil, err
		}
	}
	if after != nil {
		return after, nil
	}
	return nil, syncErr
}

func finishedAs(j *batchv1.Job) (batchv1.JobConditionType, bool) {
	for _, c := range j.Status.Conditions {
		if (c.Type == batchv1.JobComplete || c.Type == batchv1.JobFailed) && c.Status == corev1.ConditionTrue {
			return c.Type, true
		}
	}
	return "", false
}

func isActive(cj *batchv1.CronJob, uid types.UID) bool {
	for _, r := range cj.Status.Active {
		if r.UID == uid {
			return true
		}
	}
	return false
}

func removeActive(cj *batchv1.CronJob, uid types.UID) {
	var out []corev1.ObjectReference
	for _, r := range cj.Status.Active {
		if r.UID != uid {
			out = append(out, r)
		}
	}
	cj.Status.Active = out
}

// syncCronJob updates cj's status from its Jobs and starts the Job of the
// most recent unmet schedule time if the policies allow. It reports when
// to look again and whether the status changed.
func (c *Controller) syncCronJob(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job) (*time.Duration, bool, error) {
	now := c.opts.Clock.Now()
	updated := false
	children := map[types.UID]bool{}
	for _, j := range jobs {
		children[j.UID] = true
		state, done := finishedAs(j)
		active := isActive(cj, j.UID)
		switch {
		case !active && !done:
			// Created but not recorded (a crash, a stale cache), or made by
			// someone else: look at the stored CronJob before warning.
			fresh, err := c.Kube.BatchV1().CronJobs(cj.Namespace).Get(ctx, cj.Name, metav1.GetOptions{})
			if err != nil {
				return nil, updated, err
			}
			if isActive(fresh, j.UID) {
				*cj = *fresh
				continue
			}
			c.Recorder.Eventf(cj, corev1.EventTypeWarning, "UnexpectedJob", "Saw a job that the controller did not create or forgot: %s", j.Name)
		case active && done:
			removeActive(cj, j.UID)
			c.Recorder.Eventf(cj, corev1.EventTypeNormal, "SawCompletedJob", "Saw completed job: %s, condition: %v", j.Name, state)
			updated = true
		}
		if state == batchv1.JobComplete && j.Status.CompletionTime != nil &&
			(cj.Status.LastSuccessfulTime == nil || j.Status.CompletionTime.After(cj.Status.LastSuccessfulTime.Time)) {
			cj.Status.LastSuccessfulTime = j.Status.CompletionTime
			updated = true
		}
	}
	// Active Jobs that are gone (asked of the server: the cache may lag).
	for _, r := range cj.Status.Active {
		if children[r.UID] {
			continue
		}
		_, err := c.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			c.Recorder.Eventf(cj, corev1.EventTypeNormal, "MissingJob", "Active job went missing: %v", r.Name)
			removeActive(cj, r.UID)
			updated = true
		case err != nil:
			return nil, updated, err
		}
	}
	if cj.DeletionTimestamp != nil {
		return nil, updated, nil
	}
	if tz := cj.Spec.TimeZone; tz != nil {
		if _, err := time.LoadLocation(*tz); err != nil {
			c.Recorder.Eventf(cj, corev1.EventTypeWarning, "UnknownTimeZone", "invalid timeZone: %q: %s", *tz, err)
			return nil, updated, nil
		}
	}
	if ptr.Deref(cj.Spec.Suspend, false) {
		return nil, updated, nil
	}
	sched, err := parseSchedule(cj)
	if err != nil {
		c.Recorder.Eventf(cj, corev1.EventTypeWarning, "UnparseableSchedule", "unparseable schedule: %q : %s", cj.Spec.Schedule, err)
		return nil, updated, nil
	}
	_, scheduled, missed, err := mostRecent(cj, now, sched, true)
	if err != nil {
		c.Recorder.Eventf(cj, corev1.EventTypeWarning, "InvalidSchedule", "invalid schedule: %s : %s", cj.Spec.Schedule, err)
		return nil, updated, nil
	}
	next := untilNext(cj, now, sched)
	if scheduled == nil {
		return &next, updated, nil
	}
	if missed > 100 {
		c.Recorder.Eventf(cj, corev1.EventTypeWarning, "TooManyMissedTimes", "too many missed start times: %d. Set or decrease .spec.startingDeadlineSeconds or check clock skew", missed)
	}
	if d := cj.Spec.StartingDeadlineSeconds; d != nil && scheduled.Add(time.Duration(*d)*time.Second).Before(now) {
		c.Recorder.Eventf(cj, corev1.EventTypeWarning, "MissSchedule", "Missed scheduled time to start a job: %s", scheduled.UTC().Format(time.RFC1123Z))
		return &next, updated, nil
	}
	name := jobName(cj, *scheduled)
	for _, r := range cj.Status.Active {
		if r.Name == name {
			return &next, updated, nil
		}
	}
	if cj.Status.LastScheduleTime != nil && cj.Status.LastScheduleTime.Time.Equal(*scheduled) {
		return &next, updated, nil
	}
	switch cj.Spec.ConcurrencyPolicy {
	case batchv1.ForbidConcurrent:
		if len(cj.Status.Active) > 0 {
			c.Recorder.Eventf(cj, corev1.EventTypeNormal, "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid")
			return &next, updated, nil
		}
	case batchv1.ReplaceConcurrent:
		for _, r := range cj.Status.Active {
			j, err := c.Kube.BatchV1().Jobs(r.Namespace).Get(ctx, r.Name, metav1.GetOptions{})
			if err != nil {
				c.Recorder.Eventf(cj, corev1.EventTypeWarning, "FailedGet", "Get job: %v", err)
				return nil, updated, err
			}
			if !c.deleteJob(ctx, cj, j) {
				return nil, updated, fmt.Errorf("could not replace job %s/%s", j.Namespace, j.Name)
			}
			updated = true
		}
	}

	req, err := newJob(cj, *scheduled)
	if err != nil {
		return nil, updated, err
	}
	created, err := c.Kube.BatchV1().Jobs(cj.Namespace).Create(ctx, req, metav1.CreateOptions{})
	switch {
	case apierrors.HasStatusCause(err, corev1.NamespaceTerminatingCause):
		return nil, updated, err
	case apierrors.IsAlreadyExists(err):
		// Created before the status said so (a crash), or by someone else.
		existing, err := c.Kube.BatchV1().Jobs(cj.Namespace).Get(ctx, req.Name, metav1.GetOptions{})
		if err != nil {
			return nil, updated, err
		}
		if !metav1.IsControlledBy(existing, cj) || isActive(cj, existing.UID) {
			return nil, updated, nil
		}
		created = existing
	case err != nil:
		c.Recorder.Eventf(cj, corev1.EventTypeWarning, "FailedCreate", "Error creating job: %v", err)
		return nil, updated, err
	default:
		c.Recorder.Eventf(cj, corev1.EventTypeNormal, "SuccessfulCreate", "Created job %v", created.Name)
	}
	ref, err := reference.GetReference(scheme.Scheme, created)
	if err != nil {
		return nil, updated, fmt.Errorf("reference to job %s: %w", created.Name, err)
	}
	cj.Status.Active = append(cj.Status.Active, *ref)
	cj.Status.LastScheduleTime = &metav1.Time{Time: *scheduled}
	next = untilNext(cj, now, sched)
	return &next, true, nil
}

// newJob is the Job of cj for the schedule time t.
func newJob(cj *batchv1.CronJob, t time.Time) (*batchv1.Job, error) {
	loc, err := time.LoadLocation(ptr.Deref(cj.Spec.TimeZone, ""))
	if err != nil {
		return nil, err
	}
	lbls, ann := map[string]string{}, map[string]string{}
	for k, v := range cj.Spec.JobTemplate.Labels {
		lbls[k] = v
	}
	for k, v := range cj.Spec.JobTemplate.Annotations {
		ann[k] = v
	}
	ann[batchv1.CronJobScheduledTimestampAnnotation] = t.In(loc).Format(time.RFC3339)
	j := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{
			Name: jobName(cj, t), Labels: lbls, Annotations: ann,
			OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(cj, kind)},
		},
	}
	cj.Spec.JobTemplate.Spec.DeepCopyInto(&j.Spec)
	return j, nil
}

// cleanupFinished deletes the oldest finished Jobs beyond the history
// limits, reporting whether the status changed.
func (c *Controller) cleanupFinished(ctx context.Context, cj *batchv1.CronJob, jobs []*batchv1.Job) bool {
	var ok, failed []*batchv1.Job
	for _, j := range jobs {
		switch state, _ := finishedAs(j); state {
		case batchv1.JobComplete:
			ok = append(ok, j)
		case batchv1.JobFailed:
			failed = append(failed, j)
		}
	}
	updated := false
	for _, h := range []struct {
		jobs  []*batchv1.Job
		limit *int32
	}{{ok, cj.Spec.SuccessfulJobsHistoryLimit}, {failed, cj.Spec.FailedJobsHistoryLimit}} {
		if h.limit == nil || len(h.jobs) <= int(*h.limit) {
			continue
		}
		sort.Slice(h.jobs, func(i, j int) bool { return startedBefore(h.jobs[i], h.jobs[j]) })
		for _, j := range h.jobs[:len(h.jobs)-int(*h.limit)] {
			if c.deleteJob(ctx, cj, j) {
				updated = true
			}
		}
	}
	return updated
}

// startedBefore orders Jobs by start time (not started last), then name.
func startedBefore(a, b *batchv1.Job) bool {
	sa, sb := a.Status.StartTime, b.Status.StartTime
	switch {
	case sa == nil && sb != nil:
		return false
	case sa != nil && sb == nil:
		return true
	case sa.Equal(sb):
		return a.Name < b.Name
	}
	return sa.Before(sb)
}

// deleteJob deletes a Job of cj (its pods in the background) and drops it
// from the active list.
func (c *Controller) deleteJob(ctx context.Context, cj *batchv1.CronJob, j *batchv1.Job) bool {
	bg := metav1.DeletePropagationBackground
	if err := c.Kube.BatchV1().Jobs(j.Namespace).Delete(ctx, j.Name, metav1.DeleteOptions{PropagationPolicy: &bg}); err != nil && !apierrors.IsNotFound(err) {
		c.Recorder.Eventf(cj, corev1.EventTypeWarning, "FailedDelete", "Deleted job: %v", err)
		return false
	}
	removeActive(cj, j.UID)
	c.Recorder.Eventf(cj, corev1.EventTypeNormal, "SuccessfulDelete", "Deleted job %v", j.Name)
	return true
}
