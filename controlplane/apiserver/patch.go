package apiserver

import (
	"encoding/json"
	"fmt"

	jsonpatch "github.com/evanphx/json-patch/v5"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// applyPatch applies a JSON, merge or strategic merge patch to cur and
// returns the patched JSON. schemaObj is the typed struct whose patch tags
// (patchStrategy, patchMergeKey) drive the strategic merge.
func applyPatch(pt types.PatchType, patch []byte, cur, schemaObj runtime.Object) ([]byte, error) {
	if !json.Valid(patch) {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch is not valid JSON (%s)", pt))
	}
	orig, err := json.Marshal(cur)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	invalid := func(err error) error {
		return apierrors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{field.Invalid(field.NewPath("patch"), string(patch), err.Error())})
	}
	switch pt {
	case types.JSONPatchType:
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("decode JSON patch: %v", err))
		}
		out, err := p.Apply(orig)
		if err != nil {
			return nil, invalid(err)
		}
		return out, nil
	case types.MergePatchType:
		out, err := jsonpatch.MergePatch(orig, patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("apply merge patch: %v", err))
		}
		return out, nil
	case types.StrategicMergePatchType:
		var m map[string]interface{}
		if err := json.Unmarshal(patch, &m); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("a strategic merge patch must be a JSON object: %v", err))
		}
		out, err := strategicpatch.StrategicMergePatch(orig, patch, schemaObj)
		if err != nil {
			return nil, invalid(err)
		}
		return out, nil
	}
	return nil, apierrors.NewBadRequest(fmt.Sprintf("unsupported patch type %q", pt))
}
