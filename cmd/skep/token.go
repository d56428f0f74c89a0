package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	bootstrapapi "k8s.io/cluster-bootstrap/token/api"
	bootstraputil "k8s.io/cluster-bootstrap/token/util"
)

func init() {
	register("token", "make a bootstrap token a node joins the cluster with", runToken)
}

// runToken: `skep token create` stores a bootstrap token (kubeadm's shape:
// a bootstrap.kubernetes.io/token Secret in kube-system) and prints it. An
// agent given it may ask for its node's client certificate, and nothing
// else, until it expires.
func runToken(args []string) error {
	if len(args) == 0 || args[0] != "create" {
		return fmt.Errorf("usage: skep token create [--kubeconfig K] [--ttl 24h] [--description D]")
	}
	fs := flag.NewFlagSet("token create", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "/var/lib/skep/admin.kubeconfig", "admin kubeconfig")
	ttl := fs.Duration("ttl", 24*time.Hour, "how long the token may be used to join (0: forever)")
	desc := fs.String("description", "", "what the token is for")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return err
	}
	token, err := bootstraputil.GenerateBootstrapToken()
	if err != nil {
		return err
	}
	m := bootstraputil.BootstrapTokenRegexp.FindStringSubmatch(token)
	data := map[string]string{
		bootstrapapi.BootstrapTokenIDKey:               m[1],
		bootstrapapi.BootstrapTokenSecretKey:           m[2],
		bootstrapapi.BootstrapTokenUsageAuthentication: "true",
		bootstrapapi.BootstrapTokenExtraGroupsKey:      "system:bootstrappers:skep:default-node-token",
	}
	if *ttl > 0 {
		data[bootstrapapi.BootstrapTokenExpirationKey] = time.Now().Add(*ttl).UTC().Format(time.RFC3339)
	}
	if *desc != "" {
		data[bootstrapapi.BootstrapTokenDescriptionKey] = *desc
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: bootstraputil.BootstrapTokenSecretName(m[1]), Namespace: metav1.NamespaceSystem},
		Type:       bootstrapapi.SecretTypeBootstrapToken,
		StringData: data,
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := cs.CoreV1().Secrets(metav1.NamespaceSystem).Create(ctx, secret, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("store the token: %w", err)
	}
	fmt.Println(token)
	return nil
}
