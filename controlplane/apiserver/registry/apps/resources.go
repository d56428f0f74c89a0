// Package apps is the registry of the apps/v1 API group.
package apps

import "github.com/skep-dev/skep/controlplane/apiserver/registry"

// Resources returns the rows of the apps group.
func Resources() []*registry.Resource {
	return []*registry.Resource{deploymentResource(), replicaSetResource(), daemonSetResource(), controllerRevisionResource()}
}
