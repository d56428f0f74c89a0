// Package certificates is the registry of the certificates.k8s.io/v1 API
// group: CertificateSigningRequests, how a joining node (and anyone else)
// asks the cluster CA for a client certificate. Approval and signing are
// controllers' work; this is what the API keeps and checks.
package certificates

import (
	"crypto/x509"
	"encoding/pem"
	"strings"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/duration"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"github.com/skep-dev/skep/controlplane/apiserver/registry"
)

// Resources returns the rows of the certificates group.
func Resources() []*registry.Resource {
	st := csrStrategy{}
	return []*registry.Resource{{
		GVK: certificatesv1.SchemeGroupVersion.WithKind("CertificateSigningRequest"), Plural: "certificatesigningrequests", ShortNames: []string{"csr"},
		New:      func() runtime.Object { return &certificatesv1.CertificateSigningRequest{} },
		Strategy: st,
		Subresources: []*registry.Subresource{
			{Name: "status", Verbs: []string{"get", "patch", "update"}, Update: statusStrategy{st}},
			{Name: "approval", Verbs: []string{"get", "patch", "update"}, Update: approvalStrategy{st}},
		},
		Fields: func(o runtime.Object) fields.Set {
			return fields.Set{"spec.signerName": o.(*certificatesv1.CertificateSigningRequest).Spec.SignerName}
		},
		Columns: []registry.Column{
			{Name: "SignerName", Type: "string", Description: "Only requests for this signer are handled by it."},
			{Name: "Requestor", Type: "string", Description: "Name of the user who made the request."},
			{Name: "RequestedDuration", Type: "string", Description: "How long the requested certificate should be valid."},
			{Name: "Condition", Type: "string", Description: "Approved, Denied, Failed, Issued or Pending."},
		},
		Row: func(o runtime.Object) []interface{} {
			c := o.(*certificatesv1.CertificateSigningRequest)
			dur := "<none>"
			if c.Spec.ExpirationSeconds != nil {
				dur = duration.HumanDuration(time.Duration(*c.Spec.ExpirationSeconds) * time.Second)
			}
			return []interface{}{c.Spec.SignerName, c.Spec.Username, dur, Condition(c)}
		},
	}}
}

// Condition is the CSR's state as kubectl prints it: Approved,Issued, …
func Condition(c *certificatesv1.CertificateSigningRequest) string {
	var states []string
	for _, cond := range c.Status.Conditions {
		if cond.Status == corev1.ConditionTrue || cond.Status == "" {
			states = append(states, string(cond.Type))
		}
	}
	if len(c.Status.Certificate) > 0 {
		states = append(states, "Issued")
	}
	if len(states) == 0 {
		return "Pending"
	}
	return strings.Join(states, ",")
}

// csrStrategy: the request is immutable once made; its status is written
// through status and approval only. (Who made it is set by admission.)
type csrStrategy struct{ registry.DefaultStrategy }

func (csrStrategy) PrepareForCreate(o runtime.Object) {
	o.(*certificatesv1.CertificateSigningRequest).Status = certificatesv1.CertificateSigningRequestStatus{}
}

func (csrStrategy) PrepareForUpdate(o, old runtime.Object) {
	c, oc := o.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
	c.Spec, c.Status = oc.Spec, oc.Status
}

// Validate is what Kubernetes' ValidateCertificateSigningRequestCreate
// checks of the request.
func (csrStrategy) Validate(o runtime.Object) field.ErrorList {
	c := o.(*certificatesv1.CertificateSigningRequest)
	var errs field.ErrorList
	sp := field.NewPath("spec")
	block, _ := pem.Decode(c.Spec.Request)
	switch {
	case block == nil || block.Type != "CERTIFICATE REQUEST":
		errs = append(errs, field.Invalid(sp.Child("request"), "", "PEM block type must be CERTIFICATE REQUEST"))
	default:
		if _, err := x509.ParseCertificateRequest(block.Bytes); err != nil {
			errs = append(errs, field.Invalid(sp.Child("request"), "", err.Error()))
		}
	}
	if c.Spec.SignerName == "" {
		errs = append(errs, field.Required(sp.Child("signerName"), ""))
	} else {
		domain, path, ok := strings.Cut(c.Spec.SignerName, "/")
		if !ok || path == "" {
			errs = append(errs, field.Invalid(sp.Child("signerName"), c.Spec.SignerName, "must be a fully qualified domain and path of the form 'example.com/signer-name'"))
		} else {
			for _, msg := range utilvalidation.IsDNS1123Subdomain(domain) {
				errs = append(errs, field.Invalid(sp.Child("signerName"), c.Spec.SignerName, msg))
			}
		}
	}
	if len(c.Spec.Usages) == 0 {
		errs = append(errs, field.Required(sp.Child("usages"), ""))
	}
	for i, u := range c.Spec.Usages {
		if !knownUsages[u] {
			errs = append(errs, field.NotSupported[string](sp.Child("usages").Index(i), u, nil))
		}
	}
	if e := c.Spec.ExpirationSeconds; e != nil && *e < 600 {
		errs = append(errs, field.Invalid(sp.Child("expirationSeconds"), *e, "may not specify a duration less than 600 seconds (10 minutes)"))
	}
	return errs
}

var knownUsages = map[certificatesv1.KeyUsage]bool{}

func init() {
	for _, u := range []certificatesv1.KeyUsage{certificatesv1.UsageSigning, certificatesv1.UsageDigitalSignature, certificatesv1.UsageContentCommitment,
		certificatesv1.UsageKeyEncipherment, certificatesv1.UsageKeyAgreement, certificatesv1.UsageDataEncipherment, certificatesv1.UsageCertSign,
		certificatesv1.UsageCRLSign, certificatesv1.UsageEncipherOnly, certificatesv1.UsageDecipherOnly, certificatesv1.UsageAny,
		certificatesv1.UsageServerAuth, certificatesv1.UsageClientAuth, certificatesv1.UsageCodeSigning, certificatesv1.UsageEmailProtection,
		certificatesv1.UsageSMIME, certificatesv1.UsageIPsecEndSystem, certificatesv1.UsageIPsecTunnel, certificatesv1.UsageIPsecUser,
		certificatesv1.UsageTimestamping, certificatesv1.UsageOCSPSigning, certificatesv1.UsageMicrosoftSGC, certificatesv1.UsageNetscapeSGC} {
		knownUsages[u] = true
	}
}

// statusStrategy writes the certificate a signer issued (and its
// conditions), nothing of the request.
type statusStrategy struct{ main csrStrategy }

func (statusStrategy) PrepareForUpdate(o, old runtime.Object) {
	c, oc := o.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
	c.Spec = oc.Spec
}

func (s statusStrategy) ValidateUpdate(o, old runtime.Object) field.ErrorList {
	c, oc := o.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
	var errs field.ErrorList
	if len(oc.Status.Certificate) > 0 && string(c.Status.Certificate) != string(oc.Status.Certificate) {
		errs = append(errs, field.Invalid(field.NewPath("status", "certificate"), "", "updates may not modify existing certificate content"))
	}
	return errs
}

// approvalStrategy writes the Approved or Denied condition, nothing else.
type approvalStrategy struct{ main csrStrategy }

func (approvalStrategy) PrepareForUpdate(o, old runtime.Object) {
	c, oc := o.(*certificatesv1.CertificateSigningRequest), old.(*certificatesv1.CertificateSigningRequest)
	conds := c.Status.Conditions
	c.Spec, c.Status = oc.Spec, oc.Status
	c.Status.Conditions = conds
}

func (approvalStrategy) ValidateUpdate(o, _ runtime.Object) field.ErrorList {
	c := o.(*certificatesv1.CertificateSigningRequest)
	var approved, denied bool
	var errs field.ErrorList
	for i, cond := range c.Status.Conditions {
		p := field.NewPath("status", "conditions").Index(i)
		switch cond.Type {
		case certificatesv1.CertificateApproved:
			approved = true
		case certificatesv1.CertificateDenied:
			denied = true
		case certificatesv1.CertificateFailed:
		default:
			errs = append(errs, field.NotSupported(p.Child("type"), cond.Type, []string{"Approved", "Denied", "Failed"}))
		}
		if cond.Status != corev1.ConditionTrue && cond.Status != "" {
			errs = append(errs, field.NotSupported(p.Child("status"), cond.Status, []string{"True"}))
		}
	}
	if approved && denied {
		errs = append(errs, field.Invalid(field.NewPath("status", "conditions"), c.Status.Conditions, "Approved and Denied conditions are mutually exclusive"))
	}
	return errs
}
