package apiserver

import (
	"encoding/json"
	"fmt"
	"net/http"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// tableColumns is the full column list of a resource: NAME, the resource's
// priority-0 columns, AGE, then the wide (priority 1) columns.
func tableColumns(res *registry.Resource) []metav1.TableColumnDefinition {
	name := metav1.TableColumnDefinition{Name: "Name", Type: "string", Format: "name",
		Description: "Name must be unique within a namespace. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"}
	ageCol := metav1.TableColumnDefinition{Name: "Age", Type: "string",
		Description: "CreationTimestamp is a timestamp representing the server time when this object was created."}
	cols := []metav1.TableColumnDefinition{name}
	for _, c := range res.Columns {
		if c.Priority == 0 {
			cols = append(cols, c)
		}
	}
	if !res.NoAge {
		cols = append(cols, ageCol)
	}
	for _, c := range res.Columns {
		if c.Priority != 0 {
			cols = append(cols, c)
		}
	}
	return cols
}

func tableCells(res *registry.Resource, obj runtime.Object) []interface{} {
	m := registry.Meta(obj)
	var extra []interface{}
	if res.Row != nil {
		extra = res.Row(obj)
	}
	cells := []interface{}{m.GetName()}
	for i, c := range res.Columns {
		if c.Priority == 0 && i < len(extra) {
			cells = append(cells, extra[i])
		}
	}
	if !res.NoAge {
		cells = append(cells, registry.Age(m.GetCreationTimestamp().Time))
	}
	for i, c := range res.Columns {
		if c.Priority != 0 && i < len(extra) {
			cells = append(cells, extra[i])
		}
	}
	return cells
}

// toTable converts objects to the meta.k8s.io/v1 Table kubectl get asks for.
func (s *Server) toTable(r *http.Request, res *registry.Resource, items []runtime.Object, lm metav1.ListMeta, withColumns bool) (*metav1.Table, error) {
	include := metav1.IncludeMetadata
	switch v := metav1.IncludeObjectPolicy(r.URL.Query().Get("includeObject")); v {
	case "":
	case metav1.IncludeMetadata, metav1.IncludeObject, metav1.IncludeNone:
		include = v
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("includeObject must be one of Object, Metadata, None; got %q", v))
	}
	t := &metav1.Table{TypeMeta: metav1.TypeMeta{Kind: "Table", APIVersion: "meta.k8s.io/v1"}, ListMeta: lm, Rows: []metav1.TableRow{}}
	if withColumns {
		t.ColumnDefinitions = tableColumns(res)
	}
	for _, obj := range items {
		row := metav1.TableRow{Cells: tableCells(res, obj)}
		var embed interface{}
		switch include {
		case metav1.IncludeMetadata:
			embed = partialMeta(obj)
		case metav1.IncludeObject:
			embed = obj
		}
		if embed != nil {
			js, err := json.Marshal(embed)
			if err != nil {
				return nil, apierrors.NewInternalError(err)
			}
			row.Object = runtime.RawExtension{Raw: js}
		}
		t.Rows = append(t.Rows, row)
	}
	return t, nil
}
