// Package batch is the registry of the batch/v1 API group: Jobs and
// CronJobs, with Kubernetes' defaulting (including the selector and labels
// a Job gets unless it asks for a manual selector) and the validation the
// Job and CronJob controllers rely on.
package batch

import (
	// CronJobs name time zones (spec.timeZone); the server must know them
	// even on a machine without /usr/share/zoneinfo, as Kubernetes does.
	_ "time/tzdata"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Resources returns the rows of the batch group.
func Resources() []*registry.Resource {
	return []*registry.Resource{jobResource(), cronJobResource()}
}
