package core

import (
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

func eventResource() *registry.Resource {
	return &registry.Resource{
		GVK: corev1.SchemeGroupVersion.WithKind("Event"), Plural: "events", ShortNames: []string{"ev"},
		Namespaced: true,
		New:        func() runtime.Object { return &corev1.Event{} },
		Fields:     eventFields,
		Columns: []registry.Column{
			{Name: "Last Seen", Type: "string", Description: "Time since the event was last seen."},
			{Name: "Type", Type: "string", Description: "Type of the event."},
			{Name: "Reason", Type: "string", Description: "Reason of the event."},
			{Name: "Object", Type: "string", Description: "The object the event is about."},
			{Name: "Message", Type: "string", Description: "The message of the event."},
		},
		Row: eventRow,
	}
}

func eventFields(o runtime.Object) fields.Set {
	e := o.(*corev1.Event)
	src := e.Source.Component
	if src == "" {
		src = e.ReportingController
	}
	return fields.Set{
		"involvedObject.kind":            e.InvolvedObject.Kind,
		"involvedObject.namespace":       e.InvolvedObject.Namespace,
		"involvedObject.name":            e.InvolvedObject.Name,
		"involvedObject.uid":             string(e.InvolvedObject.UID),
		"involvedObject.apiVersion":      e.InvolvedObject.APIVersion,
		"involvedObject.resourceVersion": e.InvolvedObject.ResourceVersion,
		"involvedObject.fieldPath":       e.InvolvedObject.FieldPath,
		"reason":                         e.Reason,
		"reportingComponent":             e.ReportingController,
		"source":                         src,
		"type":                           e.Type,
	}
}

func eventRow(o runtime.Object) []interface{} {
	e := o.(*corev1.Event)
	last := e.LastTimestamp.Time
	if last.IsZero() {
		last = e.EventTime.Time
	}
	if last.IsZero() {
		last = e.CreationTimestamp.Time
	}
	obj := strings.ToLower(e.InvolvedObject.Kind) + "/" + e.InvolvedObject.Name
	return []interface{}{registry.Age(last), e.Type, e.Reason, obj, strings.TrimSpace(e.Message)}
}
