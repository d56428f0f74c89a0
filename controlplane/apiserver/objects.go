package apiserver

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apivalidation "k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/store"
)

// This file is the generic object store, like kube-apiserver's
// genericregistry.Store: create, update and delete of any resource, in the
// order the registry package's doc draws, over the key-value store. It
// knows no kind; what a kind adds comes from its row's Strategy.

// maxWriteAttempts bounds the retries of an update or delete that keeps
// losing compare-and-swap races to other writers.
const maxWriteAttempts = 100

// storeErr translates store errors to API errors.
func storeErr(err error, res *registry.Resource, name string) error {
	var gr schema.GroupResource
	if res != nil {
		gr = res.GroupResource()
	}
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

func conflictErr(res *registry.Resource, name string) error {
	var gr schema.GroupResource
	if res != nil {
		gr = res.GroupResource()
	}
	return apierrors.NewConflict(gr, name, errors.New("the object has been modified; please apply your changes to the latest version and try again"))
}

// decodeKV turns stored bytes into a typed object carrying its resourceVersion.
func (s *Server) decodeKV(res *registry.Resource, kv store.KV) (runtime.Object, error) {
	obj := res.New()
	if err := json.Unmarshal(kv.Value, obj); err != nil {
		return nil, fmt.Errorf("decode %s: %w", kv.Key, err)
	}
	obj.GetObjectKind().SetGroupVersionKind(res.GVK)
	registry.Meta(obj).SetResourceVersion(strconv.FormatInt(kv.ModRevision, 10))
	return obj, nil
}

// encodeForStore serializes an object without its resourceVersion (the
// store's revision is the resourceVersion).
func encodeForStore(res *registry.Resource, obj runtime.Object) ([]byte, error) {
	m := registry.Meta(obj)
	rv := m.GetResourceVersion()
	m.SetResourceVersion("")
	obj.GetObjectKind().SetGroupVersionKind(res.GVK)
	data, err := json.Marshal(obj)
	m.SetResourceVersion(rv)
	return data, err
}

func (s *Server) getObject(ctx context.Context, res *registry.Resource, ns, name string) (runtime.Object, store.KV, error) {
	kv, err := s.store.Get(ctx, res.Key(ns, name))
	if err != nil {
		return nil, kv, storeErr(err, res, name)
	}
	obj, err := s.decodeKV(res, kv)
	return obj, kv, err
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

// setNamespace puts the request's namespace on obj, refusing another one.
func setNamespace(res *registry.Resource, m metav1.Object, ns string) error {
	switch {
	case !res.Namespaced:
		m.SetNamespace("")
	case m.GetNamespace() == "":
		m.SetNamespace(ns)
	case m.GetNamespace() != ns:
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	return nil
}

// validate runs metadata validation and the strategy's; old is nil on create.
func validate(res *registry.Resource, us registry.UpdateStrategy, obj, old runtime.Object) error {
	m := registry.Meta(obj)
	errs := apivalidation.ValidateObjectMetaAccessor(m, res.Namespaced, res.NameFn, field.NewPath("metadata"))
	if old == nil {
		errs = append(errs, res.Strategy.Validate(obj)...)
	} else {
		errs = append(errs, apivalidation.ValidateObjectMetaAccessorUpdate(m, registry.Meta(old), field.NewPath("metadata"))...)
		errs = append(errs, us.ValidateUpdate(obj, old)...)
	}
	if len(errs) > 0 {
		return registry.Invalid(res.GVK.GroupKind(), m.GetName(), errs)
	}
	return nil
}

// createObject stores a new object in namespace ns. It returns the stored
// bytes and revision (nil and 0 on a dry run); obj carries its
// resourceVersion afterwards.
func (s *Server) createObject(ctx context.Context, res *registry.Resource, ns string, obj runtime.Object, dryRun bool) ([]byte, int64, error) {
	m := registry.Meta(obj)
	if err := setNamespace(res, m, ns); err != nil {
		return nil, 0, err
	}
	if err := s.admit(ctx, res, m.GetNamespace(), m.GetName()); err != nil {
		return nil, 0, err
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		m.SetName(m.GetGenerateName() + generateNameSuffix())
	}
	// System metadata is the server's to set.
	m.SetUID(uuid.NewUUID())
	m.SetCreationTimestamp(metav1.Now())
	m.SetResourceVersion("")
	m.SetDeletionTimestamp(nil)
	m.SetDeletionGracePeriodSeconds(nil)
	m.SetSelfLink("")
	m.SetManagedFields(nil)
	st := res.Strategy
	st.PrepareForCreate(obj)
	st.Default(obj)
	if err := s.mutate(ctx, res, obj); err != nil {
		return nil, 0, err
	}
	if err := validate(res, st, obj, nil); err != nil {
		return nil, 0, err
	}
	if err := admitUser(ctx, res, obj, nil); err != nil {
		return nil, 0, err
	}
	rsv, err := st.Reserve(obj, nil)
	if err != nil {
		return nil, 0, err
	}
	if dryRun {
		rsv.Rollback()
		return nil, 0, nil
	}
	data, err := encodeForStore(res, obj)
	if err != nil {
		rsv.Rollback()
		return nil, 0, apierrors.NewInternalError(err)
	}
	rev, err := s.store.Create(ctx, res.Key(m.GetNamespace(), m.GetName()), data)
	if err != nil {
		rsv.Rollback()
		if errors.Is(err, store.ErrExists) && m.GetGenerateName() != "" && m.GetName() != "" {
			return nil, 0, apierrors.NewGenerateNameConflict(res.GroupResource(), m.GetName(), 1)
		}
		return nil, 0, storeErr(err, res, m.GetName())
	}
	rsv.Commit()
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	return data, rev, nil
}

// admitUser checks who makes the write: the node restriction, then the
// strategy's own check if it has one.
func admitUser(ctx context.Context, res *registry.Resource, obj, old runtime.Object) error {
	if err := restrictNode(ctx, res, obj, old); err != nil {
		return err
	}
	if a, ok := res.Strategy.(registry.Admitter); ok {
		return a.Admit(ctx, obj, old)
	}
	return nil
}

// carrySystemMeta keeps what no client may change on update.
func carrySystemMeta(obj, old runtime.Object) {
	m, om := registry.Meta(obj), registry.Meta(old)
	m.SetUID(om.GetUID())
	m.SetCreationTimestamp(om.GetCreationTimestamp())
	m.SetDeletionTimestamp(om.GetDeletionTimestamp())
	m.SetDeletionGracePeriodSeconds(om.GetDeletionGracePeriodSeconds())
	m.SetGeneration(om.GetGeneration())
	m.SetSelfLink("")
	if len(m.GetManagedFields()) == 0 {
		m.SetManagedFields(om.GetManagedFields())
	}
}

// updateObject reads the current object, lets fn produce the new one and
// writes it with compare-and-swap, retrying when another writer got in
// between. A resourceVersion fn leaves on the object is a precondition. us
// (nil: the resource's own) prepares and validates the update.
func (s *Server) updateObject(ctx context.Context, res *registry.Resource, ns, name string, us registry.UpdateStrategy, dryRun bool,
	fn func(cur runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	if us == nil {
		us = res.Strategy
	}
	key := res.Key(ns, name)
	for attempt := 0; ; attempt++ {
		if err := ctx.Err(); err != nil {
			return nil, storeErr(err, res, name)
		}
		cur, kv, err := s.getObject(ctx, res, ns, name)
		if err != nil {
			return nil, err
		}
		obj, err := fn(cur.DeepCopyObject())
		if err != nil {
			return nil, err
		}
		m := registry.Meta(obj)
		expect, err := parseRV(m.GetResourceVersion())
		if err != nil {
			return nil, err
		}
		if expect != 0 && expect != kv.ModRevision {
			return nil, conflictErr(res, name)
		}
		// A uid on the new object is a precondition too, as upstream: a PUT
		// of an object read before it was deleted and recreated must not
		// overwrite the new one.
		if uid, curUID := m.GetUID(), registry.Meta(cur).GetUID(); uid != "" && uid != curUID {
			return nil, apierrors.NewConflict(res.GroupResource(), name, fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", uid, curUID))
		}
		// Without a precondition the update is unconditional, as
		// Kubernetes allows for its built-in kinds.
		m.SetResourceVersion(registry.Meta(cur).GetResourceVersion())
		if m.GetName() == "" {
			m.SetName(name)
		}
		if m.GetName() != name {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", m.GetName(), name))
		}
		if err := setNamespace(res, m, ns); err != nil {
			return nil, err
		}
		carrySystemMeta(obj, cur)
		us.PrepareForUpdate(obj, cur)
		res.Strategy.Default(obj)
		if err := validate(res, us, obj, cur); err != nil {
			return nil, err
		}
		if err := admitUser(ctx, res, obj, cur); err != nil {
			return nil, err
		}
		rsv, err := res.Strategy.Reserve(obj, cur)
		if err != nil {
			return nil, err
		}
		if registry.EqualSemantic(obj, cur) {
			rsv.Rollback()
			return cur, nil // a no-op update writes nothing, as upstream
		}
		if dryRun {
			rsv.Rollback()
			return obj, nil
		}
		if m.GetDeletionTimestamp() != nil && len(m.GetFinalizers()) == 0 && res.Strategy.Removable(obj) {
			// The last finalizer is gone: the update is the delete.
			rsv.Rollback()
			dkv, err := s.store.Delete(ctx, key, kv.ModRevision)
			if errors.Is(err, store.ErrConflict) && attempt < maxWriteAttempts {
				continue
			}
			if err != nil {
				return nil, storeErr(err, res, name)
			}
			s.released(res, cur)
			m.SetResourceVersion(strconv.FormatInt(dkv.ModRevision, 10))
			return obj, nil
		}
		data, err := encodeForStore(res, obj)
		if err != nil {
			rsv.Rollback()
			return nil, apierrors.NewInternalError(err)
		}
		rev, err := s.store.Update(ctx, key, data, kv.ModRevision)
		if err != nil {
			rsv.Rollback()
			if errors.Is(err, store.ErrConflict) && attempt < maxWriteAttempts {
				continue
			}
			return nil, storeErr(err, res, name)
		}
		rsv.Commit()
		m.SetResourceVersion(strconv.FormatInt(rev, 10))
		return obj, nil
	}
}

// released frees what a deleted object held.
func (s *Server) released(res *registry.Resource, old runtime.Object) {
	if rsv, err := res.Strategy.Reserve(nil, old); err == nil {
		rsv.Commit()
	} else {
		s.log.Error("release after delete", "resource", res.GroupResource().String(), "name", registry.Meta(old).GetName(), "err", err)
	}
}

// deleteObject deletes an object or, when finalizers or a grace period
// hold it, marks it with a deletionTimestamp (202).
func (s *Server) deleteObject(ctx context.Context, res *registry.Resource, ns, name string, opts *metav1.DeleteOptions) (runtime.Object, int, error) {
	key := res.Key(ns, name)
	dryRun := len(opts.DryRun) > 0
	for attempt := 0; attempt < maxWriteAttempts; attempt++ {
		cur, kv, err := s.getObject(ctx, res, ns, name)
		if err != nil {
			return nil, 0, err
		}
		if err := checkPreconditions(res, cur, opts.Preconditions); err != nil {
			return nil, 0, err
		}
		if err := restrictNode(ctx, res, nil, cur); err != nil {
			return nil, 0, err
		}
		obj := cur.DeepCopyObject()
		grace, graceful, err := res.Strategy.BeginDelete(obj, opts)
		if err != nil {
			return nil, 0, err
		}
		om := registry.Meta(obj)
		// Propagation policies become finalizers the garbage collector honours.
		orphan := opts.OrphanDependents != nil && *opts.OrphanDependents
		if pp := opts.PropagationPolicy; pp != nil {
			switch *pp {
			case metav1.DeletePropagationOrphan:
				orphan = true
			case metav1.DeletePropagationForeground:
				addFinalizer(om, metav1.FinalizerDeleteDependents)
			}
		}
		if orphan {
			addFinalizer(om, metav1.FinalizerOrphanDependents)
		}
		if !graceful {
			grace = 0
		}
		if om.GetDeletionTimestamp() == nil {
			if graceful || len(om.GetFinalizers()) > 0 {
				markDeleting(om, grace)
			}
		} else if g := om.GetDeletionGracePeriodSeconds(); g != nil && grace < *g {
			markDeleting(om, grace) // a shorter grace period replaces a longer one
		}
		if om.GetDeletionTimestamp() != nil && !(len(om.GetFinalizers()) == 0 && res.Strategy.Removable(obj)) {
			// Only marked: the object stays until its finalizers and grace
			// period end; 202 like upstream.
			if dryRun || registry.EqualSemantic(obj, cur) {
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
		s.released(res, cur)
		registry.Meta(cur).SetResourceVersion(strconv.FormatInt(dkv.ModRevision, 10))
		return cur, http.StatusOK, nil
	}
	return nil, 0, apierrors.NewConflict(res.GroupResource(), name, errors.New("too many concurrent writers, retry"))
}

func checkPreconditions(res *registry.Resource, cur runtime.Object, p *metav1.Preconditions) error {
	if p == nil {
		return nil
	}
	m := registry.Meta(cur)
	if p.UID != nil && *p.UID != m.GetUID() {
		return apierrors.NewConflict(res.GroupResource(), m.GetName(), fmt.Errorf("Precondition failed: UID in precondition: %v, UID in object meta: %v", *p.UID, m.GetUID()))
	}
	if p.ResourceVersion != nil && *p.ResourceVersion != m.GetResourceVersion() {
		return apierrors.NewConflict(res.GroupResource(), m.GetName(), fmt.Errorf("Precondition failed: ResourceVersion in precondition: %v, ResourceVersion in object meta: %v", *p.ResourceVersion, m.GetResourceVersion()))
	}
	return nil
}

func addFinalizer(m metav1.Object, f string) {
	for _, x := range m.GetFinalizers() {
		if x == f {
			return
		}
	}
	m.SetFinalizers(append(m.GetFinalizers(), f))
}

// markDeleting sets the deletionTimestamp grace seconds from now.
func markDeleting(m metav1.Object, grace int64) {
	ts := metav1.NewTime(time.Now().Add(time.Duration(grace) * time.Second))
	m.SetDeletionTimestamp(&ts)
	m.SetDeletionGracePeriodSeconds(&grace)
}

// getter reads an object of any served resource (registry.Getter).
type getter struct{ s *Server }

func (g getter) Get(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (runtime.Object, error) {
	s := g.s
	res := s.reg.Lookup(gvr)
	if res == nil {
		return nil, apierrors.NewNotFound(gvr.GroupResource(), name)
	}
	obj, _, err := s.getObject(ctx, res, ns, name)
	return obj, err
}

// resourceObjects is one resource's Objects, for subresource handlers.
type resourceObjects struct {
	s   *Server
	res *registry.Resource
}

func (o resourceObjects) Get(ctx context.Context, ns, name string) (runtime.Object, error) {
	obj, _, err := o.s.getObject(ctx, o.res, ns, name)
	return obj, err
}

func (o resourceObjects) Update(ctx context.Context, ns, name string, us registry.UpdateStrategy, dryRun bool, fn func(cur runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	return o.s.updateObject(ctx, o.res, ns, name, us, dryRun, fn)
}
