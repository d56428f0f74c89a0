// Package certificates approves and signs CertificateSigningRequests, as
// kube-controller-manager's csrapproving and csrsigning controllers do for
// the signers skep serves:
//   - kubernetes.io/kube-apiserver-client-kubelet: a node's client
//     certificate (CN system:node:<name>, O system:nodes). Requests made
//     with a bootstrap token are approved when the requester may create
//     certificatesigningrequests/nodeclient, a node renewing its own when
//     it may create certificatesigningrequests/selfnodeclient (asked with a
//     SubjectAccessReview, so RBAC decides);
//   - kubernetes.io/kube-apiserver-client: any client certificate, once an
//     administrator approved it (kubectl certificate approve).
//
// Approved requests are signed with the cluster CA.
package certificates

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	certinformers "k8s.io/client-go/informers/certificates/v1"
	"k8s.io/client-go/kubernetes"
	certlisters "k8s.io/client-go/listers/certificates/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"

	"github.com/skep-dev/skep/controlplane/controllers/internal/workers"
	"github.com/skep-dev/skep/internal/pki"
)

// Signer names.
const (
	KubeletClientSigner = certificatesv1.KubeAPIServerClientKubeletSignerName
	ClientSigner        = certificatesv1.KubeAPIServerClientSignerName
)

// Options configure the controller.
type Options struct {
	// CA signs approved requests; nil approves but signs nothing.
	CA *pki.CA
	// MaxDuration caps a certificate's life (default one year).
	MaxDuration time.Duration
	Logger      *slog.Logger
}

// Controller approves node client requests and signs approved ones.
type Controller struct {
	kube   kubernetes.Interface
	lister certlisters.CertificateSigningRequestLister
	synced cache.InformerSynced
	queue  workqueue.TypedRateLimitingInterface[string]
	opts   Options
	log    *slog.Logger
}

// New wires the controller to a CSR informer.
func New(kube kubernetes.Interface, informer certinformers.CertificateSigningRequestInformer, opts Options) (*Controller, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.MaxDuration == 0 {
		opts.MaxDuration = 365 * 24 * time.Hour
	}
	c := &Controller{kube: kube, lister: informer.Lister(), synced: informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[string](),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "certificates"}),
		opts: opts, log: opts.Logger.With("controller", "certificates")}
	enqueue := func(obj interface{}) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok {
			c.queue.Add(csr.Name)
		}
	}
	if _, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, o interface{}) { enqueue(o) }}); err != nil {
		return nil, fmt.Errorf("csr informer handler: %w", err)
	}
	return c, nil
}

// Run processes requests until ctx ends.
func (c *Controller) Run(ctx context.Context) error {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), c.synced) {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("certificates controller: caches did not sync")
	}
	workers.Run(ctx, 2, c.queue, c.process)
	return nil
}

func (c *Controller) process(ctx context.Context, name string) {
	if err := c.Sync(ctx, name); err != nil {
		c.log.Info("sync failed, retrying", "csr", name, "err", err)
		c.queue.AddRateLimited(name)
		return
	}
	c.queue.Forget(name)
}

func condition(csr *certificatesv1.CertificateSigningRequest, t certificatesv1.RequestConditionType) bool {
	return slices.ContainsFunc(csr.Status.Conditions, func(c certificatesv1.CertificateSigningRequestCondition) bool {
		return c.Type == t && (c.Status == corev1.ConditionTrue || c.Status == "")
	})
}

// Sync approves (when it may) and signs (when approved) one request.
func (c *Controller) Sync(ctx context.Context, name string) error {
	csr, err := c.lister.Get(name)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	if condition(csr, certificatesv1.CertificateDenied) || condition(csr, certificatesv1.CertificateFailed) || len(csr.Status.Certificate) > 0 {
		return nil
	}
	req, err := parseRequest(csr.Spec.Request)
	if err != nil {
		return c.fail(ctx, csr, "InvalidRequest", err.Error())
	}
	if !condition(csr, certificatesv1.CertificateApproved) {
		if csr.Spec.SignerName != KubeletClientSigner {
			return nil // an administrator's decision
		}
		ok, why, err := c.approvable(ctx, csr, req)
		if err != nil || !ok {
			if why != "" {
				c.log.Debug("not auto-approved", "csr", name, "why", why)
			}
			return err
		}
		csr = csr.DeepCopy()
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "AutoApproved",
			Message: "Auto approving kubelet client certificate after SubjectAccessReview.", LastUpdateTime: metav1.Now()})
		if csr, err = c.kube.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, csr.Name, csr, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("approve: %w", err)
		}
		c.log.Info("approved", "csr", name, "requester", csr.Spec.Username, "subject", req.Subject.CommonName)
	}
	if c.opts.CA == nil || (csr.Spec.SignerName != KubeletClientSigner && csr.Spec.SignerName != ClientSigner) {
		return nil
	}
	ttl := c.opts.MaxDuration
	if e := csr.Spec.ExpirationSeconds; e != nil && time.Duration(*e)*time.Second < ttl {
		ttl = time.Duration(*e) * time.Second
	}
	der, err := c.opts.CA.SignClient(req.PublicKey, req.Subject, ttl)
	if err != nil {
		return c.fail(ctx, csr, "SigningError", err.Error())
	}
	csr = csr.DeepCopy()
	csr.Status.Certificate = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if _, err := c.kube.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	c.log.Info("issued", "csr", name, "subject", req.Subject.CommonName)
	return nil
}

func parseRequest(pemData []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(pemData)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, fmt.Errorf("not a PEM certificate request")
	}
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, err
	}
	if err := req.CheckSignature(); err != nil {
		return nil, fmt.Errorf("request signature: %w", err)
	}
	return req, nil
}

// approvable: a node client certificate (CN system:node:<name>, O
// system:nodes only, client usages), asked for by a requester RBAC allows
// to (the node itself renewing, or a bootstrapper).
func (c *Controller) approvable(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, req *x509.CertificateRequest) (bool, string, error) {
	if !strings.HasPrefix(req.Subject.CommonName, "system:node:") || len(req.Subject.Organization) != 1 || req.Subject.Organization[0] != "system:nodes" {
		return false, "subject is not a node's", nil
	}
	if len(req.DNSNames)+len(req.EmailAddresses)+len(req.IPAddresses)+len(req.URIs) > 0 {
		return false, "a client certificate has no SANs", nil
	}
	if !slices.Contains(csr.Spec.Usages, certificatesv1.UsageClientAuth) {
		return false, "no client auth usage", nil
	}
	for _, u := range csr.Spec.Usages {
		if u != certificatesv1.UsageClientAuth && u != certificatesv1.UsageDigitalSignature && u != certificatesv1.UsageKeyEncipherment {
			return false, "usage " + string(u) + " is not a client's", nil
		}
	}
	sub := "nodeclient"
	if csr.Spec.Username == req.Subject.CommonName {
		sub = "selfnodeclient"
	}
	extra := map[string]authorizationv1.ExtraValue{}
	for k, v := range csr.Spec.Extra {
		extra[k] = authorizationv1.ExtraValue(v)
	}
	sar, err := c.kube.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: csr.Spec.Username, UID: csr.Spec.UID, Groups: csr.Spec.Groups, Extra: extra,
		ResourceAttributes: &authorizationv1.ResourceAttributes{Verb: "create", Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Subresource: sub},
	}}, metav1.CreateOptions{})
	if err != nil {
		return false, "", fmt.Errorf("subject access review: %w", err)
	}
	if !sar.Status.Allowed {
		return false, "requester may not create certificatesigningrequests/" + sub, nil
	}
	return true, "", nil
}

// fail marks a request Failed (it will not be retried).
func (c *Controller) fail(ctx context.Context, csr *certificatesv1.CertificateSigningRequest, reason, msg string) error {
	csr = csr.DeepCopy()
	csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
		Type: certificatesv1.CertificateFailed, Status: corev1.ConditionTrue, Reason: reason, Message: msg, LastUpdateTime: metav1.Now()})
	_, err := c.kube.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{})
	return err
}
