package apiserver

import (
	"context"
	"net/http"
	"strconv"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// requestTimeout bounds every request but watches.
const requestTimeout = 60 * time.Second

// serveResource is the one generic REST handler: it turns an HTTP request
// for any row of the table into a call of the generic object store
// (objects.go), or of the row's subresource handler.
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
	switch {
	case ri.sub != nil && ri.sub.Handler != nil:
		err = s.handleSubresource(ctx, w, r, ri)
	case ri.verb == "get":
		err = s.handleGet(ctx, w, r, ri)
	case ri.verb == "list":
		err = s.handleList(ctx, w, r, ri)
	case ri.verb == "watch":
		err = s.handleWatch(ctx, w, r, ri)
	case ri.verb == "create":
		err = s.handleCreate(ctx, w, r, ri)
	case ri.verb == "update":
		err = s.handleUpdate(ctx, w, r, ri)
	case ri.verb == "patch":
		err = s.handlePatch(ctx, w, r, ri)
	case ri.verb == "delete":
		err = s.handleDelete(ctx, w, r, ri)
	case ri.verb == "deletecollection":
		err = s.handleDeleteCollection(ctx, w, r, ri)
	default:
		err = apierrors.NewMethodNotSupported(ri.res.GroupResource(), r.Method)
	}
	if err != nil {
		writeError(w, err)
	}
}

// updateStrategy is the strategy of an update through ri: a view
// subresource's, else the resource's own.
func (ri *requestInfo) updateStrategy() registry.UpdateStrategy {
	if ri.sub != nil {
		return ri.sub.Update
	}
	return ri.res.Strategy
}

// handleSubresource serves a subresource with a handler of its own.
func (s *Server) handleSubresource(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	if ri.verb == "patch" {
		// A patch of an unknown type is refused before anything is read,
		// as for the object itself.
		if _, err := patchType(r); err != nil {
			return err
		}
		if _, err := parseFieldValidation(r); err != nil {
			return err
		}
	}
	dryRun, err := isDryRun(r)
	if err != nil {
		return err
	}
	body := &requestBody{r: r}
	req := &registry.Request{Verb: ri.verb, Namespace: ri.namespace, Name: ri.name, DryRun: dryRun,
		Objects: resourceObjects{s, ri.res}, Body: body, Others: getter{s}, HTTP: r, Writer: w}
	obj, code, err := ri.sub.Handler(ctx, req)
	if err != nil {
		return err
	}
	if obj == nil {
		return nil // the handler answered itself
	}
	addWarnings(w, body.warnings)
	return s.respond(w, r, code, nil, obj)
}

func (s *Server) handleGet(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	obj, _, err := s.getObject(ctx, ri.res, ri.namespace, ri.name)
	if err != nil {
		return err
	}
	return s.respond(w, r, http.StatusOK, ri.res, obj)
}

func (s *Server) handleCreate(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	obj := res.New()
	warnings, err := decodeBody(r, obj, res.GVK)
	if err != nil {
		return err
	}
	dryRun, err := isDryRun(r)
	if err != nil {
		return err
	}
	data, rev, err := s.createObject(ctx, res, ri.namespace, obj, dryRun)
	if err != nil {
		return err
	}
	addWarnings(w, warnings)
	if data == nil {
		return s.respond(w, r, http.StatusCreated, res, obj)
	}
	return s.respondStored(w, r, http.StatusCreated, res, obj, data, rev)
}

// respondStored answers a write with the object just stored: for plain
// JSON the stored bytes with the resourceVersion spliced in, saving an encode.
func (s *Server) respondStored(w http.ResponseWriter, r *http.Request, code int, res *registry.Resource, obj runtime.Object, data []byte, rev int64) error {
	if of, ok := negotiateObject(r.Header.Get("Accept")); ok && of == (outputFormat{}) {
		if js := withResourceVersion(data, rev); js != nil {
			writeRaw(w, code, js, false)
			return nil
		}
	}
	return s.respond(w, r, code, res, obj)
}

func (s *Server) handleUpdate(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	dryRun, err := isDryRun(r)
	if err != nil {
		return err
	}
	body := res.New()
	warnings, err := decodeBody(r, body, res.GVK)
	if err != nil {
		return err
	}
	// Like upstream, the body's name and namespace are checked against the
	// URL before storage, so a mismatch is 400 whether or not the object exists.
	if bm := registry.Meta(body); bm.GetName() != "" && bm.GetName() != ri.name {
		return apierrors.NewBadRequest("the name of the object (" + bm.GetName() + ") does not match the name on the URL (" + ri.name + ")")
	} else if res.Namespaced && bm.GetNamespace() != "" && bm.GetNamespace() != ri.namespace {
		return apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
	}
	if _, err := parseRV(registry.Meta(body).GetResourceVersion()); err != nil {
		return err
	}
	obj, err := s.updateObject(ctx, res, ri.namespace, ri.name, ri.updateStrategy(), dryRun, func(runtime.Object) (runtime.Object, error) {
		return body.DeepCopyObject(), nil
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings)
	return s.respond(w, r, http.StatusOK, res, obj)
}

func (s *Server) handlePatch(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	if _, err := patchType(r); err != nil {
		return err
	}
	if _, err := parseFieldValidation(r); err != nil {
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
	obj, err := s.updateObject(ctx, res, ri.namespace, ri.name, ri.updateStrategy(), dryRun, func(cur runtime.Object) (runtime.Object, error) {
		nobj := res.New()
		w, err := patchBody(r, patch, cur, nobj, res.GVK)
		warnings = w
		// A resourceVersion the patch left as it was is no precondition:
		// on a retry it is the newer object's.
		return nobj, err
	})
	if err != nil {
		return err
	}
	addWarnings(w, warnings)
	return s.respond(w, r, http.StatusOK, res, obj)
}

func (s *Server) handleDelete(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	if ri.sub != nil {
		return apierrors.NewMethodNotSupported(ri.res.GroupResource(), "delete "+ri.sub.Name)
	}
	opts, err := deleteOptions(r)
	if err != nil {
		return err
	}
	obj, code, err := s.deleteObject(ctx, ri.res, ri.namespace, ri.name, opts)
	if err != nil {
		return err
	}
	return s.respond(w, r, code, ri.res, obj)
}

// handleDeleteCollection deletes what a list would return. Every object is
// checked before any is deleted (an immortal or refusing one fails the
// whole request, with nothing gone); then each is deleted in turn and goes
// out in the answer as it is, so neither pass holds more than one object.
func (s *Server) handleDeleteCollection(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	opts, err := deleteOptions(r)
	if err != nil {
		return err
	}
	lo, err := parseListOptions(r, ri.res, false)
	if err != nil {
		return err
	}
	of, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	lo.limit = 0
	type objName struct{ namespace, name string }
	var names []objName
	var listRev int64
	err = s.listAll(ctx, ri.res, ri.namespace, lo, true, func(rev int64) error {
		listRev = rev
		return nil
	}, func(it listItem) error {
		if _, _, err := ri.res.Strategy.BeginDelete(it.obj.DeepCopyObject(), opts); err != nil {
			return err
		}
		m := registry.Meta(it.obj)
		names = append(names, objName{m.GetNamespace(), m.GetName()})
		return nil
	})
	if err != nil {
		return err
	}
	return s.streamList(w, r, of, ri.res, func(e listEncoder) error {
		if err := e.begin(metav1.ListMeta{ResourceVersion: strconv.FormatInt(listRev, 10)}); err != nil {
			return err
		}
		for _, n := range names {
			if err := ctx.Err(); err != nil {
				return storeErr(err, ri.res, "") // the client is gone: stop deleting
			}
			obj, _, err := s.deleteObject(ctx, ri.res, n.namespace, n.name, opts)
			if apierrors.IsNotFound(err) {
				continue
			}
			if err != nil {
				return err
			}
			if err := e.item(listItem{obj: obj}); err != nil {
				return err
			}
		}
		return e.end()
	})
}
