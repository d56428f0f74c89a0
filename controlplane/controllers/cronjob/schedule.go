package cronjob

import (
	"fmt"
	"strings"
	"time"

	"github.com/robfig/cron/v3"
	batchv1 "k8s.io/api/batch/v1"
)

// nextDelta pads a requeue for the next schedule, against clock skew.
const nextDelta = 100 * time.Millisecond

// parseSchedule parses the CronJob's schedule in its time zone (the
// controller's local one when unset), as upstream does: robfig/cron's
// standard parser with a TZ= prefix.
func parseSchedule(cj *batchv1.CronJob) (cron.Schedule, error) {
	s := cj.Spec.Schedule
	if cj.Spec.TimeZone != nil && !strings.Contains(s, "TZ") {
		s = fmt.Sprintf("TZ=%s %s", *cj.Spec.TimeZone, s)
	}
	return cron.ParseStandard(s)
}

// mostRecent returns the time from which schedules are missed (the last
// schedule, or the creation), the most recent schedule time not after now
// (nil if none), and about how many were missed. With deadline, schedule
// times older than startingDeadlineSeconds do not count. A schedule that
// parses but never fires twice a second apart (Feb 31) is an error.
func mostRecent(cj *batchv1.CronJob, now time.Time, sched cron.Schedule, deadline bool) (time.Time, *time.Time, int64, error) {
	earliest := cj.CreationTimestamp.Time
	if cj.Status.LastScheduleTime != nil {
		earliest = cj.Status.LastScheduleTime.Time
	}
	if deadline && cj.Spec.StartingDeadlineSeconds != nil {
		if d := now.Add(-time.Duration(*cj.Spec.StartingDeadlineSeconds) * time.Second); d.After(earliest) {
			earliest = d
		}
	}
	t1 := sched.Next(earliest)
	t2 := sched.Next(t1)
	switch {
	case now.Before(t1):
		return earliest, nil, 0, nil
	case now.Before(t2):
		return earliest, &t1, 1, nil
	}
	between := int64(t2.Sub(t1).Round(time.Second).Seconds())
	if between < 1 {
		return earliest, nil, 0, fmt.Errorf("time difference between two schedules is less than 1 second")
	}
	missed := int64(now.Sub(t1).Seconds())/between + 1
	// Jump close to now, then let the schedule find the exact last time
	// (schedules need not be evenly spaced).
	var last time.Time
	for t := sched.Next(t1.Add(time.Duration((missed-2)*between) * time.Second)); !t.After(now); t = sched.Next(t) {
		last = t
	}
	if last.IsZero() {
		return earliest, nil, missed, nil
	}
	return earliest, &last, missed, nil
}

// untilNext is how long until the schedule after the most recent one (or
// after now when the schedule is broken).
func untilNext(cj *batchv1.CronJob, now time.Time, sched cron.Schedule) time.Duration {
	earliest, last, _, err := mostRecent(cj, now, sched, false)
	switch {
	case err != nil:
		last = &now
	case last == nil:
		last = &earliest
	}
	return sched.Next(*last).Add(nextDelta).Sub(now)
}

// jobName is the Job of a schedule time: <cronjob>-<minutes since the
// epoch>, so that creating it twice fails instead of running it twice.
func jobName(cj *batchv1.CronJob, t time.Time) string {
	return fmt.Sprintf("%s-%d", cj.Name, t.Unix()/60)
}
