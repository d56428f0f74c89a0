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

func parseListOptions(r *http.Request, res *registry.Resource) (*listOptions, error) {
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
	switch lo.rvMatch {
	case "", metav1.ResourceVersionMatchNotOlderThan, metav1.ResourceVersionMatchExact:
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid resourceVersionMatch %q: must be NotOlderThan or Exact", lo.rvMatch))
	}
	if v := q.Get("continue"); v != "" {
		if lo.startAfter, lo.continueRV, err = decodeContinue(v, res.KeyPrefix()); err != nil {
			return nil, err
		}
	}
	lo.allowBookmarks = q.Get("allowWatchBookmarks") == "true"
	if v := q.Get("sendInitialEvents"); v != "" {
		b := v == "true"
		lo.sendInitial = &b
	}
	if v := q.Get("timeoutSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("invalid timeoutSeconds %q", v))
		}
		lo.timeout = time.Duration(n) * time.Second
	}
	return lo, nil
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

// listObjects returns one page of matching objects, the revision the list
// reflects, the continue token and the remaining count.
func (s *Server) listObjects(ctx context.Context, res *registry.Resource, ns string, lo *listOptions) ([]runtime.Object, int64, string, *int64, error) {
	items, rev, cont, remaining, err := s.listItems(ctx, res, ns, lo, true)
	if err != nil {
		return nil, 0, "", nil, err
	}
	objs := make([]runtime.Object, len(items))
	for i, it := range items {
		objs[i] = it.obj
	}
	return objs, rev, cont, remaining, nil
}

// listItems pages through the store, filtering by the selectors. Objects
// are decoded only when needObj is set or a field selector needs them; a
// label selector alone decodes just the labels.
func (s *Server) listItems(ctx context.Context, res *registry.Resource, ns string, lo *listOptions, needObj bool) ([]listItem, int64, string, *int64, error) {
	prefix := res.PrefixFor(ns)
	if lo.startAfter != "" && !strings.HasPrefix(lo.startAfter, prefix) {
		return nil, 0, "", nil, apierrors.NewBadRequest("continue key is not valid: it belongs to another list")
	}
	if lo.rvMatch == metav1.ResourceVersionMatchExact && lo.rv != "" {
		want, _ := parseRV(lo.rv)
		if cur := s.store.Revision(); want != cur {
			return nil, 0, "", nil, apierrors.NewResourceExpired(fmt.Sprintf("too old resource version: %d (%d)", want, cur))
		}
	}
	// resourceVersion=0 lists are served whole, like the watch cache does.
	limit := lo.limit
	if lo.rv == "0" && lo.startAfter == "" {
		limit = 0
	}
	byLabel, byField := !lo.labelSel.Empty(), !lo.fieldSel.Empty()
	filtering := byLabel || byField
	var items []listItem
	start := lo.startAfter
	var listRev int64
	for {
		page := limit
		if filtering && page > 0 && page < 500 {
			page = 500
		}
		lr, err := s.store.List(ctx, prefix, store.ListOptions{StartAfter: start, Limit: page})
		if err != nil {
			return nil, 0, "", nil, storeErr(err, res, "")
		}
		if listRev == 0 {
			listRev = lr.Revision
		}
		if items == nil && !filtering {
			items = make([]listItem, 0, len(lr.Items))
		}
		for i, kv := range lr.Items {
			it := listItem{kv: kv}
			if needObj || byField {
				obj, err := s.decodeKV(res, kv)
				if err != nil {
					return nil, 0, "", nil, apierrors.NewInternalError(err)
				}
				if !lo.matches(res, obj) {
					continue
				}
				if needObj {
					// Otherwise the item goes out from its stored bytes:
					// the decoded object would only be held to be dropped.
					it.obj = obj
				}
			} else if byLabel {
				var lb labelsOnly
				if err := json.Unmarshal(kv.Value, &lb); err != nil {
					return nil, 0, "", nil, apierrors.NewInternalError(fmt.Errorf("decode %s: %w", kv.Key, err))
				}
				if !lo.labelSel.Matches(labels.Set(lb.Metadata.Labels)) {
					continue
				}
			}
			items = append(items, it)
			if limit > 0 && len(items) == limit {
				if i < len(lr.Items)-1 || lr.More {
					rv := listRev
					if lo.continueRV > 0 {
						rv = lo.continueRV
					}
					var remaining *int64
					if !filtering && lr.More {
						r := lr.Remaining + int64(len(lr.Items)-1-i)
						remaining = &r
					} else if !filtering {
						r := int64(len(lr.Items) - 1 - i)
						remaining = &r
					}
					return items, rv, encodeContinue(rv, kv.Key, res.KeyPrefix()), remaining, nil
				}
				break
			}
		}
		if !lr.More || len(lr.Items) == 0 || (limit > 0 && len(items) == limit) {
			break
		}
		start = lr.Items[len(lr.Items)-1].Key
	}
	if lo.continueRV > 0 {
		listRev = lo.continueRV
	}
	return items, listRev, "", nil, nil
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
	lo, err := parseListOptions(r, ri.res)
	if err != nil {
		return err
	}
	of, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	// Items are decoded (for a Table) one at a time as they are encoded.
	items, rev, cont, remaining, err := s.listItems(ctx, ri.res, ri.namespace, lo, false)
	if err != nil {
		return err
	}
	return s.respondItems(w, r, of, ri.res, items, metav1.ListMeta{ResourceVersion: strconv.FormatInt(rev, 10), Continue: cont, RemainingItemCount: remaining})
}

// respondList writes a list as a typed list, a Table or metadata only. The
// list JSON is assembled item by item (no reflection over the list type).
func (s *Server) respondList(w http.ResponseWriter, r *http.Request, res *registry.Resource, objs []runtime.Object, lm metav1.ListMeta) error {
	of, ok := negotiate(r.Header.Get("Accept"))
	if !ok {
		return notAcceptable(r.Header.Get("Accept"))
	}
	items := make([]listItem, len(objs))
	for i, o := range objs {
		items[i].obj = o
	}
	return s.respondItems(w, r, of, res, items, lm)
}

func (s *Server) handleWatch(ctx context.Context, w http.ResponseWriter, r *http.Request, ri *requestInfo) error {
	res := ri.res
	lo, err := parseListOptions(r, res)
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
	switch {
	case sendInitial && (lo.rvMatch != metav1.ResourceVersionMatchNotOlderThan || !lo.allowBookmarks):
		return apierrors.NewBadRequest("sendInitialEvents=true requires resourceVersionMatch=NotOlderThan and allowWatchBookmarks=true")
	case lo.sendInitial == nil && lo.rvMatch != "":
		return apierrors.NewBadRequest("resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided")
	}
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
	var initial []listItem
	fromRev, err := parseRV(lo.rv)
	if err != nil {
		return err
	}
	// rv "" and "0" (and sendInitialEvents) start with the current state as
	// ADDED events, like the real API server. Objects are decoded only when
	// the events need them, one at a time as they are sent.
	if sendInitial || fromRev == 0 {
		all := *lo
		all.limit, all.startAfter, all.continueRV, all.rvMatch, all.rv = 0, "", 0, "", ""
		initial, fromRev, _, _, err = s.listItems(ctx, res, ri.namespace, &all, false)
		if err != nil {
			return err
		}
	}
	ch, werr := s.store.Watch(ctx, prefix, fromRev, store.WatchOptions{ProgressNotify: lo.allowBookmarks})
	if werr != nil && !errors.Is(werr, store.ErrExpired) {
		return storeErr(werr, res, "")
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
	for i := range initial {
		it := initial[i]
		initial[i] = listItem{}
		if err := tw.sendItem(res, it, raw, metaOnly, conv); err != nil {
			return nil
		}
	}
	initial = nil
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
