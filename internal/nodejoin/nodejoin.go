// Package nodejoin is how a machine becomes a node's identity: with a
// bootstrap token (`skep token create`) it asks the cluster for a client
// certificate as system:node:<name> in system:nodes (a
// CertificateSigningRequest for the kubelet client signer, which the
// cluster approves for bootstrappers), waits for it to be issued, and
// writes a kubeconfig with it — kubeadm's TLS bootstrap. The token itself
// can do nothing else.
package nodejoin

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"

	certificatesv1 "k8s.io/api/certificates/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/client-go/util/certificate/csr"

	"github.com/skep-dev/skep/internal/pki"
)

// Files Join writes in its directory.
const (
	KubeconfigFile = "node.kubeconfig"
	CertFile       = "node.crt"
	KeyFile        = "node.key"
)

// Request is what a join needs.
type Request struct {
	// Server is the API server's URL; CAPEM its CA.
	Server string
	CAPEM  []byte
	// Token is the bootstrap token, <id>.<secret>.
	Token string
	// NodeName is the node this machine becomes.
	NodeName string
	// Dir receives the key, certificate and kubeconfig.
	Dir string
	// Duration asks for a certificate life (default a year, the cluster
	// may give less).
	Duration time.Duration
}

// Join returns the path of a kubeconfig that authenticates as the node,
// reusing a certificate already in Dir while it has more than a day left.
func Join(ctx context.Context, req Request) (string, error) {
	kubeconfig := filepath.Join(req.Dir, KubeconfigFile)
	certPath, keyPath := filepath.Join(req.Dir, CertFile), filepath.Join(req.Dir, KeyFile)
	if valid(certPath, "system:node:"+req.NodeName) {
		return kubeconfig, writeKubeconfig(kubeconfig, req, certPath, keyPath)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: "system:node:" + req.NodeName, Organization: []string{"system:nodes"}},
	}, key)
	if err != nil {
		return "", fmt.Errorf("certificate request: %w", err)
	}
	client, err := kubernetes.NewForConfig(&rest.Config{Host: req.Server, BearerToken: req.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: req.CAPEM}, Timeout: 30 * time.Second})
	if err != nil {
		return "", err
	}
	duration := req.Duration
	if duration == 0 {
		duration = 365 * 24 * time.Hour
	}
	name, uid, err := csr.RequestCertificate(client, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), "",
		certificatesv1.KubeAPIServerClientKubeletSignerName, &duration,
		[]certificatesv1.KeyUsage{certificatesv1.UsageDigitalSignature, certificatesv1.UsageClientAuth}, key)
	if err != nil {
		return "", fmt.Errorf("ask for a node certificate: %w", err)
	}
	certPEM, err := csr.WaitForCertificate(ctx, client, name, uid)
	if err != nil {
		return "", fmt.Errorf("wait for certificate request %s to be issued: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := pki.WriteFileAtomic(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", err
	}
	if err := pki.WriteFileAtomic(certPath, certPEM, 0o644); err != nil {
		return "", err
	}
	return kubeconfig, writeKubeconfig(kubeconfig, req, certPath, keyPath)
}

// valid reports whether certPath holds a certificate for cn with more than
// a day to live.
func valid(certPath, cn string) bool {
	b, err := os.ReadFile(certPath)
	if err != nil {
		return false
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return false
	}
	c, err := x509.ParseCertificate(block.Bytes)
	return err == nil && c.Subject.CommonName == cn && time.Until(c.NotAfter) > 24*time.Hour
}

func writeKubeconfig(path string, req Request, certPath, keyPath string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["skep"] = &clientcmdapi.Cluster{Server: req.Server, CertificateAuthorityData: req.CAPEM}
	cfg.AuthInfos["node"] = &clientcmdapi.AuthInfo{ClientCertificate: certPath, ClientKey: keyPath}
	cfg.Contexts["skep"] = &clientcmdapi.Context{Cluster: "skep", AuthInfo: "node"}
	cfg.CurrentContext = "skep"
	data, err := clientcmd.Write(*cfg)
	if err != nil {
		return err
	}
	return pki.WriteFileAtomic(path, data, 0o600)
}
