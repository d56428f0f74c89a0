package apiserver

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"

	"sigs.k8s.io/yaml"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Lists are encoded item by item straight into the response, as
// kube-apiserver's streaming collection encoders do (KEP-5116): a list of
// 10,000 pods then holds only the page's stored values and a small write
// buffer, instead of the values, an 8 MB body assembled from them and a
// spliced copy of each item on top. The bytes are the same as encoding the
// whole list at once.

// listWriteBufSize is the buffer a streamed list goes out through: large
// enough that HTTP/2 frames and TLS records leave full, small next to a big
// list's body.
const listWriteBufSize = 32 << 10

var listWriterPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, listWriteBufSize) }}

// listSink is what a list is encoded into: the pooled bufio.Writer over
// the response, or a bytes.Buffer when the whole document is needed (YAML).
type listSink interface {
	io.Writer
	io.StringWriter
	io.ByteWriter
}

// metadataOpen returns the index just past `"metadata":{` in stored JSON
// (which starts {"kind":…,"apiVersion":…,"metadata":{…), or -1 when the
// bytes do not have that shape.
func metadataOpen(value []byte) int {
	const meta = `"metadata":{`
	i := bytes.Index(value, []byte(meta))
	if i < 0 || i > 160 || !bytes.HasPrefix(value, []byte(`{"kind":`)) {
		return -1
	}
	return i + len(meta)
}

// writeWithResourceVersion writes stored JSON with "resourceVersion"
// spliced in as the first metadata field (the bytes withResourceVersion
// returns) without copying the value; false, and nothing written, when the
// bytes do not have the store's shape.
func writeWithResourceVersion(dst listSink, value []byte, rev int64, scratch []byte) (bool, error) {
	j := metadataOpen(value)
	if j < 0 {
		return false, nil
	}
	dst.Write(value[:j])
	dst.WriteString(`"resourceVersion":"`)
	dst.Write(strconv.AppendInt(scratch[:0], rev, 10))
	dst.WriteByte('"')
	if j < len(value) && value[j] != '}' {
		dst.WriteByte(',')
	}
	_, err := dst.Write(value[j:])
	return true, err
}

// partialMetaHead opens every PartialObjectMetadata cut from stored bytes.
const partialMetaHead = `{"kind":"PartialObjectMetadata","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"`

// metadataBounds returns the bounds of the "metadata" object in stored
// JSON ([start] is its '{', end is just past its '}'), or ok false when
// the bytes do not have the store's shape.
func metadataBounds(value []byte) (start, end int, ok bool) {
	j := metadataOpen(value)
	if j < 0 {
		return 0, 0, false
	}
	start = j - 1
	end = jsonObjectEnd(value, start)
	return start, end, end >= 0
}

// writePartialMeta writes the PartialObjectMetadata JSON of stored bytes
// (the bytes partialMetaJSON returns) without copying them; false, and
// nothing written, when the bytes do not have the store's shape.
func writePartialMeta(dst listSink, value []byte, rev int64, scratch []byte) (bool, error) {
	start, end, ok := metadataBounds(value)
	if !ok {
		return false, nil
	}
	dst.WriteString(partialMetaHead)
	dst.Write(strconv.AppendInt(scratch[:0], rev, 10))
	dst.WriteByte('"')
	if value[start+1] != '}' {
		dst.WriteByte(',')
	}
	dst.Write(value[start+1 : end])
	_, err := dst.WriteString("}")
	return true, err
}

// listEncoder writes one list document item by item: begin with the
// list's metadata, each item as it comes, then end. Nothing of the list is
// held but the item being written, so a list of any size costs one item's
// memory (with the stored values coming from a store snapshot, Range).
type listEncoder interface {
	begin(lm metav1.ListMeta) error
	item(it listItem) error
	end() error
}

// newListEncoder picks the document for the negotiated format: a typed
// list, a PartialObjectMetadataList or a Table, in JSON or in YAML.
func (s *Server) newListEncoder(dst listSink, r *http.Request, of outputFormat, res *registry.Resource) listEncoder {
	var e listEncoder
	if of.table {
		e = &tableEncoder{s: s, dst: dst, r: r, res: res}
	} else {
		e = &jsonListEncoder{s: s, dst: dst, of: of, res: res}
	}
	if of.yaml {
		return &yamlListEncoder{dst: dst, json: e}
	}
	return e
}

// jsonListEncoder writes a typed list (kind+"List") or a
// PartialObjectMetadataList. Items go out from their stored bytes when
// they have the store's shape, else from the decoded object.
type jsonListEncoder struct {
	s       *Server
	dst     listSink
	of      outputFormat
	res     *registry.Resource
	n       int
	scratch [24]byte
}

func (e *jsonListEncoder) begin(lm metav1.ListMeta) error {
	kind, apiVersion := e.res.GVK.Kind+"List", e.res.GVK.GroupVersion().String()
	if e.of.partial {
		kind, apiVersion = "PartialObjectMetadataList", "meta.k8s.io/v1"
	}
	lmJSON, err := json.Marshal(lm)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	_, err = fmt.Fprintf(e.dst, `{"kind":%q,"apiVersion":%q,"metadata":%s,"items":[`, kind, apiVersion, lmJSON)
	return err
}

func (e *jsonListEncoder) item(it listItem) error {
	if e.n > 0 {
		e.dst.WriteByte(',')
	}
	e.n++
	return e.writeItem(e.dst, it)
}

// writeItem writes one item's JSON, with no separator.
func (e *jsonListEncoder) writeItem(dst listSink, it listItem) error {
	if it.obj == nil {
		conv := writeWithResourceVersion
		if e.of.partial {
			conv = writePartialMeta
		}
		done, err := conv(dst, it.kv.Value, it.kv.ModRevision, e.scratch[:])
		if err != nil || done {
			return err
		}
	}
	obj := it.obj
	if obj == nil {
		var err error
		if obj, err = e.s.decodeKV(e.res, it.kv); err != nil {
			return apierrors.NewInternalError(err)
		}
	}
	var v interface{} = obj
	if e.of.partial {
		v = partialMeta(obj)
	}
	js, err := json.Marshal(v)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	_, err = dst.Write(js)
	return err
}

func (e *jsonListEncoder) end() error {
	_, err := e.dst.WriteString("]}")
	return err
}

// tableEncoder writes the Table of the items row by row: each item is
// decoded, turned into its row and dropped before the next, so a Table of
// 10,000 pods never holds 10,000 decoded pods. The head (columns, list
// metadata) is the Table toTable makes with no rows; the bytes are those of
// encoding the whole Table at once.
type tableEncoder struct {
	s   *Server
	dst listSink
	r   *http.Request
	res *registry.Resource
	lm  metav1.ListMeta
	n   int
	one [1]runtime.Object
}

func (e *tableEncoder) begin(lm metav1.ListMeta) error {
	e.lm = lm
	head, err := e.s.toTable(e.r, e.res, nil, lm, true)
	if err != nil {
		return err
	}
	js, err := encodeJSON(head)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	const noRows = `"rows":[]}`
	if !bytes.HasSuffix(js, []byte(noRows)) {
		return apierrors.NewInternalError(fmt.Errorf("table head ends %q, not with its rows", js[max(0, len(js)-16):]))
	}
	_, err = e.dst.Write(js[:len(js)-2])
	return err
}

func (e *tableEncoder) item(it listItem) error {
	if e.n > 0 {
		e.dst.WriteByte(',')
	}
	e.n++
	return e.writeItem(e.dst, it)
}

func (e *tableEncoder) writeItem(dst listSink, it listItem) error {
	obj := it.obj
	if obj == nil {
		var err error
		if obj, err = e.s.decodeKV(e.res, it.kv); err != nil {
			return apierrors.NewInternalError(err)
		}
	}
	e.one[0] = obj
	t, err := e.s.toTable(e.r, e.res, e.one[:], e.lm, false)
	e.one[0] = nil
	if err != nil {
		return err
	}
	row, err := json.Marshal(&t.Rows[0])
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	_, err = dst.Write(row)
	return err
}

func (e *tableEncoder) end() error {
	_, err := e.dst.WriteString("]}")
	return err
}

// itemWriter is a JSON list encoder that can write one item alone.
type itemWriter interface {
	listEncoder
	writeItem(dst listSink, it listItem) error
}

// yamlListEncoder writes the YAML of the document its JSON encoder would
// write, item by item: sigs.k8s.io/yaml writes a document's top-level keys
// sorted, and a sequence's entries as "- " and the entry's own YAML
// indented by two, so the list's array goes out between the keys that sort
// before and after its own, each entry converted alone. The bytes are those
// of converting the whole JSON document at once.
type yamlListEncoder struct {
	dst   listSink
	json  listEncoder
	key   string   // the array's key: items, or rows for a Table
	after [][]byte // the head's top-level entries that sort after key
	n     int
	buf   bytes.Buffer
}

func (e *yamlListEncoder) begin(lm metav1.ListMeta) error {
	e.key = "items"
	if _, ok := e.json.(*tableEncoder); ok {
		e.key = "rows"
	}
	// The head: the document with no items, converted whole.
	var head bytes.Buffer
	orig := setSink(e.json, &head)
	err := e.json.begin(lm)
	if err == nil {
		err = e.json.end()
	}
	setSink(e.json, orig)
	if err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(head.Bytes())
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	for _, entry := range topLevelEntries(y) {
		k, _, _ := bytes.Cut(entry, []byte(":"))
		switch {
		case string(k) == e.key:
			// "items: []": written at the end if no item comes.
		case string(k) < e.key:
			if _, err := e.dst.Write(entry); err != nil {
				return err
			}
		default:
			e.after = append(e.after, entry)
		}
	}
	return nil
}

func (e *yamlListEncoder) item(it listItem) error {
	e.buf.Reset()
	if err := e.json.(itemWriter).writeItem(&e.buf, it); err != nil {
		return err
	}
	y, err := yaml.JSONToYAML(e.buf.Bytes())
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	if e.n == 0 {
		e.dst.WriteString(e.key + ":\n")
	}
	e.n++
	for i, line := range bytes.SplitAfter(y, []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		if i == 0 {
			e.dst.WriteString("- ")
		} else {
			e.dst.WriteString("  ")
		}
		if _, err := e.dst.Write(line); err != nil {
			return err
		}
	}
	return nil
}

func (e *yamlListEncoder) end() error {
	if e.n == 0 {
		e.dst.WriteString(e.key + ": []\n")
	}
	for _, entry := range e.after {
		if _, err := e.dst.Write(entry); err != nil {
			return err
		}
	}
	return nil
}

// setSink points a JSON list encoder at another sink, returning the old one.
func setSink(e listEncoder, dst listSink) listSink {
	switch e := e.(type) {
	case *jsonListEncoder:
		old := e.dst
		e.dst, e.n = dst, 0
		return old
	case *tableEncoder:
		old := e.dst
		e.dst, e.n = dst, 0
		return old
	}
	return nil
}

// topLevelEntries splits a YAML document into its top-level entries: a
// line at column 0 and the indented lines under it.
func topLevelEntries(y []byte) [][]byte {
	var out [][]byte
	start := 0
	for i := 0; i < len(y); {
		j := bytes.IndexByte(y[i:], '\n')
		if j < 0 {
			j = len(y) - i - 1
		}
		if i > start && y[i] != ' ' && y[i] != '-' {
			out = append(out, y[start:i])
			start = i
		}
		i += j + 1
	}
	if start < len(y) {
		out = append(out, y[start:])
	}
	return out
}

// streamDoc answers a document that encode writes straight into the
// response. An error while nothing has left the write buffer is
// returned (and answered as a Status); after that the 200 is out, so the
// response is cut off instead: the client sees a broken body, never a
// short list that looks whole.
func (s *Server) streamDoc(w http.ResponseWriter, res *registry.Resource, ctype string, encode func(listSink) error) error {
	sw := &sentWriter{w: w}
	bw := listWriterPool.Get().(*bufio.Writer)
	bw.Reset(sw)
	defer func() {
		bw.Reset(nil)
		listWriterPool.Put(bw)
	}()
	w.Header().Set("Content-Type", ctype)
	err := encode(bw)
	if err == nil {
		if ctype == "application/json" {
			bw.WriteByte('\n')
		}
		err = bw.Flush()
	}
	switch {
	case err == nil:
		return nil
	case !sw.sent:
		return err
	case sw.err != nil:
		return nil // the client went away: nothing more to tell it
	}
	s.log.Error("list encoding failed after the response began; aborting it", "resource", res.GroupResource().String(), "err", err)
	panic(http.ErrAbortHandler)
}

// sentWriter remembers whether anything reached the response, and the
// error writing it.
type sentWriter struct {
	w    http.ResponseWriter
	sent bool
	err  error
}

func (sw *sentWriter) Write(p []byte) (int, error) {
	sw.sent = true
	n, err := sw.w.Write(p)
	if err != nil && sw.err == nil {
		sw.err = err
	}
	return n, err
}

// respondItems writes one page of a list as a typed list, a Table or
// metadata only, in JSON or YAML. Items without a decoded object are
// decoded as they are encoded.
func (s *Server) respondItems(w http.ResponseWriter, r *http.Request, of outputFormat, res *registry.Resource, items []listItem, lm metav1.ListMeta) error {
	return s.streamList(w, r, of, res, func(e listEncoder) error {
		if err := e.begin(lm); err != nil {
			return err
		}
		for i := range items {
			it := items[i]
			items[i] = listItem{} // the collector may take it once written
			if err := e.item(it); err != nil {
				return err
			}
		}
		return e.end()
	})
}

// streamList answers a list document that produce writes through the
// encoder for the negotiated format, straight into the response.
func (s *Server) streamList(w http.ResponseWriter, r *http.Request, of outputFormat, res *registry.Resource, produce func(listEncoder) error) error {
	ctype := "application/json"
	if of.yaml {
		ctype = "application/yaml"
	}
	return s.streamDoc(w, res, ctype, func(dst listSink) error {
		return produce(s.newListEncoder(dst, r, of, res))
	})
}
