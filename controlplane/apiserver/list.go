package apiserver

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/store"
)

// listOptions are the query parameters of list and watch.
type listOptions struct {
	labelSel       labels.Selector
	fieldSel       fields.Selector
	limit          int
	startAfter     string // store key from the continue token
	continueRV     int64
	rv             string
	rvMatch        metav1.ResourceVersionMatch
	allowBookmarks bool
	sendInitial    *bool
	timeout        time.Duration
}

// continueToken is the opaque continue token, shaped like the real API
// server's: base64 of {"v":"meta.k8s.io/v1","rv":N,"start":"<key>"}.
type continueToken struct {
	APIVersion      string `json:"v"`
	ResourceVersion int64  `json:"rv"`
	StartKey        string `json:"start"`
}

func encodeContinue(rv int64, key, prefix string) string {
	b, _ := json.Marshal(continueToken{APIVersion: "meta.k8s.io/v1", ResourceVersion: rv, StartKey: strings.TrimPrefix(key, prefix)})
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeContinue(tok, prefix string) (string, int64, error) {
	bad := func(why string) error {
		return apierrors.NewBadRequest("continue key is not valid: " + why)
	}
	data, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil {
		return "", 0, bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
	}
	var ct continueToken
	if err := json.Unmarshal(data, &ct); err != nil {
		return "", 0, bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
	}
	if ct.APIVersion != "meta.k8s.io/v1" {
		return "", 0, bad("server does not recognize this encoded version")
	}
	if ct.ResourceVersion <= 0 || ct.StartKey == "" || strings.Contains(ct.StartKey, "..") {
		return "", 0, bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
	}
	return prefix + ct.StartKey, ct.ResourceVersion, nil
}

func parseListOptions(r *http.Request, res *registry.Resource, watch bool) (*listOptions, error) {
	q := r.URL.Query()
	lo := &listOptions{labelSel: labels.Everything(), fieldSel: fields.Everything()}
	var err error
	if v := q.Get("labelSelector"); v != "" {
		if lo.labelSel, err = labels.Parse(v); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
		}
	}
	if v := q.Get("fieldSelector"); v != "" {
		if lo.fieldSel, err = fields.ParseSelector(v); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid field selector: %v", err))
		}
		known := res.FieldLabels()
		for _, req := range lo.fieldSel.Requirements() {
			if !known[req.Field] {
				return nil, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", req.Field))
			}
		}
	}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid limit %q", v))
		}
		lo.limit = n
	}
	lo.rv = q.Get("resourceVersion")
	if _, err := parseRV(lo.rv); err != nil {
		return nil, err
	}
	lo.rvMatch = metav1.ResourceVersionMatch(q.Get("resourceVersionMatch"))
	if v := q.Get("continue"); v != "" {
		if lo.startAfter, lo.continueRV, err = decodeContinue(v, res.KeyPrefix()); err != nil {
			return nil, err
		}
	}
	lo.allowBookmarks, _ = queryBool(q, "allowWatchBookmarks")
	if b, ok := queryBool(q, "sendInitialEvents"); ok {
		lo.sendInitial = &b
	}
	if v := q.Get("timeoutSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid timeoutSeconds %q", v))
		}
		lo.timeout = time.Duration(n) * time.Second
	}
	if errs := lo.validate(watch, q.Get("continue") != ""); len(errs) > 0 {
		return nil, apierrors.NewInvalid(schema.GroupKind{Group: metav1.GroupName, Kind: "ListOptions"}, "", errs)
	}
	return lo, nil
}

// validate checks the combinations kube-apiserver's ValidateListOptions
// refuses (422).
func (lo *listOptions) validate(watch, hasContinue bool) field.ErrorList {
	var errs field.ErrorList
	p := field.NewPath("resourceVersionMatch")
	if watch {
		if lo.sendInitial != nil && lo.rvMatch != metav1.ResourceVersionMatchNotOlderThan {
			errs = append(errs, field.Forbidden(p, fmt.Sprintf("sendInitialEvents requires setting resourceVersionMatch to %s", metav1.ResourceVersionMatchNotOlderThan)))
		}
		if lo.sendInitial != nil && *lo.sendInitial && !lo.allowBookmarks {
			errs = append(errs, field.Forbidden(field.NewPath("allowWatchBookmarks"), "allowWatchBookmarks must be set to true when sendInitialEvents is true"))
		}
		if lo.rvMatch != "" {
			if lo.sendInitial == nil {
				errs = append(errs, field.Forbidden(p, "resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided"))
			}
			if lo.rvMatch != metav1.ResourceVersionMatchNotOlderThan {
				errs = append(errs, field.NotSupported(p, lo.rvMatch, []string{string(metav1.ResourceVersionMatchNotOlderThan)}))
			}
			if hasContinue {
				errs = append(errs, field.Forbidden(p, "resourceVersionMatch is forbidden when continue is provided"))
			}
		}
		return errs
	}
	if lo.rvMatch != "" {
		if lo.rv == "" {
			errs = append(errs, field.Forbidden(p, "resourceVersionMatch is forbidden unless resourceVersion is provided"))
		}
		if hasContinue {
			errs = append(errs, field.Forbidden(p, "resourceVersionMatch is forbidden when continue is provided"))
		}
		if lo.rvMatch != metav1.ResourceVersionMatchExact && lo.rvMatch != metav1.ResourceVersionMatchNotOlderThan {
			errs = append(errs, field.NotSupported(p, lo.rvMatch, []string{string(metav1.ResourceVersionMatchExact), string(metav1.ResourceVersionMatchNotOlderThan), ""}))
		}
		if lo.rvMatch == metav1.ResourceVersionMatchExact && lo.rv == "0" {
			errs = append(errs, field.Forbidden(p, `resourceVersionMatch "exact" is forbidden for resourceVersion "0"`))
		}
	}
	if lo.sendInitial != nil {
		errs = append(errs, field.Forbidden(field.NewPath("sendInitialEvents"), "sendInitialEvents is forbidden for list"))
	}
	return errs
}

func (lo *listOptions) matches(res *registry.Resource, obj runtime.Object) bool {
	if !lo.labelSel.Empty() && !lo.labelSel.Matches(labels.Set(registry.Meta(obj).GetLabels())) {
		return false
	}
	if !lo.fieldSel.Empty() && !lo.fieldSel.Matches(res.FieldSet(obj)) {
		return false
	}
	return true
}

// listItem is one listed object: its stored bytes, and the decoded object
// when a selector or the output format needed it.
type listItem struct {
	kv  store.KV
	obj runtime.Object
}

// labelsOnly decodes just metadata.labels from stored bytes.
type labelsOnly struct {
	Metadata struct {
		Labels map[string]string `json:"labels"`
	} `json:"metadata"`
}

// pageBudget bounds the stored bytes one page of a paged list holds. The
// API lets a server answer fewer items than the limit (with a continue
// token), and 500 objects of 1 MB would otherwise be half a gigabyte.
const pageBudget = 32 << 20

// errPageFull stops a store Range once a page holds what it may.
var errPageFull = errors.New("page full")

// checkList refuses a continue token of another list and waits for a
// resourceVersion the store has not reached yet; it returns the prefix to
// read.
func (s *Server) checkList(ctx context.Context, res *registry.Resource, ns string, lo *listOptions) (string, error) {
	prefix := res.PrefixFor(ns)
	if lo.startAfter != "" && !strings.HasPrefix(lo.startAfter, prefix) {
		return "", apierrors.NewBadRequest("continue key is not valid: it belongs to another list")
	}
	if want, _ := parseRV(lo.rv); want > 0 && lo.startAfter == "" {
		// A list not older than a revision the store has not reached waits
		// a moment for it, as kube-apiserver's watch cache does.
		if err := s.waitForRevision(ctx, want); err != nil {
			return "", err
		}
		if cur := s.store.Revision(); lo.rvMatch == metav1.ResourceVersionMatchExact && want != cur {
			// The store keeps no history to read an older snapshot from.
			return "", apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", want, cur))
		}
	}
	return prefix, nil
}

// paged reports whether a list answers one page (with a continue token)
// rather than everything: resourceVersion=0 lists are served whole, like
// the watch cache does.
func (lo *listOptions) paged() bool {
	return lo.limit > 0 && !(lo.rv == "0" && lo.startAfter == "")
}

// match decodes of kv what the selectors need and reports whether it
// matches. Objects are decoded only when needObj is set or a field
// selector needs them; a label selector alone decodes just the labels.
func (s *Server) match(res *registry.Resource, lo *listOptions, kv store.KV, needObj bool) (listItem, bool, error) {
	it := listItem{kv: kv}
	byLabel, byField := !lo.labelSel.Empty(), !lo.fieldSel.Empty()
	switch {
	case needObj || byField:
		obj, err := s.decodeKV(res, kv)
		if err != nil {
			return it, false, apierrors.NewInternalError(err)
		}
		if !lo.matches(res, obj) {
			return it, false, nil
		}
		if needObj {
			// Otherwise the item goes out from its stored bytes: the
			// decoded object would only be held to be dropped.
			it.obj = obj
		}
	case byLabel:
		var lb labelsOnly
		if err := json.Unmarshal(kv.Value, &lb); err != nil {
			return it, false, apierrors.NewInternalError(fmt.Errorf("decode %s: %w", kv.Key, err))
		}
		if !lo.labelSel.Matches(labels.Set(lb.Metadata.Labels)) {
			return it, false, nil
		}
	}
	return it, true, nil
}

// listErr is the API error of a failed Range: what the callbacks returned
// (API errors, a write to a client gone), or the store's, translated.
func listErr(err error, res *registry.Resource) error {
	var st apierrors.APIStatus
	if errors.As(err, &st) {
		return err
	}
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrExpired) || errors.Is(err, store.ErrClosed) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return storeErr(err, res, "")
	}
	return err
}

// listAll hands every matching object to emit, read from one snapshot of
// the store whose revision begin gets first, holding one object at a time.
func (s *Server) listAll(ctx context.Context, res *registry.Resource, ns string, lo *listOptions, needObj bool,
	begin func(rev int64) error, emit func(listItem) error) error {
	prefix, err := s.checkList(ctx, res, ns, lo)
	if err != nil {
		return err
	}
	_, err = s.store.Range(ctx, prefix, store.ListOptions{StartAfter: lo.startAfter}, begin, func(kv store.KV) error {
		it, ok, err := s.match(res, lo, kv, needObj)
		if err != nil || !ok {
			return err
		}
		return emit(it)
	})
	return listErr(err, res)
}

// listPage returns one page of a paged list: at most the limit of
// matching items and about pageBudget of their stored bytes, with the
// continue token of what follows.
func (s *Server) listPage(ctx context.Context, res *registry.Resource, ns string, lo *listOptions) ([]listItem, metav1.ListMeta, error) {
	prefix, err := s.checkList(ctx, res, ns, lo)
	if err != nil {
		return nil, metav1.ListMeta{}, err
	}
	filtering := !lo.labelSel.Empty() || !lo.fieldSel.Empty()
	var items []listItem
	var listRev int64
	var lastKey string
	size := 0
	start := lo.startAfter
	for {
		chunk := lo.limit
		if filtering && chunk < 500 {
			chunk = 500 // selectors drop items: read ahead in larger steps
		}
		scanned := 0
		lr, err := s.store.Range(ctx, prefix, store.ListOptions{StartAfter: start, Limit: chunk}, nil, func(kv store.KV) error {
			scanned++
			lastKey = kv.Key
			it, ok, err := s.match(res, lo, kv, false)
			if err != nil || !ok {
				return err
			}
			items = append(items, it)
			size += len(kv.Value)
			// At the chunk's last key the store ends by itself and counts
			// what follows; before it, stop the read here.
			if size >= pageBudget || (len(items) == lo.limit && scanned < chunk) {
				return errPageFull
			}
			return nil
		})
		if listRev == 0 {
			listRev = lr.Revision
		}
		full := errors.Is(err, errPageFull)
		if err != nil && !full {
			return nil, metav1.ListMeta{}, listErr(err, res)
		}
		rv := listRev
		if lo.continueRV > 0 {
			rv = lo.continueRV
		}
		lm := metav1.ListMeta{ResourceVersion: strconv.FormatInt(rv, 10)}
		switch {
		case full:
			// More may follow the last key read: a continue token (the
			// next page may come back short, even empty, as the API allows).
			lm.Continue = encodeContinue(rv, lastKey, res.KeyPrefix())
		case len(items) == lo.limit && lr.More:
			lm.Continue = encodeContinue(rv, lastKey, res.KeyPrefix())
			if !filtering {
				remaining := lr.Remaining
				lm.RemainingItemCount = &remaining
			}
		case lr.More && scanned > 0:
			start = lastKey // selectors dropped items: read on
			continue
		}
		return items, lm, nil
	}
}

// waitForRevision waits until the store has reached rev, or answers 504
// "Too large resource version" as kube-apiserver does.
func (s *Server) waitForRevision(ctx context.Context, rev int64) error {
	if s.store.Revision() >= rev {
		return nil
	}
	deadline := time.NewTimer(s.cfg.FreshnessWait)
	defer deadline.Stop()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.store.Revision() < rev {
		select {
		case <-ctx.Done():
			return storeErr(ctx.Err(), nil, "")
		case <-deadline.C:
			cur := s.store.Revision()
			err := apierrors.NewTimeoutError(fmt.Sprintf("Too large resource version: %d, current: %d", rev, cur), 1)
			err.ErrStatus.Details.Causes = []metav1.StatusCause{{Type: metav1.CauseTypeResourceVersionTooLarge, Message: "Too large resource version"}}
			return err
		case <-tick.C:
		}
	}
	return nil
}

// withResourceVersion splices "resourceVersion" into stored JSON (which
// starts {"kind":…,"apiVersion":…,"metadata":{…) without decoding it; nil
// when the bytes do not have that shape.
func withResourceVersion(value []byte, rev int64) []byte {
	j := metadataOpen(value)
	if j < 0 {
		return nil
	}
	out := make([]byte, 0, len(value)+48)
	out = append(out, value[:j]...)
	out = append(out, `"resourceVersion":"`...)
	out = strconv.AppendInt(out, rev, 10)
	out = append(out, '"')
	if j < len(value) && value[j] != '}' {
		out = append(out, ',')
	}
	return append(out, value[j:]...)
}

// partialMetaJSON builds the PartialObjectMetadata JSON of a stored object
// straight from its bytes: the "metadata" object is cut out and the
// resourceVersion spliced in, so metadata-only lists and watches (the
// garbage collector's informers over every resource) never decode the whole
// typed object. It returns nil when the bytes are not in the shape the store
// writes; callers then take the decoding path.
func partialMetaJSON(value []byte, rev int64) []byte {
	start, end, ok := metadataBounds(value)
	if !ok {
		return nil
	}
	out := make([]byte, 0, len(partialMetaHead)+24+end-start)
	out = append(out, partialMetaHead...)
	out = strconv.AppendInt(out, rev, 10)
	out = append(out, '"')
	if value[start+1] != '}' {
		out = append(out, ',')
	}
	out = append(out, value[start+1:end]...)
	return append(out, '}')
}

// jsonObjectEnd returns the index just past the JSON object that opens at
// data[start], or -1 when it does not close.
func jsonObjectEnd(data []byte, start int) int {
	depth, inString := 0, false
	for i := start; i < len(data); i++ {
		c := data[i]
		if inString {
			switch c {
			case '\\':
				i++
			case '"':
				inString = false
			}
			continue
		}
		switch c {
		case '"':
			inString = true
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return i + 1
			}
		}
	}
	return -1
}

func (s *Server) handleList(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	lo, err := parseListOptions(r, ri.res, false)
	if err != nil {
		return err
	}
	of, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	// Items are decoded (for a Table) one at a time as they are encoded.
	if lo.paged() {
		items, lm, err := s.listPage(ctx, ri.res, ri.namespace, lo)
		if err != nil {
			return err
		}
		return s.respondItems(w, r, of, ri.res, items, lm)
	}
	// The whole list streams out of one store snapshot.
	return s.streamList(w, r, of, ri.res, func(e listEncoder) error {
		err := s.listAll(ctx, ri.res, ri.namespace, lo, false, func(rev int64) error {
			return e.begin(metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10)})
		}, e.item)
		if err != nil {
			return err
		}
		return e.end()
	})
}

func (s *Server) handleWatch(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	lo, err := parseListOptions(r, res, true)
	if err != nil {
		return err
	}
	if ri.name != "" {
		sel := fields.OneTermEqualSelector("metadata.name", ri.name)
		if lo.fieldSel.Empty() {
			lo.fieldSel = sel
		} else {
			lo.fieldSel = fields.AndSelectors(lo.fieldSel, sel)
		}
	}
	of, ok := negotiateWatch(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	sendInitial := lo.sendInitial != nil && *lo.sendInitial
	timeout := lo.timeout
	if timeout == 0 {
		timeout = s.cfg.MaxWatchTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	prefix := res.PrefixFor(ri.namespace)
	// Without selectors the stored bytes are spliced into the events: the
	// whole object for plain JSON, its metadata for PartialObjectMetadata
	// (as JSON, or decoded from the metadata alone for protobuf).
	unfiltered := lo.labelSel.Empty() && lo.fieldSel.Empty()
	raw := unfiltered && !of.table && !of.protobuf
	metaOnly := unfiltered && of.protobuf
	conv := withResourceVersion
	if of.partial {
		conv = partialMetaJSON
	}
	fromRev, err := parseRV(lo.rv)
	if err != nil {
		return err
	}
	// rv "" and "0" (and sendInitialEvents) start with the current state as
	// ADDED events, like the real API server: they stream out of one store
	// snapshot, decoded only when the events need it, and the watch opens
	// at that snapshot's revision before the first of them.
	withInitial := sendInitial || fromRev == 0
	var ch <-chan store.Event
	var werr error
	if !withInitial {
		ch, werr = s.store.Watch(ctx, prefix, fromRev, store.WatchOptions{ProgressNotify: lo.allowBookmarks})
		if werr != nil && !errors.Is(werr, store.ErrExpired) {
			return storeErr(werr, res, "")
		}
	}

	ctype := "application/json"
	if werr != nil {
		// The expiry is answered as a JSON ERROR event.
		of.protobuf = false
	}
	if of.protobuf {
		ctype = "application/vnd.kubernetes.protobuf;stream=watch"
	}
	w.Header().Set("Content-Type", ctype)
	w.Header().Set("Transfer-Encoding", "chunked")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	_ = rc.Flush()

	tw := &watchWriter{s: s, w: w, rc: rc, r: r, res: res, of: of}
	if werr != nil {
		st := statusFor(apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", fromRev, s.store.Revision())))
		js, _ := json.Marshal(st)
		_ = tw.send("ERROR", js)
		return nil
	}
	if withInitial {
		all := *lo
		all.limit, all.startAfter, all.continueRV, all.rvMatch, all.rv = 0, "", 0, "", ""
		err := s.listAll(ctx, res, ri.namespace, &all, false, func(rev int64) error {
			fromRev = rev
			ch, werr = s.store.Watch(ctx, prefix, rev, store.WatchOptions{ProgressNotify: lo.allowBookmarks})
			return werr
		}, func(it listItem) error {
			return tw.sendItem(res, it, raw, metaOnly, conv)
		})
		if err != nil {
			// The initial state cannot go out with a hole in it: end the
			// watch (the client watches again).
			if !errors.Is(err, context.Canceled) {
				s.log.Debug("watch initial events", "resource", res.GroupResource().String(), "err", err)
			}
			return nil
		}
	}
	lastRev := fromRev
	if sendInitial {
		if err := tw.bookmark(lastRev, true); err != nil {
			return nil
		}
	}
	if err := rc.Flush(); err != nil {
		return nil
	}
	var tick <-chan time.Time
	if lo.allowBookmarks {
		t := time.NewTicker(s.cfg.BookmarkInterval)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick:
			if err := tw.bookmark(lastRev, false); err != nil {
				return nil
			}
		case ev, ok := <-ch:
			if !ok {
				return nil
			}
			if ev.Type == store.EventProgress {
				if ev.Revision > lastRev {
					lastRev = ev.Revision
				}
				if lo.allowBookmarks {
					if err := tw.bookmark(lastRev, false); err != nil {
						return nil
					}
				}
				continue
			}
			lastRev = ev.Revision
			if raw {
				if js := conv(ev.KV.Value, ev.KV.ModRevision); js != nil {
					if err := tw.send(eventType(ev), js); err != nil {
						return nil
					}
					continue
				}
			}
			if metaOnly {
				if pm := partialMetaObject(ev.KV.Value, ev.KV.ModRevision); pm != nil {
					if err := tw.sendObject(eventType(ev), pm); err != nil {
						return nil
					}
					continue
				}
			}
			typ, obj, err := s.watchTransform(res, lo, ev)
			if err != nil {
				s.log.Error("watch decode", "key", ev.KV.Key, "err", err)
				continue
			}
			if typ == "" {
				continue
			}
			if err := tw.sendObject(typ, obj); err != nil {
				return nil
			}
		}
	}
}

// eventType is the watch event type of a store event when no selector
// filters the watch.
func eventType(ev store.Event) string {
	switch {
	case ev.Type == store.EventDelete:
		return "DELETED"
	case ev.PrevKV == nil:
		return "ADDED"
	}
	return "MODIFIED"
}

// partialMetaObject decodes only the metadata of a stored object into a
// PartialObjectMetadata; nil when the bytes are not in the shape the store
// writes.
func partialMetaObject(value []byte, rev int64) *metav1.PartialObjectMetadata {
	js := partialMetaJSON(value, rev)
	if js == nil {
		return nil
	}
	pm := &metav1.PartialObjectMetadata{}
	if err := json.Unmarshal(js, pm); err != nil {
		return nil
	}
	return pm
}

// watchTransform turns a store event into a watch event type and object,
// applying selectors the way the real API server does: an object that stops
// matching is DELETED, one that starts matching is ADDED.
func (s *Server) watchTransform(res *registry.Resource, lo *listOptions, ev store.Event) (string, runtime.Object, error) {
	filtering := !lo.labelSel.Empty() || !lo.fieldSel.Empty()
	if ev.Type == store.EventDelete {
		kv := ev.KV
		obj, err := s.decodeKV(res, kv)
		if err != nil {
			return "", nil, err
		}
		if filtering && !lo.matches(res, obj) {
			return "", nil, nil
		}
		return "DELETED", obj, nil
	}
	obj, err := s.decodeKV(res, ev.KV)
	if err != nil {
		return "", nil, err
	}
	newMatch := !filtering || lo.matches(res, obj)
	if ev.PrevKV == nil {
		if !newMatch {
			return "", nil, nil
		}
		return "ADDED", obj, nil
	}
	oldMatch := true
	if filtering {
		old, err := s.decodeKV(res, *ev.PrevKV)
		if err != nil {
			return "", nil, err
		}
		oldMatch = lo.matches(res, old)
	}
	switch {
	case newMatch && oldMatch:
		return "MODIFIED", obj, nil
	case newMatch:
		return "ADDED", obj, nil
	case oldMatch:
		return "DELETED", obj, nil
	}
	return "", nil, nil
}

// watchWriter encodes and flushes watch events with a write deadline so a
// stuck client cannot hold the stream forever.
type watchWriter struct {
	s           *Server
	w           http.ResponseWriter
	rc          *http.ResponseController
	r           *http.Request
	res         *registry.Resource
	of          outputFormat
	sentColumns bool
}

func (tw *watchWriter) send(typ string, obj []byte) error {
	_ = tw.rc.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if tw.of.protobuf {
		// A protobuf watch is a stream of length-prefixed WatchEvents whose
		// object is the enveloped protobuf of the object.
		ev := metav1.WatchEvent{Type: typ, Object: runtime.RawExtension{Raw: obj}}
		frame := make([]byte, 4+ev.Size())
		binary.BigEndian.PutUint32(frame, uint32(len(frame)-4))
		if _, err := ev.MarshalToSizedBuffer(frame[4:]); err != nil {
			return err
		}
		if _, err := tw.w.Write(frame); err != nil {
			return err
		}
		return tw.rc.Flush()
	}
	// Assembled by hand: json.Marshal would re-validate the object bytes.
	line := make([]byte, 0, len(obj)+32)
	line = append(line, `{"type":"`...)
	line = append(line, typ...)
	line = append(line, `","object":`...)
	line = append(line, obj...)
	line = append(line, "}\n"...)
	if _, err := tw.w.Write(line); err != nil {
		return err
	}
	return tw.rc.Flush()
}

// sendItem sends one listed item as an ADDED event: from its stored bytes
// when raw (or, metaOnly, from its metadata alone) and they have the
// store's shape, else from the decoded object.
func (tw *watchWriter) sendItem(res *registry.Resource, it listItem, raw, metaOnly bool, conv func([]byte, int64) []byte) error {
	if it.obj == nil && raw {
		if js := conv(it.kv.Value, it.kv.ModRevision); js != nil {
			return tw.send("ADDED", js)
		}
	}
	if it.obj == nil && metaOnly {
		if pm := partialMetaObject(it.kv.Value, it.kv.ModRevision); pm != nil {
			return tw.sendObject("ADDED", pm)
		}
	}
	obj := it.obj
	if obj == nil {
		var err error
		if obj, err = tw.s.decodeKV(res, it.kv); err != nil {
			// The initial state cannot go out with a hole in it: end
			// the watch (the client watches again).
			tw.s.log.Error("watch decode", "key", it.kv.Key, "err", err)
			return err
		}
	}
	return tw.sendObject("ADDED", obj)
}

func (tw *watchWriter) sendObject(typ string, obj runtime.Object) error {
	var v interface{} = obj
	switch {
	case tw.of.table:
		t, err := tw.s.toTable(tw.r, tw.res, []runtime.Object{obj}, metav1.ListMeta{ResourceVersion: registry.Meta(obj).GetResourceVersion()}, !tw.sentColumns)
		if err != nil {
			return err
		}
		tw.sentColumns = true
		v = t
	case tw.of.partial:
		pm, ok := obj.(*metav1.PartialObjectMetadata)
		if !ok {
			pm = partialMeta(obj)
		}
		v = pm
	}
	js, err := tw.encode(v)
	if err != nil {
		return err
	}
	return tw.send(typ, js)
}

// encode encodes an event's object in the stream's format: enveloped
// protobuf or JSON.
func (tw *watchWriter) encode(v interface{}) ([]byte, error) {
	if !tw.of.protobuf {
		return json.Marshal(v)
	}
	obj, ok := v.(runtime.Object)
	if !ok {
		return nil, fmt.Errorf("encode watch event: %T is no object", v)
	}
	var buf bytes.Buffer
	if err := protobufSerializer.Encode(obj, &buf); err != nil {
		return nil, fmt.Errorf("encode watch event: %w", err)
	}
	return buf.Bytes(), nil
}

// bookmark sends a BOOKMARK: an empty object of the kind carrying only the
// resourceVersion (and the initial-events-end annotation when asked).
func (tw *watchWriter) bookmark(rev int64, initialEnd bool) error {
	obj := tw.res.New()
	obj.GetObjectKind().SetGroupVersionKind(tw.res.GVK)
	m := registry.Meta(obj)
	m.SetResourceVersion(strconv.FormatInt(rev, 10))
	if initialEnd {
		m.SetAnnotations(map[string]string{metav1.InitialEventsAnnotationKey: "true"})
	}
	var v interface{} = obj
	if tw.of.partial {
		v = partialMeta(obj)
	}
	if tw.of.table {
		t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: metav1.ListMeta{ResourceVersion: m.GetResourceVersion()}}
		v = t
	}
	js, err := tw.encode(v)
	if err != nil {
		return err
	}
	return tw.send("BOOKMARK", js)
}
