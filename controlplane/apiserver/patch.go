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

// What one patch may cost. The body is at most maxBodyBytes, but a patch
// is a program, not data: each bound below closes a way a small one grows.
const (
	// maxJSONPatchOperations is kube-apiserver's limit (413 beyond).
	maxJSONPatchOperations = 10000
	// maxCopyGrowth bounds what a JSON patch's copy operations may add in
	// all: each copy can double a value, and 17 of them took a 1.9 KB
	// patch to 1.3 GB.
	maxCopyGrowth = 3 << 20
	// maxPatchDepth bounds a patch's nesting; merging a patch nested
	// 10,000 deep took a gigabyte, and no object skep serves nests
	// beyond a few dozen levels.
	maxPatchDepth = 100
	// maxPatchedBytes bounds the patched object, as the body bounds a
	// created one.
	maxPatchedBytes = maxBodyBytes
)

// applyPatch applies a JSON, merge or strategic merge patch to cur and
// returns the patched JSON. schemaObj is the typed struct whose patch tags
// (patchStrategy, patchMergeKey) drive the strategic merge.
func applyPatch(pt types.PatchType, patch []byte, cur, schemaObj runtime.Object) ([]byte, error) {
	if !json.Valid(patch) {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch is not valid JSON (%s)", pt))
	}
	if d := jsonDepth(patch); d > maxPatchDepth {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the patch is nested %d levels deep; at most %d are allowed", d, maxPatchDepth))
	}
	orig, err := json.Marshal(cur)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	invalid := func(err error) error {
		return apierrors.NewInvalid(schema.GroupKind{}, "", field.ErrorList{field.Invalid(field.NewPath("patch"), string(patch), err.Error())})
	}
	var out []byte
	switch pt {
	case types.JSONPatchType:
		p, err := jsonpatch.DecodePatch(patch)
		if err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("decode JSON patch: %v", err))
		}
		if len(p) > maxJSONPatchOperations {
			return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("The allowed maximum operations in a JSON patch is %d, got %d", maxJSONPatchOperations, len(p)))
		}
		opts := jsonpatch.NewApplyOptions()
		opts.AccumulatedCopySizeLimit = maxCopyGrowth
		if out, err = p.ApplyWithOptions(orig, opts); err != nil {
			return nil, invalid(err)
		}
	case types.MergePatchType:
		if out, err = jsonpatch.MergePatch(orig, patch); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("apply merge patch: %v", err))
		}
	case types.StrategicMergePatchType:
		var m map[string]interface{}
		if err := json.Unmarshal(patch, &m); err != nil {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("a strategic merge patch must be a JSON object: %v", err))
		}
		if out, err = strategicpatch.StrategicMergePatch(orig, patch, schemaObj); err != nil {
			return nil, invalid(err)
		}
	default:
		return nil, apierrors.NewBadRequest(fmt.Sprintf("unsupported patch type %q", pt))
	}
	if len(out) > maxPatchedBytes {
		return nil, apierrors.NewRequestEntityTooLargeError(fmt.Sprintf("the patched object is %d bytes; the limit is %d", len(out), maxPatchedBytes))
	}
	return out, nil
}

// jsonDepth is the deepest nesting of objects and arrays in valid JSON.
func jsonDepth(js []byte) int {
	depth, deepest, inString := 0, 0, false
	for i := 0; i < len(js); i++ {
		c := js[i]
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
			deepest = max(deepest, depth)
		case '}', ']':
			depth--
		}
	}
	return deepest
}
