package apiserver

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	apiextensionshelpers "k8s.io/apiextensions-apiserver/pkg/apihelpers"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apiextensions-apiserver/pkg/controller/openapi/builder"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/kube-openapi/pkg/spec3"

	"github.com/skep-dev/skep/controlplane/apiserver/openapi"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/apiextensions"
	"github.com/skep-dev/skep/controlplane/store"
)

// This file serves custom resources: what kube-apiserver's apiextensions
// controllers do (naming, establishing, finalizing) and its CRD handler's
// routing, as a feed over the stored CRDs that adds and removes rows of the
// table, so the generic handler serves custom resources like any kind and
// discovery follows at once.

// crdManager is the field manager of the server's own writes to CRDs.
const crdManager = "skep-apiextensions"

// customResources is the serving state of every CRD.
type customResources struct {
	mu     sync.Mutex
	served map[string]*servedCRD // by CRD name
}

// servedCRD is what one CRD serves.
type servedCRD struct {
	uid        string
	generation int64
	names      apiextensionsv1.CustomResourceDefinitionNames
	rows       []*registry.Resource
	// converters are the structured-merge-diff views of its versions, for
	// server-side apply, built on first use.
	converter managedfields.TypeConverter
	crd       *apiextensionsv1.CustomResourceDefinition
	cleaning  bool
}

func (sc *servedCRD) gvrs() []schema.GroupVersionResource {
	out := make([]schema.GroupVersionResource, len(sc.rows))
	for i, r := range sc.rows {
		out[i] = r.GVR()
	}
	return out
}

// crdFeed keeps the table's custom resource rows current with the stored
// CRDs.
func (s *Server) crdFeed() *feed {
	return s.newFeed("/registry/"+apiextensionsv1.GroupName+"/", func(o runtime.Object) {
		s.serveCRD(o.(*apiextensionsv1.CustomResourceDefinition))
	}, func(o runtime.Object) {
		s.unserveCRD(o.(*apiextensionsv1.CustomResourceDefinition).Name)
	})
}

// serveCRD reconciles one CRD: its accepted names and conditions, the rows
// of its served versions, and its cleanup when it is being deleted.
func (s *Server) serveCRD(crd *apiextensionsv1.CustomResourceDefinition) {
	s.crds.mu.Lock()
	if s.crds.served == nil {
		s.crds.served = map[string]*servedCRD{}
	}
	cur := s.crds.served[crd.Name]
	if cur != nil && cur.uid != string(crd.UID) {
		// Deleted and created again under the same name.
		s.reg.Remove(cur.gvrs()...)
		delete(s.crds.served, crd.Name)
		cur = nil
	}
	names, namesCond, estCond := s.acceptNames(crd)
	terminating := crd.DeletionTimestamp != nil
	want := crd.DeepCopy()
	want.Status.AcceptedNames = names
	apiextensionshelpers.SetCRDCondition(want, namesCond)
	if namesCond.Status == apiextensionsv1.ConditionTrue {
		// Rows are served as soon as the names are ours, so Established
		// follows at once (upstream waits a few seconds for other servers'
		// caches; here every server serves from the same feed).
		estCond = apiextensionsv1.CustomResourceDefinitionCondition{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionTrue,
			Reason: "InitialNamesAccepted", Message: "the initial names have been accepted"}
	}
	apiextensionshelpers.SetCRDCondition(want, estCond)
	if terminating {
		apiextensionshelpers.SetCRDCondition(want, apiextensionsv1.CustomResourceDefinitionCondition{Type: apiextensionsv1.Terminating,
			Status: apiextensionsv1.ConditionTrue, Reason: "InstanceDeletionInProgress", Message: "CustomResource deletion is in progress"})
	}

	if namesCond.Status == apiextensionsv1.ConditionTrue && (cur == nil || cur.generation != crd.Generation || !namesEqual(cur.names, names)) {
		rows, err := apiextensions.CustomResourceRows(want)
		if err != nil {
			s.log.Error("serve CRD", "crd", crd.Name, "err", err)
		} else {
			var old []schema.GroupVersionResource
			if cur != nil {
				old = cur.gvrs()
			}
			if err := s.reg.Replace(old, rows...); err != nil {
				s.log.Error("serve CRD", "crd", crd.Name, "err", err)
			} else {
				if cur != nil {
					s.forgetFieldManagers(cur.rows)
				}
				cur = &servedCRD{uid: string(crd.UID), generation: crd.Generation, names: names, rows: rows}
				s.crds.served[crd.Name] = cur
			}
		}
	}
	if cur != nil {
		cur.crd = want
		for _, r := range cur.rows {
			if st, ok := r.Strategy.(interface{ SetTerminating(bool) }); ok {
				st.SetTerminating(terminating)
			}
		}
	}
	startCleanup := terminating && cur != nil && !cur.cleaning && slices.Contains(crd.Finalizers, apiextensions.CleanupFinalizer)
	if startCleanup {
		cur.cleaning = true
	}
	s.crds.mu.Unlock()

	if !registry.EqualSemantic(want.Status, crd.Status) {
		go s.writeCRDStatus(want)
	}
	if startCleanup {
		go s.cleanupCRD(crd.Name, cur)
	} else if terminating && cur == nil && slices.Contains(crd.Finalizers, apiextensions.CleanupFinalizer) {
		// Never served: nothing to delete.
		go s.removeCleanupFinalizer(crd.Name)
	}
}

// unserveCRD drops a deleted CRD's rows.
func (s *Server) unserveCRD(name string) {
	s.crds.mu.Lock()
	defer s.crds.mu.Unlock()
	if cur := s.crds.served[name]; cur != nil {
		s.reg.Remove(cur.gvrs()...)
		s.forgetFieldManagers(cur.rows)
		delete(s.crds.served, name)
	}
}

func namesEqual(a, b apiextensionsv1.CustomResourceDefinitionNames) bool {
	return registry.EqualSemantic(a, b)
}

// acceptNames is kube-apiserver's naming controller: a name another CRD or
// a built-in kind of the group already serves is refused (NamesAccepted
// False, naming the conflict); names once accepted stay accepted.
func (s *Server) acceptNames(crd *apiextensionsv1.CustomResourceDefinition) (apiextensionsv1.CustomResourceDefinitionNames, apiextensionsv1.CustomResourceDefinitionCondition, apiextensionsv1.CustomResourceDefinitionCondition) {
	resources, kinds := map[string]bool{}, map[string]bool{}
	mine := map[schema.GroupVersionResource]bool{}
	if cur := s.crds.served[crd.Name]; cur != nil {
		for _, g := range cur.gvrs() {
			mine[g] = true
		}
	}
	for _, r := range s.reg.All() {
		if r.GVK.Group != crd.Spec.Group || mine[r.GVR()] {
			continue
		}
		resources[r.Plural], resources[r.Singular] = true, true
		for _, sn := range r.ShortNames {
			resources[sn] = true
		}
		kinds[r.GVK.Kind], kinds[r.GVK.Kind+"List"] = true, true
	}
	req, acc := crd.Spec.Names, crd.Status.AcceptedNames
	names := acc
	cond := apiextensionsv1.CustomResourceDefinitionCondition{Type: apiextensionsv1.NamesAccepted, Status: apiextensionsv1.ConditionUnknown}
	check := func(requested, accepted string, taken map[string]bool, reason string) bool {
		if requested == accepted || requested == "" || !taken[requested] {
			return true
		}
		cond.Status, cond.Reason, cond.Message = apiextensionsv1.ConditionFalse, reason, fmt.Sprintf("%q is already in use", requested)
		return false
	}
	if check(req.Plural, acc.Plural, resources, "PluralConflict") {
		names.Plural = req.Plural
	}
	if check(req.Singular, acc.Singular, resources, "SingularConflict") {
		names.Singular = req.Singular
	}
	shortOK := true
	for _, sn := range req.ShortNames {
		if !slices.Contains(acc.ShortNames, sn) && !check(sn, "", resources, "ShortNamesConflict") {
			shortOK = false
		}
	}
	if shortOK {
		names.ShortNames = req.ShortNames
	}
	if check(req.Kind, acc.Kind, kinds, "KindConflict") {
		names.Kind = req.Kind
	}
	if check(req.ListKind, acc.ListKind, kinds, "ListKindConflict") {
		names.ListKind = req.ListKind
	}
	names.Categories = req.Categories
	if cond.Status == apiextensionsv1.ConditionUnknown {
		cond.Status, cond.Reason, cond.Message = apiextensionsv1.ConditionTrue, "NoConflicts", "no conflicts found"
	}
	est := apiextensionsv1.CustomResourceDefinitionCondition{Type: apiextensionsv1.Established, Status: apiextensionsv1.ConditionFalse,
		Reason: "NotAccepted", Message: "not all names are accepted"}
	if old := apiextensionshelpers.FindCRDCondition(crd, apiextensionsv1.Established); old != nil {
		est = *old
	}
	return names, cond, est
}

// crdResource is the CRD row.
func (s *Server) crdResource() *registry.Resource {
	return s.reg.Lookup(apiextensionsv1.SchemeGroupVersion.WithResource("customresourcedefinitions"))
}

// writeCRDStatus stores a CRD's status as the server computed it.
func (s *Server) writeCRDStatus(want *apiextensionsv1.CustomResourceDefinition) {
	res := s.crdResource()
	ctx, cancel := context.WithTimeout(s.lifetime, 30*time.Second)
	defer cancel()
	_, err := s.updateObject(ctx, res, "", want.Name, res.Subresource("status").Update, writeOpts{manager: crdManager, sub: "status"}, func(cur runtime.Object) (runtime.Object, error) {
		c := cur.(*apiextensionsv1.CustomResourceDefinition)
		if c.UID != want.UID {
			return nil, apierrors.NewConflict(res.GroupResource(), want.Name, fmt.Errorf("recreated"))
		}
		c.Status = *want.Status.DeepCopy()
		c.ResourceVersion = ""
		return c, nil
	})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && s.lifetime.Err() == nil {
		s.log.Error("write CRD status", "crd", want.Name, "err", err)
	}
}

// cleanupCRD is kube-apiserver's finalizing controller: it deletes every
// custom resource of a deleted CRD (each through the generic delete, so
// their own finalizers hold them), waits until none is left, and then
// removes the CRD's cleanup finalizer so the CRD goes.
func (s *Server) cleanupCRD(name string, sc *servedCRD) {
	if len(sc.rows) == 0 {
		s.removeCleanupFinalizer(name)
		return
	}
	res := sc.rows[0] // every version shares the keys
	for s.lifetime.Err() == nil {
		var left []string
		_, err := s.store.Range(s.lifetime, res.KeyPrefix(), store.ListOptions{}, nil, func(kv store.KV) error {
			left = append(left, kv.Key)
			return nil
		})
		if err != nil {
			s.log.Error("clean up CRD", "crd", name, "err", err)
		}
		if err == nil && len(left) == 0 {
			s.removeCleanupFinalizer(name)
			return
		}
		for _, key := range left {
			ns, n := splitKey(res, key)
			if _, _, err := s.deleteObject(s.lifetime, res, ns, n, &metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
				s.log.Error("clean up CRD", "crd", name, "object", key, "err", err)
			}
		}
		select {
		case <-s.lifetime.Done():
		case <-time.After(time.Second):
		}
	}
}

// splitKey is the namespace and name of a stored key of res.
func splitKey(res *registry.Resource, key string) (ns, name string) {
	rest := strings.TrimPrefix(key, res.KeyPrefix())
	if res.Namespaced {
		ns, name, _ = strings.Cut(rest, "/")
		return ns, name
	}
	return "", rest
}

func (s *Server) removeCleanupFinalizer(name string) {
	res := s.crdResource()
	_, err := s.updateObject(s.lifetime, res, "", name, nil, writeOpts{manager: crdManager}, func(cur runtime.Object) (runtime.Object, error) {
		m := registry.Meta(cur)
		m.SetFinalizers(slices.DeleteFunc(m.GetFinalizers(), func(f string) bool { return f == apiextensions.CleanupFinalizer }))
		m.SetResourceVersion("")
		return cur, nil
	})
	if err != nil && !apierrors.IsNotFound(err) && s.lifetime.Err() == nil {
		s.log.Error("remove CRD finalizer", "crd", name, "err", err)
	}
}

// customResourceCRD returns the served CRD whose rows include res, or nil
// for a built-in kind.
func (s *Server) customResourceCRD(res *registry.Resource) *servedCRD {
	s.crds.mu.Lock()
	defer s.crds.mu.Unlock()
	for _, sc := range s.crds.served {
		if slices.Contains(sc.rows, res) {
			return sc
		}
	}
	return nil
}

// crdTypeConverter is the structured-merge-diff view of a CRD's versions,
// built as kube-apiserver's CRD handler builds it: each version's OpenAPI
// (apiextensions' builder) merged with the metadata schemas.
func (s *Server) crdTypeConverter(sc *servedCRD) (managedfields.TypeConverter, error) {
	s.crds.mu.Lock()
	defer s.crds.mu.Unlock()
	if sc.converter != nil {
		return sc.converter, nil
	}
	static, err := openapi.MetaDefinitions()
	if err != nil {
		return nil, err
	}
	specs := []*spec3.OpenAPI{{Version: "3.0.0", Components: &spec3.Components{Schemas: static}}}
	for _, v := range sc.crd.Spec.Versions {
		doc, err := builder.BuildOpenAPIV3(sc.crd, v.Name, builder.Options{})
		if err != nil {
			return nil, fmt.Errorf("openapi of %s %s: %w", sc.crd.Name, v.Name, err)
		}
		specs = append(specs, doc)
	}
	merged, err := builder.MergeSpecsV3(specs...)
	if err != nil {
		return nil, fmt.Errorf("openapi of %s: %w", sc.crd.Name, err)
	}
	tc, err := managedfields.NewTypeConverter(merged.Components.Schemas, sc.crd.Spec.PreserveUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("type converter of %s: %w", sc.crd.Name, err)
	}
	sc.converter = tc
	return tc, nil
}

// unstructuredConverter converts custom resources between versions as a
// CRD with conversion strategy None does (only apiVersion changes), and
// makes empty ones, for their field managers.
type unstructuredConverter struct{}

func (unstructuredConverter) Convert(in, out, context interface{}) error {
	return fmt.Errorf("unstructured conversion from %T to %T is not supported", in, out)
}

func (unstructuredConverter) ConvertToVersion(in runtime.Object, gv runtime.GroupVersioner) (runtime.Object, error) {
	u, ok := in.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("%T is not a custom resource", in)
	}
	gvk, ok := gv.KindForGroupVersionKinds([]schema.GroupVersionKind{u.GroupVersionKind()})
	if !ok {
		return nil, fmt.Errorf("no version of %s for %v", u.GroupVersionKind(), gv)
	}
	out := u.DeepCopy()
	out.SetGroupVersionKind(gvk)
	return out, nil
}

func (unstructuredConverter) ConvertFieldLabel(gvk schema.GroupVersionKind, label, value string) (string, string, error) {
	return label, value, nil
}

func (unstructuredConverter) New(gvk schema.GroupVersionKind) (runtime.Object, error) {
	u := &unstructured.Unstructured{Object: map[string]interface{}{}}
	u.SetGroupVersionKind(gvk)
	return u, nil
}

// crdGroupVersions are the group versions custom resources serve.
func (s *Server) crdGroupVersions() []schema.GroupVersion {
	s.crds.mu.Lock()
	defer s.crds.mu.Unlock()
	var out []schema.GroupVersion
	for _, sc := range s.crds.served {
		for _, r := range sc.rows {
			if gv := r.GVK.GroupVersion(); !slices.Contains(out, gv) {
				out = append(out, gv)
			}
		}
	}
	slices.SortFunc(out, func(a, b schema.GroupVersion) int { return strings.Compare(openapi.Path(a), openapi.Path(b)) })
	return out
}

// crdOpenAPIv3 is the OpenAPI v3 document of a group version custom
// resources serve (kubectl explain, kubectl's field validation check): each
// CRD's, from apiextensions' builder, merged.
func (s *Server) crdOpenAPIv3(gv schema.GroupVersion) ([]byte, error) {
	s.crds.mu.Lock()
	var crds []*apiextensionsv1.CustomResourceDefinition
	for _, sc := range s.crds.served {
		for _, r := range sc.rows {
			if r.GVK.GroupVersion() == gv {
				crds = append(crds, sc.crd)
				break
			}
		}
	}
	s.crds.mu.Unlock()
	slices.SortFunc(crds, func(a, b *apiextensionsv1.CustomResourceDefinition) int { return strings.Compare(a.Name, b.Name) })
	var specs []*spec3.OpenAPI
	for _, crd := range crds {
		doc, err := builder.BuildOpenAPIV3(crd, gv.Version, builder.Options{})
		if err != nil {
			return nil, fmt.Errorf("openapi of %s: %w", crd.Name, err)
		}
		specs = append(specs, doc)
	}
	if len(specs) == 0 {
		return nil, nil
	}
	merged, err := builder.MergeSpecsV3(specs...)
	if err != nil {
		return nil, err
	}
	return json.Marshal(merged)
}
