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

// encodeListJSON encodes a typed list (kind+"List") or a
// PartialObjectMetadataList into dst. Items go out from their stored bytes
// when they have the store's shape, else from the decoded object. Each
// item is dropped from items once written so the garbage collector can
// take its bytes while the rest of the list is still going out.
func (s *Server) encodeListJSON(dst listSink, of outputFormat, res *registry.Resource, items []listItem, lm metav1.ListMeta) error {
	kind, apiVersion := res.GVK.Kind+"List", res.GVK.GroupVersion().String()
	if of.partial {
		kind, apiVersion = "PartialObjectMetadataList", "meta.k8s.io/v1"
	}
	lmJSON, err := json.Marshal(lm)
	if err != nil {
		return apierrors.NewInternalError(err)
	}
	fmt.Fprintf(dst, `{"kind":%q,"apiVersion":%q,"metadata":%s,"items":[`, kind, apiVersion, lmJSON)
	conv := writeWithResourceVersion
	if of.partial {
		conv = writePartialMeta
	}
	var scratch [24]byte
	for i := range items {
		it := items[i]
		items[i] = listItem{}
		if i > 0 {
			dst.WriteByte(',')
		}
		if it.obj == nil {
			done, err := conv(dst, it.kv.Value, it.kv.ModRevision, scratch[:])
			if err != nil {
				return err
			}
			if done {
				continue
			}
		}
		obj := it.obj
		if obj == nil {
			if obj, err = s.decodeKV(res, it.kv); err != nil {
				return apierrors.NewInternalError(err)
			}
		}
		var v interface{} = obj
		if of.partial {
			v = partialMeta(obj)
		}
		js, err := json.Marshal(v)
		if err != nil {
			return apierrors.NewInternalError(err)
		}
		if _, err := dst.Write(js); err != nil {
			return err
		}
	}
	_, err = dst.WriteString("]}")
	return err
}

// encodeTableJSON encodes the Table of items into dst row by row: each
// item is decoded, turned into its row and dropped before the next, so a
// Table of 10,000 pods never holds 10,000 decoded pods. The head (columns,
// list metadata) is the Table toTable makes with no rows; the bytes are
// those of encoding the whole Table at once.
func (s *Server) encodeTableJSON(dst listSink, r *http.Request, res *registry.Resource, items []listItem, lm metav1.ListMeta) error {
	head, err := s.toTable(r, res, nil, lm, true)
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
	dst.Write(js[:len(js)-2])
	one := make([]runtime.Object, 1)
	for i := range items {
		it := items[i]
		items[i] = listItem{}
		obj := it.obj
		if obj == nil {
			if obj, err = s.decodeKV(res, it.kv); err != nil {
				return apierrors.NewInternalError(err)
			}
		}
		one[0] = obj
		t, err := s.toTable(r, res, one, lm, false)
		if err != nil {
			return err
		}
		row, err := json.Marshal(&t.Rows[0])
		if err != nil {
			return apierrors.NewInternalError(err)
		}
		if i > 0 {
			dst.WriteByte(',')
		}
		if _, err := dst.Write(row); err != nil {
			return err
		}
	}
	_, err = dst.WriteString("]}")
	return err
}

// streamJSON answers a JSON document that encode writes straight into
// the response. An error while nothing has left the write buffer is
// returned (and answered as a Status); after that the 200 is out, so the
// response is cut off instead: the client sees a broken body, never a
// short list that looks whole.
func (s *Server) streamJSON(w http.ResponseWriter, res *registry.Resource, encode func(listSink) error) error {
	sw := &sentWriter{w: w}
	bw := listWriterPool.Get().(*bufio.Writer)
	bw.Reset(sw)
	defer func() {
		bw.Reset(nil)
		listWriterPool.Put(bw)
	}()
	w.Header().Set("Content-Type", "application/json")
	err := encode(bw)
	if err == nil {
		bw.WriteByte('\n')
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
	encode := func(dst listSink) error { return s.encodeListJSON(dst, of, res, items, lm) }
	if of.table {
		encode = func(dst listSink) error { return s.encodeTableJSON(dst, r, res, items, lm) }
	}
	if !of.yaml {
		return s.streamJSON(w, res, encode)
	}
	// YAML is converted from the whole JSON document.
	var buf bytes.Buffer
	if err := encode(&buf); err != nil {
		return err
	}
	writeRaw(w, http.StatusOK, buf.Bytes(), true)
	return nil
}
