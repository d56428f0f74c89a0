// Package registry describes the resources the API server serves: one
// Resource row per kind, each carrying the Strategy that says what is
// special about it. The REST core (package apiserver) is generic: it knows
// HTTP, encodings, the store and the order of the steps below, and nothing
// about Pods, Services or Deployments. What a kind adds lives in its own
// file in the package of its API group (registry/core, registry/apps, …), as
// in Kubernetes' pkg/registry/<group>/<resource>/strategy.go, but smaller.
//
// # A write, step by step
//
//	create                          update (PUT, PATCH, status, finalize)     delete
//	──────                          ─────────────────────────────────────     ──────
//	decode body                     read current object                       read current object
//	admission (namespace lifecycle) decode body / apply patch onto it         Strategy.BeginDelete
//	system metadata (uid, time …)   carry system metadata over                  (refuse, grace period,
//	Strategy.PrepareForCreate       UpdateStrategy.PrepareForUpdate              mark the object)
//	Strategy.Default                Strategy.Default                          finalizers / grace pending?
//	validate metadata + Validate    validate metadata + ValidateUpdate          → store the mark (202)
//	Strategy.Reserve(obj, nil)      Strategy.Reserve(obj, old)                 else store.Delete
//	store.Create                    store.Update (compare-and-swap, retried)   Strategy.Reserve(nil, old)
//	Commit, or Rollback on failure  Commit, or Rollback on failure                .Commit() on success
//
// UpdateStrategy is the part a subresource may replace: the status
// subresource writes only status (StatusStrategy), a namespace's finalize
// only spec.finalizers. Subresources that are not a view of the whole
// object (scale, binding, and later log, exec, token) register a Handler
// with the row; it gets the resource's Objects to read and update through
// the same generic path.
//
// A Reservation is how a write takes shared state that is not in the
// object's own key — a Service's cluster IP and node ports — and gives it
// back when the write does not land: the generic path calls Rollback on
// every failure (validation, conflict, store error, dry run, no-op) and
// Commit once the write is durable, so a strategy never undoes by hand.
package registry

// # Validation, against Kubernetes'
//
// Every kind gets apimachinery's ObjectMeta validation (name or
// generateName by the row's NameFn, labels, annotations and their size,
// owner references, finalizers; ObjectMeta update rules), and errors are
// answered as Kubernetes answers them (422 Invalid, causes by field path),
// at most a hundred of them (Invalid). Beyond metadata, each kind validates
// with apimachinery's helpers (IsDNS1123Label, IsValidPortNum,
// IsValidPortName, IsValidIP, IsConfigMapKey, ValidateLabels, …), not
// hand-written rules. What is implemented, and what is not yet:
//
//	Namespace      DNS-1123 label names; finalize writes only spec.finalizers.
//	               Not yet: spec.finalizers values.
//	Pod            containers (required; names unique DNS labels; image;
//	               container ports), restartPolicy; on update only images,
//	               activeDeadlineSeconds, tolerations and the grace period may
//	               change; bindings set spec.nodeName once. Not yet: volumes,
//	               env and envFrom, resources (requests <= limits), probes,
//	               securityContext, affinity, tolerations syntax, host port
//	               conflicts, dnsConfig, ephemeral containers.
//	Service        type; ports (required unless headless; names DNS labels,
//	               unique, required when several; port and targetPort numbers
//	               or IANA names; protocol; no duplicate port/protocol or
//	               nodePort/protocol pair; nodePort only for NodePort and
//	               LoadBalancer); clusterIP an IP of the range (not its network
//	               or broadcast address; immutable); externalIPs valid and not
//	               special; selector labels; sessionAffinity and its timeout;
//	               traffic policies; externalName a DNS name. Not yet:
//	               dual-stack (ipFamilies, ipFamilyPolicy), loadBalancer
//	               source ranges, healthCheckNodePort, appProtocol, type
//	               transitions beyond the cluster IP.
//	ConfigMap      keys (IsConfigMapKey), a key in data and binaryData, 1 MiB
//	               in all, immutable data and immutable itself.
//	Secret         keys, 1 MiB, what each well-known type needs (tls,
//	               dockercfg and dockerconfigjson as JSON, basic-auth,
//	               ssh-auth, service-account-token's annotation), immutable
//	               type, data and immutable.
//	Deployment,    replicas >= 0; selector required, valid, non-empty,
//	ReplicaSet     matching the template's labels, immutable; the template's
//	               pod spec as a pod's; restartPolicy Always. Not yet: strategy
//	               fields (maxSurge and maxUnavailable not both 0),
//	               minReadySeconds, revisionHistoryLimit and
//	               progressDeadlineSeconds ranges.
//	DaemonSet      the same selector and template rules (restartPolicy
//	               Always, no activeDeadlineSeconds); minReadySeconds and
//	               revisionHistoryLimit >= 0; updateStrategy type, maxSurge and
//	               maxUnavailable as counts or percentages <= 100%, not both
//	               0; the template generation annotation counts template
//	               changes.
//	ControllerRevision  data required and immutable; revision >= 0.
//	Job            the generated selector and labels (or a manual selector
//	               matching the template); restartPolicy OnFailure or Never;
//	               parallelism, completions, backoffLimit,
//	               activeDeadlineSeconds, ttlSecondsAfterFinished >= 0;
//	               completionMode (Indexed needs completions, both
//	               <= 100,000); podReplacementPolicy; on update the selector,
//	               template (but a suspended, never started Job's scheduling
//	               directives), completionMode and completions (but an
//	               elastic Indexed Job's) are immutable. Refused, as the Job
//	               controller does not implement them: podFailurePolicy,
//	               successPolicy, backoffLimitPerIndex, maxFailedIndexes.
//	CronJob        name <= 52 characters; schedule parsed as the controller
//	               will (robfig/cron), no TZ= in it; timeZone an IANA zone;
//	               concurrencyPolicy; startingDeadlineSeconds and history
//	               limits >= 0; the job template as a Job's spec, without a
//	               selector.
//	EndpointSlice  addressType. Not yet: addresses per type, the 1,000
//	               endpoint and 100 port limits, port names.
//	Endpoints,     metadata only.
//	Event, Lease,
//	Ingress
