package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	pathvalidation "k8s.io/apimachinery/pkg/api/validation/path"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/store"
)

// requestTimeout bounds every request but watches.
const requestTimeout = 60 * time.Second

// requestInfo is what the URL of a resource request names.
type requestInfo struct {
	res       *resource
	namespace string
	name      string
	sub       string
	watch     bool // the legacy /watch/ prefix
	verb      string
}

// parseResourcePath resolves /api/v1/... and /apis/<g>/<v>/... paths.
func (s *Server) parseResourcePath(path string) (*requestInfo, error) {
	segs := strings.Split(strings.Trim(path, "/"), "/")
	var gv schema.GroupVersion
	switch {
	case len(segs) >= 3 && segs[0] == "api":
		gv = schema.GroupVersion{Version: segs[1]}
		segs = segs[2:]
	case len(segs) >= 4 && segs[0] == "apis":
		gv = schema.GroupVersion{Group: segs[1], Version: segs[2]}
		segs = segs[3:]
	default:
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	ri := &requestInfo{}
	if segs[0] == "watch" {
		ri.watch = true
		segs = segs[1:]
	}
	if len(segs) >= 3 && segs[0] == "namespaces" && segs[2] != "status" && segs[2] != "finalize" {
		ri.namespace = segs[1]
		segs = segs[2:]
	}
	if len(segs) == 0 || len(segs) > 3 {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	res := s.reg.byGVR[gv.WithResource(segs[0])]
	if res == nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	ri.res = res
	if len(segs) > 1 {
		ri.name = segs[1]
	}
	if len(segs) > 2 {
		ri.sub = segs[2]
		if !res.hasSub(ri.sub) {
			return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
		}
	}
	if res.namespaced && ri.name != "" && ri.namespace == "" {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	if !res.namespaced && ri.namespace != "" {
		return nil, apierrors.NewNotFound(schema.GroupResource{}, "")
	}
	if ri.name != "" {
		if msgs := pathvalidation.IsValidPathSegmentName(ri.name); len(msgs) > 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid resource name %q: %s", ri.name, strings.Join(msgs, "; ")))
		}
	}
	return ri, nil
}

// verbFor maps the HTTP method and URL shape to the Kubernetes verb.
func verbFor(r *http.Request, ri *requestInfo) (string, error) {
	q := r.URL.Query()
	isWatch := ri.watch || q.Get("watch") == "true" || q.Get("watch") == "1"
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		switch {
		case ri.name == "" && isWatch:
			return "watch", nil
		case ri.name == "":
			return "list", nil
		case isWatch:
			return "watch", nil
		}
		return "get", nil
	case http.MethodPost:
		if ri.name == "" {
			return "create", nil
		}
		if ri.sub == "binding" {
			return "create", nil
		}
	case http.MethodPut:
		if ri.name != "" {
			return "update", nil
		}
	case http.MethodPatch:
		if ri.name != "" {
			return "patch", nil
		}
	case http.MethodDelete:
		if ri.name == "" {
			return "deletecollection", nil
		}
		return "delete", nil
	}
	return "", apierrors.NewMethodNotSupported(ri.res.groupResource(), r.Method)
}

// serveResource is the one generic REST handler.
func (s *Server) serveResource(w http.ResponseWriter, r *http.Request, ri *requestInfo) {
	ctx := r.Context()
	if ri.verb == "watch" {
		// A watch reads no body: lift the read deadline, or an HTTP/1.1
		// connection's background read would time out and end the stream.
		_ = http.NewResponseController(w).SetReadDeadline(time.Time{})
	} else {
		// Like kube-apiserver's request timeout: no request but a watch
		// holds its connection for more than a minute.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, requestTimeout)
		defer cancel()
	}
	var err error
	switch ri.verb {
	case "get":
		err = s.handleGet(ctx, w, r, ri)
	case "list":
		err = s.handleList(ctx, w, r, ri)
	case "watch":
		err = s.handleWatch(ctx, w, r, ri)
	case "create":
		if ri.sub == "binding" {
			err = s.handleBinding(ctx, w, r, ri)
		} else {
			err = s.handleCreate(ctx, w, r, ri)
		}
	case "update":
		err = s.handleUpdate(ctx, w, r, ri)
	case "patch":
		err = s.handlePatch(ctx, w, r, ri)
	case "delete":
		err = s.handleDelete(ctx, w, r, ri)
	case "deletecollection":
		err = s.handleDeleteCollection(ctx, w, r, ri)
	}
	if err != nil {
		writeError(w, err)
	}
}

// storeErr translates store errors to API errors.
func storeErr(err error, res *resource, name string) error {
	gr := res.groupResource()
	switch {
	case errors.Is(err, store.ErrNotFound):
		return apierrors.NewNotFound(gr, name)
	case errors.Is(err, store.ErrExists):
		return apierrors.NewAlreadyExists(gr, name)
	case errors.Is(err, store.ErrConflict):
		return conflictErr(res, name)
	case errors.Is(err, store.ErrExpired):
		return apierrors.NewResourceExpired("too old resource version")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return apierrors.NewTimeoutError("request did not complete in time", 1)
	case errors.Is(err, store.ErrClosed):
		return apierrors.NewServiceUnavailable("the store is shutting down")
	}
	return apierrors.NewInternalError(err)
}

func conflictErr(res *resource, name string) error {
	return apierrors.NewConflict(res.groupResource(), name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
}

// decodeKV turns stored bytes into a typed object carrying its resourceVersion.
func (s *Server) decodeKV(res *resource, kv store.KV) (runtime.Object, error) {
	obj := res.newObj()
	if err := json.Unmarshal(kv.Value, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	obj.GetObjectKind().SetGroupVersionKind(res.gvk)
	mustMeta(obj).SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
	return obj, nil
}

// encodeForStore serializes an object without its resourceVersion (the
// store's revision is the resourceVersion).
func encodeForStore(res *resource, obj runtime.Object) ([]byte, error) {
	m := mustMeta(obj)
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	obj.GetObjectKind().SetGroupVersionKind(res.gvk)
	data, err := json.Marshal(obj)
	m.SetResourceVersion(rv)
	return data, err
}

func (s *Server) getObject(ctx context.Context, res *resource, ns, name string) (runtime.Object, store.KV, error) {
	kv, err := s.store.Get(ctx, res.key(ns, name))
	if err != nil {
		return nil, kv, storeErr(err, res, name)
	}
	obj, err := s.decodeKV(res, kv)
	return obj, kv, err
}

// respond writes one object in the negotiated format.
func (s *Server) respond(w http.ResponseWriter, r *http.Request, code int, res *resource, obj runtime.Object) error {
	of, ok := negotiateObject(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	if of.protobuf && writeProtobuf(w, code, obj) {
		return nil
	}
	var out interface{} = obj
	switch {
	case of.table && res != nil && mustMeta(obj).GetName() != "" && obj.GetObjectKind().GroupVersionKind() == res.gvk:
		t, err := s.toTable(r, res, []runtime.Object{obj}, metav1.ListMeta{}, true)
		if err != nil {
			return err
		}
		out = t
	case of.partial && res != nil && obj.GetObjectKind().GroupVersionKind() == res.gvk:
		out = partialMeta(obj)
	}
	js, err := encodeJSON(out)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	writeRaw(w, code, js, of.yaml)
	return nil
}

func partialMeta(obj runtime.Object) *metav1.PartialObjectMetadata {
	m := mustMeta(obj)
	om := metav1.ObjectMeta{}
	// Typed objects reach their embedded ObjectMeta through
	// GetObjectMeta, so the whole metadata (managedFields too) is
	// answered, as the real API server and the stored-bytes path do.
	if a, ok := obj.(metav1.ObjectMetaAccessor); ok {
		m = a.GetObjectMeta()
	}
	if o, ok := m.(*metav1.ObjectMeta); ok {
		om = *o
	} else {
		om.Name, om.Namespace, om.UID, om.ResourceVersion = m.GetName(), m.GetNamespace(), m.GetUID(), m.GetResourceVersion()
		om.Labels, om.Annotations, om.CreationTimestamp = m.GetLabels(), m.GetAnnotations(), m.GetCreationTimestamp()
		om.OwnerReferences, om.Finalizers, om.DeletionTimestamp = m.GetOwnerReferences(), m.GetFinalizers(), m.GetDeletionTimestamp()
		om.Generation, om.GenerateName = m.GetGeneration(), m.GetGenerateName()
	}
	return &metav1.PartialObjectMetadata{TypeMeta: metav1.TypeMeta{Kind: "PartialObjectMetadata", APIVersion: "meta.k8s.io/v1"}, ObjectMeta: om}
}

func (s *Server) handleGet(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	if ri.sub == "log" {
		return apierrors.NewBadRequest(fmt.Sprintf("pods/log is not served by skep yet: read the logs of pod %q on its node", ri.name))
	}
	obj, _, err := s.getObject(ctx, res, ri.namespace, ri.name)
	if err != nil {
		return err
	}
	if ri.sub == "scale" {
		return s.respond(w, r, http.StatusOK, nil, scaleOf(obj))
	}
	return s.respond(w, r, http.StatusOK, res, obj)
}

// decodeBodyObject reads and decodes a request body into the resource's
// type, checking apiVersion and kind against the URL.
func (s *Server) decodeBodyObject(r *http.Request, res *resource, gvk schema.GroupVersionKind, newObj func() runtime.Object) (runtime.Object, []string, error) {
	fv, err := parseFieldValidation(r)
	if err != nil {
		return nil, nil, err
	}
	data, err := readBody(r)
	if err != nil {
		return nil, nil, err
	}
	if isProtobuf(r.Header.Get("Content-Type")) {
		// Typed clientsets send protobuf: decoded straight into the type.
		into := newObj()
		obj, got, err := protobufSerializer.Decode(data, &gvk, into)
		if err != nil {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: %v", gvk.Kind, gvk.Version, gvk.Kind, err))
		}
		if got != nil && *got != gvk {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("the object of the request body (%s) does not match the %s of the URL", got, gvk))
		}
		if obj != into {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("the request body is not a %s", gvk.Kind))
		}
		obj.GetObjectKind().SetGroupVersionKind(gvk)
		return obj, nil, nil
	}
	js, strictErrs, err := bodyJSON(r, data)
	if err != nil {
		return nil, nil, err
	}
	// apiVersion and kind, when given, must match the URL.
	checkType := func(o runtime.Object) error {
		tm := o.GetObjectKind().GroupVersionKind()
		if tm.Kind != "" && tm.Kind != gvk.Kind {
			return apierrors.NewBadRequest(fmt.Sprintf("the kind %q of the request body does not match the kind %q of the URL", tm.Kind, gvk.Kind))
		}
		if av := tm.GroupVersion().String(); av != "" && av != gvk.GroupVersion().String() {
			return apierrors.NewBadRequest(fmt.Sprintf("the apiVersion %q of the request body does not match the apiVersion %q of the URL", av, gvk.GroupVersion().String()))
		}
		return nil
	}
	obj := newObj()
	warnings, err := decodeInto(js, obj, gvk.Kind, gvk.Version, fv, strictErrs, checkType)
	if err != nil {
		return nil, nil, err
	}
	obj.GetObjectKind().SetGroupVersionKind(gvk)
	return obj, warnings, nil
}

func isDryRun(r *http.Request) (bool, error) {
	for _, v := range r.URL.Query()["dryRun"] {
		if v != "All" {
			return false, apierrors.NewBadRequest(fmt.Sprintf("unsupported dryRun value %q: only All is supported", v))
		}
		return true, nil
	}
	return false, nil
}

// generateNameSuffix matches the real API server's 5 random characters.
func generateNameSuffix() string {
	const alphabet = "bcdfghjklmnpqrstvwxz2456789"
	b := make([]byte, 5)
	for i := range b {
		n, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[n.Int64()]
	}
	return string(b)
}

// nsState is what checkNamespace needs of a namespace at one revision.
type nsState struct {
	rev         int64
	terminating bool
}

// checkNamespace refuses namespaced writes into a missing or terminating namespace.
func (s *Server) checkNamespace(ctx context.Context, res *resource, ns, name string) error {
	if !res.namespaced {
		return nil
	}
	nsRes := s.reg.byGVR[corev1.SchemeGroupVersion.WithResource("namespaces")]
	kv, err := s.store.Get(ctx, nsRes.key("", ns))
	if err != nil {
		return storeErr(err, nsRes, ns)
	}
	// This runs on every create: remember each namespace's state at its
	// last revision rather than decoding it again.
	if c, ok := s.nsState.Load(ns); ok && c.(nsState).rev == kv.ModRevision {
		if c.(nsState).terminating {
			return apierrors.NewForbidden(res.groupResource(), name, fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
		}
		return nil
	}
	// Only the lifecycle fields are decoded.
	var n struct {
		Metadata struct {
			DeletionTimestamp *metav1.Time `json:"deletionTimestamp"`
		} `json:"metadata"`
		Status corev1.NamespaceStatus `json:"status"`
	}
	if err := json.Unmarshal(kv.Value, &n); err != nil {
		return apierrors.NewInternalError(fmt.Errorf("decode namespace %s: %w", ns, err))
	}
	terminating := n.Metadata.DeletionTimestamp != nil || n.Status.Phase == corev1.NamespaceTerminating
	s.nsState.Store(ns, nsState{rev: kv.ModRevision, terminating: terminating})
	if terminating {
		return apierrors.NewForbidden(res.groupResource(), name, fmt.Errorf("unable to create new content in namespace %s because it is being terminated", ns))
	}
	return nil
}

func (s *Server) handleCreate(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	obj, warnings, err := s.decodeBodyObject(r, res, res.gvk, res.newObj)
	if err != nil {
		return err
	}
	dryRun, err := isDryRun(r)
	if err != nil {
		return err
	}
	m := mustMeta(obj)
	if res.namespaced {
		if m.GetNamespace() == "" {
			m.SetNamespace(ri.namespace)
		} else if m.GetNamespace() != ri.namespace {
			return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
	} else {
		m.SetNamespace("")
	}
	if err := s.checkNamespace(ctx, res, ri.namespace, m.GetName()); err != nil {
		return err
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + generateNameSuffix())
	}
	m.SetUID(uuid.NewUUID())
	m.SetCreationTimestamp(metav1.Now())
	m.SetResourceVersion("")
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetSelfLink("")
	m.SetManagedFields(nil)
	if res.hasField("Spec") && res.gvk.Kind != "Namespace" && res.gvk.Kind != "Node" {
		m.SetGeneration(1)
		if res.hasSub("status") {
			// Status is written through the status subresource only.
			st := structField(obj, "Status")
			st.Set(structField(res.newObj(), "Status"))
		}
	}
	if res.onCreate != nil {
		res.onCreate(obj)
	}
	if res.defaults != nil {
		res.defaults(obj)
	}
	if err := s.validate(res, obj, nil); err != nil {
		return err
	}
	if err := s.allocate(res, obj, nil); err != nil {
		return err
	}
	if dryRun {
		s.release(res, obj, nil)
		addWarnings(w, warnings)
		return s.respond(w, r, http.StatusCreated, res, obj)
	}
	data, err := encodeForStore(res, obj)
	if err != nil {
		s.release(res, obj, nil)
		return apierrors.NewInternalError(err)
	}
	rev, err := s.store.Create(ctx, res.key(m.GetNamespace(), m.GetName()), data)
	if err != nil {
		s.release(res, obj, nil)
		if errors.Is(err, store.ErrExists) && m.GetGenerateName() != "" && m.GetName() != "" {
			return apierrors.NewGenerateNameConflict(res.groupResource(), m.GetName(), 1)
		}
		return storeErr(err, res, m.GetName())
	}
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	addWarnings(w, warnings)
	return s.respondStored(w, r, http.StatusCreated, res, obj, data, rev)
}

// respondStored answers a write with the object just stored: for plain
// JSON the stored bytes with the resourceVersion spliced in, saving an encode.
func (s *Server) respondStored(w http.ResponseWriter, r *http.Request, code int, res *resource, obj runtime.Object, data []byte, rev int64) error {
	if of, ok := negotiateObject(r.Header.Get("Accept")); ok && of == (outputFormat{}) {
		if js := withResourceVersion(data, rev); js != nil {
			writeRaw(w, code, js, false)
			return nil
		}
	}
	return s.respond(w, r, code, res, obj)
}

// validate runs metadata and resource validation; old is nil on create.
func (s *Server) validate(res *resource, obj, old runtime.Object) error {
	m := mustMeta(obj)
	errs := apivalidation.ValidateObjectMetaAccessor(m, res.namespaced, res.nameFn, field.NewPath("metadata"))
	if old != nil {
		errs = append(errs, apivalidation.ValidateObjectMetaAccessorUpdate(m, mustMeta(old), field.NewPath("metadata"))...)
	}
	if res.validate != nil {
		errs = append(errs, res.validate(obj, old)...)
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(res.gvk.GroupKind(), m.GetName(), errs)
	}
	return nil
}

// prepareUpdate carries over what a client may not change through this
// endpoint: system metadata always, status through the main resource, spec
// through the status subresource.
func prepareUpdate(res *resource, obj, old runtime.Object, sub string) {
	m, om := mustMeta(obj), mustMeta(old)
	m.SetUID(om.GetUID())
	m.SetCreationTimestamp(om.GetCreationTimestamp())
	m.SetDeletionTimestamp(om.GetDeletionTimestamp())
	m.SetDeletionGracePeriodSeconds(om.GetDeletionGracePeriodSeconds())
	m.SetGeneration(om.GetGeneration())
	m.SetSelfLink("")
	if len(m.GetManagedFields()) == 0 {
		m.SetManagedFields(om.GetManagedFields())
	}
	switch sub {
	case "":
		if res.hasSub("status") {
			copyField(obj, old, "Status")
		}
		if om.GetGeneration() > 0 && !equalSemantic(structField(obj, "Spec").Interface(), structField(old, "Spec").Interface()) {
			m.SetGeneration(om.GetGeneration() + 1)
		}
	case "status":
		copyField(obj, old, "Spec")
		m.SetOwnerReferences(om.GetOwnerReferences())
		m.SetFinalizers(om.GetFinalizers())
	case "finalize":
		fin := obj.(*corev1.Namespace).Spec.Finalizers
		n := old.DeepCopyObject().(*corev1.Namespace)
		n.Spec.Finalizers = fin
		*obj.(*corev1.Namespace) = *n
	}
}

// guaranteedUpdate reads the current object, lets fn produce the new one and
// writes it with compare-and-swap, retrying when another writer got in
// between. fn returns the resourceVersion the client expects (0: any).
func (s *Server) guaranteedUpdate(ctx context.Context, res *resource, ns, name, sub string, dryRun bool,
	fn func(cur runtime.Object) (runtime.Object, int64, error)) (runtime.Object, error) {
	key := res.key(ns, name)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, storeErr(err, res, name)
		}
		cur, kv, err := s.getObject(ctx, res, ns, name)
		if err != nil {
			return nil, err
		}
		obj, expect, err := fn(cur.DeepCopyObject())
		if err != nil {
			return nil, err
		}
		if expect != 0 && expect != kv.ModRevision {
			return nil, conflictErr(res, name)
		}
		m := mustMeta(obj)
		if m.GetName() == "" {
			m.SetName(name)
		}
		if m.GetName() != name {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", m.GetName(), name))
		}
		if res.namespaced {
			if m.GetNamespace() == "" {
				m.SetNamespace(ns)
			} else if m.GetNamespace() != ns {
				return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
			}
		} else {
			m.SetNamespace("")
		}
		prepareUpdate(res, obj, cur, sub)
		if res.defaults != nil {
			res.defaults(obj)
		}
		if err := s.validate(res, obj, cur); err != nil {
			return nil, err
		}
		m.SetResourceVersion(mustMeta(cur).GetResourceVersion())
		if err := s.allocate(res, obj, cur); err != nil {
			return nil, err
		}
		if equalSemantic(obj, cur) {
			s.release(res, obj, cur)
			return cur, nil // a no-op update writes nothing, as upstream
		}
		if dryRun {
			s.release(res, obj, cur)
			return obj, nil
		}
		if m.GetDeletionTimestamp() != nil && len(m.GetFinalizers()) == 0 && deletable(res, obj) {
			dkv, err := s.store.Delete(ctx, key, kv.ModRevision)
			if errors.Is(err, store.ErrConflict) && attempt < 100 {
				continue
			}
			if err != nil {
				return nil, storeErr(err, res, name)
			}
			s.release(res, nil, cur)
			m.SetResourceVersion(strconv.FormatInt(dkv.ModRevision, 10))
			return obj, nil
		}
		data, err := encodeForStore(res, obj)
		if err != nil {
			return nil, apierrors.NewInternalError(err)
		}
		rev, err := s.store.Update(ctx, key, data, kv.ModRevision)
		if errors.Is(err, store.ErrConflict) && attempt < 100 {
			s.release(res, obj, cur)
			continue
		}
		if err != nil {
			s.release(res, obj, cur)
			return nil, storeErr(err, res, name)
		}
		s.releaseOld(res, obj, cur)
		m.SetResourceVersion(strconv.FormatInt(rev, 10))
		return obj, nil
	}
}

// deletable says whether an object marked for deletion whose finalizers are
// gone may now be removed: namespaces also wait for spec.finalizers, and
// pods in their grace period for their node.
func deletable(res *resource, obj runtime.Object) bool {
	switch o := obj.(type) {
	case *corev1.Namespace:
		return len(o.Spec.Finalizers) == 0
	case *corev1.Pod:
		g := o.DeletionGracePeriodSeconds
		return g == nil || *g == 0
	}
	return true
}

func parseRV(rv string) (int64, error) {
	if rv == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(rv, 10, 64)
	if err != nil || n < 0 {
		return 0, apierrors.NewBadRequest(fmt.Sprintf("invalid resourceVersion %q", rv))
	}
	return n, nil
}

func (s *Server) handleUpdate(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	dryRun, err := isDryRun(r)
	if err != nil {
		return err
	}
	if ri.sub == "scale" {
		body, warnings, err := s.decodeBodyObject(r, res, autoscalingv1.SchemeGroupVersion.WithKind("Scale"), func() runtime.Object { return &autoscalingv1.Scale{} })
		if err != nil {
			return err
		}
		addWarnings(w, warnings)
		return s.updateScale(ctx, w, r, ri, body.(*autoscalingv1.Scale), dryRun)
	}
	body, warnings, err := s.decodeBodyObject(r, res, res.gvk, res.newObj)
	if err != nil {
		return err
	}
	// Like upstream, the body's name and namespace are checked against the
	// URL before storage, so a mismatch is 400 whether or not the object exists.
	if bm := mustMeta(body); bm.GetName() != "" && bm.GetName() != ri.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", bm.GetName(), ri.name))
	} else if res.namespaced && bm.GetNamespace() != "" && bm.GetNamespace() != ri.namespace {
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	expect, err := parseRV(mustMeta(body).GetResourceVersion())
	if err != nil {
		return err
	}
	obj, err := s.guaranteedUpdate(ctx, res, ri.namespace, ri.name, ri.sub, dryRun, func(runtime.Object) (runtime.Object, int64, error) {
		return body.DeepCopyObject(), expect, nil
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings)
	return s.respond(w, r, http.StatusOK, res, obj)
}

// scaleOf is the autoscaling/v1 Scale view of a deployment or replica set.
func scaleOf(obj runtime.Object) *autoscalingv1.Scale {
	m := mustMeta(obj)
	sc := &autoscalingv1.Scale{
		TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: m.GetName(), Namespace: m.GetNamespace(), UID: m.GetUID(),
			ResourceVersion: m.GetResourceVersion(), CreationTimestamp: m.GetCreationTimestamp()},
	}
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		sc.Spec.Replicas = *o.Spec.Replicas
		sc.Status.Replicas = o.Status.Replicas
		sel = o.Spec.Selector
	case *appsv1.ReplicaSet:
		sc.Spec.Replicas = *o.Spec.Replicas
		sc.Status.Replicas = o.Status.Replicas
		sel = o.Spec.Selector
	}
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
		sc.Status.Selector = s.String()
	}
	return sc
}

func setReplicas(obj runtime.Object, n int32) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		o.Spec.Replicas = &n
	case *appsv1.ReplicaSet:
		o.Spec.Replicas = &n
	}
}

func (s *Server) updateScale(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo, sc *autoscalingv1.Scale, dryRun bool) error {
	if sc.Spec.Replicas < 0 {
		return apierrors.NewInvalid(autoscalingv1.SchemeGroupVersion.WithKind("Scale").GroupKind(), ri.name,
			field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), sc.Spec.Replicas, "must be greater than or equal to 0")})
	}
	expect, err := parseRV(sc.ResourceVersion)
	if err != nil {
		return err
	}
	obj, err := s.guaranteedUpdate(ctx, ri.res, ri.namespace, ri.name, "", dryRun, func(cur runtime.Object) (runtime.Object, int64, error) {
		setReplicas(cur, sc.Spec.Replicas)
		return cur, expect, nil
	})
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusOK, nil, scaleOf(obj))
}

func (s *Server) handleBinding(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	body, _, err := s.decodeBodyObject(r, ri.res, corev1.SchemeGroupVersion.WithKind("Binding"), func() runtime.Object { return &corev1.Binding{} })
	if err != nil {
		return err
	}
	b := body.(*corev1.Binding)
	if b.Name != "" && b.Name != ri.name {
		return apierrors.NewBadRequest(fmt.Sprintf("the name of the binding (%s) does not match the pod (%s)", b.Name, ri.name))
	}
	if b.Target.Kind != "" && b.Target.Kind != "Node" {
		return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), ri.name,
			field.ErrorList{field.NotSupported(field.NewPath("target", "kind"), b.Target.Kind, []string{"Node", "<empty>"})})
	}
	if b.Target.Name == "" {
		return apierrors.NewInvalid(corev1.SchemeGroupVersion.WithKind("Binding").GroupKind(), ri.name,
			field.ErrorList{field.Required(field.NewPath("target", "name"), "")})
	}
	bindingGR := schema.GroupResource{Resource: "pods/binding"}
	_, err = s.guaranteedUpdate(ctx, ri.res, ri.namespace, ri.name, "binding", false, func(cur runtime.Object) (runtime.Object, int64, error) {
		p := cur.(*corev1.Pod)
		if p.DeletionTimestamp != nil {
			return nil, 0, apierrors.NewConflict(bindingGR, ri.name, errors.New("pod is being deleted, cannot be assigned to a host"))
		}
		if p.Spec.NodeName != "" {
			return nil, 0, apierrors.NewConflict(bindingGR, ri.name, fmt.Errorf("pod %s is already assigned to node %q", ri.name, p.Spec.NodeName))
		}
		if b.UID != "" && b.UID != p.UID {
			return nil, 0, apierrors.NewConflict(bindingGR, ri.name, fmt.Errorf("precondition failed: UID in precondition: %v, UID in object meta: %v", b.UID, p.UID))
		}
		for k, v := range b.Annotations {
			if p.Annotations == nil {
				p.Annotations = map[string]string{}
			}
			p.Annotations[k] = v
		}
		p.Spec.NodeName = b.Target.Name
		setPodCondition(p, corev1.PodCondition{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.Now()})
		return p, 0, nil
	})
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusCreated, nil, &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess, Code: http.StatusCreated})
}

func setPodCondition(p *corev1.Pod, c corev1.PodCondition) {
	for i := range p.Status.Conditions {
		if p.Status.Conditions[i].Type == c.Type {
			p.Status.Conditions[i] = c
			return
		}
	}
	p.Status.Conditions = append(p.Status.Conditions, c)
}

// deleteOptions reads DeleteOptions from the body (if any) and query.
func deleteOptions(r *http.Request) (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	data, err := readBody(r)
	if err != nil {
		return nil, err
	}
	if len(strings.TrimSpace(string(data))) > 0 {
		js, _, err := bodyJSON(r, data)
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(js, opts); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("decode DeleteOptions: %v", cleanJSONError(err)))
		}
	}
	q := r.URL.Query()
	if v := q.Get("gracePeriodSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid gracePeriodSeconds %q", v))
		}
		opts.GracePeriodSeconds = &n
	}
	if v := q.Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		opts.PropagationPolicy = &p
	}
	if v := q.Get("orphanDependents"); v != "" {
		b := v == "true"
		opts.OrphanDependents = &b
	}
	opts.DryRun = append(opts.DryRun, q["dryRun"]...)
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationBackground, metav1.DeletePropagationForeground, metav1.DeletePropagationOrphan:
		default:
			return nil, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "DeleteOptions"}, "",
				field.ErrorList{field.NotSupported(field.NewPath("propagationPolicy"), *opts.PropagationPolicy, []string{"Foreground", "Background", "Orphan", "nil"})})
		}
	}
	for _, d := range opts.DryRun {
		if d != "All" {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("unsupported dryRun value %q: only All is supported", d))
		}
	}
	return opts, nil
}

func (s *Server) handleDelete(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	if ri.sub != "" {
		return apierrors.NewMethodNotSupported(ri.res.groupResource(), "delete "+ri.sub)
	}
	opts, err := deleteOptions(r)
	if err != nil {
		return err
	}
	obj, code, err := s.deleteOne(ctx, ri.res, ri.namespace, ri.name, opts)
	if err != nil {
		return err
	}
	return s.respond(w, r, code, ri.res, obj)
}

// immortalNamespaces may not be deleted, as upstream.
var immortalNamespaces = map[string]bool{"default": true, "kube-system": true, "kube-public": true}

// deleteOne deletes an object or, when finalizers or a grace period hold it,
// marks it with a deletionTimestamp.
func (s *Server) deleteOne(ctx context.Context, res *resource, ns, name string, opts *metav1.DeleteOptions) (runtime.Object, int, error) {
	key := res.key(ns, name)
	dryRun := len(opts.DryRun) > 0
	for attempt := 0; attempt < 100; attempt++ {
		cur, kv, err := s.getObject(ctx, res, ns, name)
		if err != nil {
			return nil, 0, err
		}
		m := mustMeta(cur)
		if _, ok := cur.(*corev1.Namespace); ok && immortalNamespaces[name] {
			return nil, 0, apierrors.NewForbidden(res.groupResource(), name, errors.New("this namespace may not be deleted"))
		}
		if p := opts.Preconditions; p != nil {
			if p.UID != nil && *p.UID != m.GetUID() {
				return nil, 0, apierrors.NewConflict(res.groupResource(), name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, m.GetUID()))
			}
			if p.ResourceVersion != nil && *p.ResourceVersion != m.GetResourceVersion() {
				return nil, 0, apierrors.NewConflict(res.groupResource(), name, fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, m.GetResourceVersion()))
			}
		}
		obj := cur.DeepCopyObject()
		om := mustMeta(obj)
		changed := false
		// Propagation policies become finalizers the garbage collector honours.
		addFin := func(f string) {
			for _, x := range om.GetFinalizers() {
				if x == f {
					return
				}
			}
			om.SetFinalizers(append(om.GetFinalizers(), f))
			changed = true
		}
		orphan := opts.OrphanDependents != nil && *opts.OrphanDependents
		if pp := opts.PropagationPolicy; pp != nil {
			switch *pp {
			case metav1.DeletePropagationOrphan:
				orphan = true
			case metav1.DeletePropagationForeground:
				addFin(metav1.FinalizerDeleteDependents)
			}
		}
		if orphan {
			addFin(metav1.FinalizerOrphanDependents)
		}
		now := metav1.Now()
		var grace int64
		graceful := false
		if res.gracefulDelete != nil {
			grace, graceful = res.gracefulDelete(obj, opts.GracePeriodSeconds)
		}
		if om.GetDeletionTimestamp() == nil {
			if graceful || len(om.GetFinalizers()) > 0 {
				ts := metav1.NewTime(now.Add(time.Duration(grace) * time.Second))
				om.SetDeletionTimestamp(&ts)
				om.SetDeletionGracePeriodSeconds(&grace)
				changed = true
			}
		} else if g := om.GetDeletionGracePeriodSeconds(); g != nil && (!graceful || grace < *g) {
			// A shorter grace period may replace a longer one.
			ts := metav1.NewTime(now.Add(time.Duration(grace) * time.Second))
			om.SetDeletionTimestamp(&ts)
			om.SetDeletionGracePeriodSeconds(&grace)
			changed = true
		}
		if n, ok := obj.(*corev1.Namespace); ok {
			if len(n.Spec.Finalizers) > 0 {
				if n.DeletionTimestamp == nil {
					n.DeletionTimestamp = &now
					n.DeletionGracePeriodSeconds = ptr(int64(0))
				}
				if n.Status.Phase != corev1.NamespaceTerminating {
					n.Status.Phase = corev1.NamespaceTerminating
					changed = true
				}
			}
		}
		if om.GetDeletionTimestamp() != nil && !(len(om.GetFinalizers()) == 0 && deletable(res, obj)) {
			// Only marked: the object stays until its finalizers and grace
			// period end; 202 like upstream.
			if !changed || dryRun {
				return obj, http.StatusAccepted, nil
			}
			data, err := encodeForStore(res, obj)
			if err != nil {
				return nil, 0, apierrors.NewInternalError(err)
			}
			rev, err := s.store.Update(ctx, key, data, kv.ModRevision)
			if errors.Is(err, store.ErrConflict) {
				continue
			}
			if err != nil {
				return nil, 0, storeErr(err, res, name)
			}
			om.SetResourceVersion(strconv.FormatInt(rev, 10))
			return obj, http.StatusAccepted, nil
		}
		if dryRun {
			return obj, http.StatusOK, nil
		}
		dkv, err := s.store.Delete(ctx, key, kv.ModRevision)
		if errors.Is(err, store.ErrConflict) {
			continue
		}
		if err != nil {
			return nil, 0, storeErr(err, res, name)
		}
		s.release(res, nil, cur)
		mustMeta(cur).SetResourceVersion(strconv.FormatInt(dkv.ModRevision, 10))
		return cur, http.StatusOK, nil
	}
	return nil, 0, apierrors.NewConflict(res.groupResource(), name, errors.New("too many concurrent writers, retry"))
}

func (s *Server) handleDeleteCollection(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	opts, err := deleteOptions(r)
	if err != nil {
		return err
	}
	lo, err := parseListOptions(r, ri.res)
	if err != nil {
		return err
	}
	lo.limit = 0
	items, listRev, _, _, err := s.listObjects(ctx, ri.res, ri.namespace, lo)
	if err != nil {
		return err
	}
	var deleted []runtime.Object
	for _, it := range items {
		m := mustMeta(it)
		obj, _, err := s.deleteOne(ctx, ri.res, m.GetNamespace(), m.GetName(), opts)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		deleted = append(deleted, obj)
	}
	return s.respondList(w, r, ri.res, deleted, metav1.ListMeta{ResourceVersion: strconv.FormatInt(listRev, 10)})
}

// patchType returns the patch media type of a PATCH request.
func patchType(r *http.Request) (types.PatchType, error) {
	ct := r.Header.Get("Content-Type")
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		mt = ct
	}
	switch types.PatchType(mt) {
	case types.JSONPatchType, types.MergePatchType, types.StrategicMergePatchType:
		return types.PatchType(mt), nil
	case types.ApplyYAMLPatchType, types.ApplyCBORPatchType:
		return "", &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
			Reason:  metav1.StatusReasonUnsupportedMediaType,
			Message: "server-side apply is not supported by skep: use client-side kubectl apply (without --server-side)"}}
	}
	return "", &apierrors.StatusError{ErrStatus: metav1.Status{Status: metav1.StatusFailure, Code: http.StatusUnsupportedMediaType,
		Reason:  metav1.StatusReasonUnsupportedMediaType,
		Message: fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got %q)", ct)}}
}

func (s *Server) handlePatch(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	pt, err := patchType(r)
	if err != nil {
		return err
	}
	fv, err := parseFieldValidation(r)
	if err != nil {
		return err
	}
	dryRun, err := isDryRun(r)
	if err != nil {
		return err
	}
	patch, err := readBody(r)
	if err != nil {
		return err
	}
	var warnings []string
	if ri.sub == "scale" {
		var sc *autoscalingv1.Scale
		cur, _, err := s.getObject(ctx, res, ri.namespace, ri.name)
		if err != nil {
			return err
		}
		curScale := scaleOf(cur)
		out, err := applyPatch(pt, patch, curScale, &autoscalingv1.Scale{})
		if err != nil {
			return err
		}
		nobj := &autoscalingv1.Scale{}
		if warnings, err = decodeInto(out, nobj, "Scale", "v1", fv, nil); err != nil {
			return err
		}
		sc = nobj
		if sc.ResourceVersion == curScale.ResourceVersion {
			sc.ResourceVersion = "" // the patch did not ask for a precondition
		}
		addWarnings(w, warnings)
		return s.updateScale(ctx, w, r, ri, sc, dryRun)
	}
	obj, err := s.guaranteedUpdate(ctx, res, ri.namespace, ri.name, ri.sub, dryRun, func(cur runtime.Object) (runtime.Object, int64, error) {
		out, err := applyPatch(pt, patch, cur, res.newObj())
		if err != nil {
			return nil, 0, err
		}
		nobj := res.newObj()
		w, err := decodeInto(out, nobj, res.gvk.Kind, res.gvk.Version, fv, nil)
		if err != nil {
			return nil, 0, err
		}
		warnings = w
		tm := nobj.GetObjectKind().GroupVersionKind()
		if (tm.Kind != "" && tm.Kind != res.gvk.Kind) || (tm.GroupVersion() != res.gvk.GroupVersion() && tm.Version != "") {
			return nil, 0, apierrors.NewBadRequest("a patch may not change apiVersion or kind")
		}
		nobj.GetObjectKind().SetGroupVersionKind(res.gvk)
		expect, err := parseRV(mustMeta(nobj).GetResourceVersion())
		if err != nil {
			return nil, 0, err
		}
		if mustMeta(nobj).GetResourceVersion() == mustMeta(cur).GetResourceVersion() {
			expect = 0 // the patch did not set a resourceVersion precondition
		}
		return nobj, expect, nil
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings)
	return s.respond(w, r, http.StatusOK, res, obj)
}
