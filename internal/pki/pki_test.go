package pki

import (
	"crypto/x509"
	"net"
	"path/filepath"
	"testing"
)

// TestServingCertSANs: the serving certificate names every wanted address
// and is reissued (by the same CA) when a new SAN is asked for.
func TestServingCertSANs(t *testing.T) {
	dir := t.TempDir()
	caCert, caKey := filepath.Join(dir, "pki/ca.crt"), filepath.Join(dir, "pki/ca.key")
	cert, key := filepath.Join(dir, "pki/serving.crt"), filepath.Join(dir, "pki/serving.key")
	c, err := LoadOrCreateCA(caCert, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pair, err := c.LoadOrCreateServing(cert, key, "test", []string{"127.0.0.1", "localhost", "0.0.0.0", "10.1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(pair.Certificate[0])
	pool := x509.NewCertPool()
	pool.AddCert(c.Cert)
	for _, host := range []string{"127.0.0.1", "localhost", "10.1.2.3"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	for _, ip := range leaf.IPAddresses {
		if ip.Equal(net.IPv4zero) {
			t.Error("wildcard address in certificate")
		}
	}
	// Same names: the same certificate is reused.
	again, err := c.LoadOrCreateServing(cert, key, "test", []string{"127.0.0.1", "localhost"})
	if err != nil || string(again.Certificate[0]) != string(pair.Certificate[0]) {
		t.Fatalf("certificate not reused: %v", err)
	}
	// A new SAN reissues it.
	more, err := c.LoadOrCreateServing(cert, key, "test", []string{"127.0.0.1", "skep.example"})
	if err != nil {
		t.Fatal(err)
	}
	leaf2, _ := x509.ParseCertificate(more.Certificate[0])
	if _, err := leaf2.Verify(x509.VerifyOptions{Roots: pool, DNSName: "skep.example"}); err != nil {
		t.Errorf("new SAN: %v", err)
	}
	// The CA survives a reload.
	c2, err := LoadOrCreateCA(caCert, caKey)
	if err != nil || !c2.Cert.Equal(c.Cert) {
		t.Fatalf("CA changed: %v", err)
	}
}
