package controller

import (
	"encoding/binary"
	"fmt"
	"hash"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/dump"
	"k8s.io/apimachinery/pkg/util/rand"
)

// ComputeHash is the pod-template-hash of a template: Kubernetes' own
// (FNV-32a over a deterministic dump of the template, then the collision
// count), so a Deployment's ReplicaSets are named as they would be there.
func ComputeHash(tmpl *corev1.PodTemplateSpec, collisionCount *int32) string {
	h := fnv.New32a()
	DeepHashObject(h, *tmpl)
	if collisionCount != nil {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint32(b, uint32(*collisionCount))
		h.Write(b)
	}
	return rand.SafeEncodeString(fmt.Sprint(h.Sum32()))
}

// DeepHashObject writes a deterministic dump of obj (pointers followed,
// map keys sorted) to h.
func DeepHashObject(h hash.Hash, obj interface{}) {
	h.Reset()
	fmt.Fprintf(h, "%v", dump.ForHash(obj))
}
