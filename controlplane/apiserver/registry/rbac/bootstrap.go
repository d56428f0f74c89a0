package rbac

import (
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apiserver/pkg/authentication/user"
)

// The bootstrap policy: the roles and bindings users of Kubernetes know
// (cluster-admin, admin, edit, view and the aggregation that builds the
// last three), and the system: ones skep's components need, after
// kube-apiserver's bootstrappolicy. The server creates what is missing at
// start; an administrator's changes to them are kept.

var (
	read      = []string{"get", "list", "watch"}
	write     = []string{"create", "update", "patch", "delete", "deletecollection"}
	readWrite = append(append([]string{}, read...), write...)
)

func rule(verbs []string, groups []string, resources ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: verbs, APIGroups: groups, Resources: resources}
}

func urls(verbs []string, paths ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{Verbs: verbs, NonResourceURLs: paths}
}

func g(groups ...string) []string { return groups }

func clusterRole(name string, labels map[string]string, rules ...rbacv1.PolicyRule) rbacv1.ClusterRole {
	l := map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"}
	for k, v := range labels {
		l[k] = v
	}
	return rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l,
		Annotations: map[string]string{rbacv1.AutoUpdateAnnotationKey: "true"}}, Rules: rules}
}

func aggregated(name string, labels map[string]string, selector string) rbacv1.ClusterRole {
	cr := clusterRole(name, labels)
	cr.AggregationRule = &rbacv1.AggregationRule{ClusterRoleSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{selector: "true"}}}}
	return cr
}

const (
	toAdmin = "rbac.authorization.k8s.io/aggregate-to-admin"
	toEdit  = "rbac.authorization.k8s.io/aggregate-to-edit"
	toView  = "rbac.authorization.k8s.io/aggregate-to-view"
)

// BootstrapClusterRoles are the cluster roles every skep cluster has.
func BootstrapClusterRoles() []rbacv1.ClusterRole {
	return []rbacv1.ClusterRole{
		clusterRole("cluster-admin", nil, rule([]string{"*"}, g("*"), "*"), urls([]string{"*"}, "*")),
		clusterRole("system:discovery", nil, urls([]string{"get"}, "/livez", "/readyz", "/healthz", "/version", "/version/",
			"/openapi", "/openapi/*", "/api", "/api/*", "/apis", "/apis/*")),
		clusterRole("system:public-info-viewer", nil, urls([]string{"get"}, "/livez", "/readyz", "/healthz", "/version", "/version/")),
		clusterRole("system:basic-user", nil, rule([]string{"create"}, g("authorization.k8s.io"), "selfsubjectaccessreviews", "selfsubjectrulesreviews"),
			rule([]string{"create"}, g("authentication.k8s.io"), "selfsubjectreviews")),
		clusterRole("system:service-account-issuer-discovery", nil, urls([]string{"get"}, "/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/")),
		aggregated("admin", nil, toAdmin),
		aggregated("edit", map[string]string{toAdmin: "true"}, toEdit),
		aggregated("view", map[string]string{toEdit: "true"}, toView),
		clusterRole("system:aggregate-to-admin", map[string]string{toAdmin: "true"},
			rule([]string{"create"}, g("authorization.k8s.io"), "localsubjectaccessreviews"),
			rule(readWrite, g("rbac.authorization.k8s.io"), "roles", "rolebindings")),
		clusterRole("system:aggregate-to-edit", map[string]string{toEdit: "true"},
			rule(read, g(""), "pods/attach", "pods/proxy", "pods/exec", "pods/portforward", "secrets", "services/proxy"),
			rule([]string{"impersonate"}, g(""), "serviceaccounts"),
			rule(write, g(""), "pods", "pods/attach", "pods/proxy", "pods/exec", "pods/portforward"),
			rule([]string{"create"}, g(""), "pods/eviction"),
			rule(write, g(""), "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services", "services/proxy",
				"persistentvolumeclaims", "configmaps", "secrets", "events"),
			rule([]string{"create"}, g(""), "serviceaccounts/token"),
			rule(write, g("apps"), "statefulsets", "statefulsets/scale", "daemonsets", "deployments", "deployments/scale",
				"deployments/rollback", "replicasets", "replicasets/scale"),
			rule(write, g("autoscaling"), "horizontalpodautoscalers"),
			rule(write, g("batch"), "jobs", "cronjobs"),
			rule(write, g("policy"), "poddisruptionbudgets"),
			rule(write, g("networking.k8s.io"), "networkpolicies", "ingresses"),
			rule(write, g("coordination.k8s.io"), "leases"),
			rule(write, g("discovery.k8s.io"), "endpointslices")),
		clusterRole("system:aggregate-to-view", map[string]string{toView: "true"},
			rule(read, g(""), "pods", "replicationcontrollers", "replicationcontrollers/scale", "serviceaccounts", "services",
				"services/status", "endpoints", "persistentvolumeclaims", "persistentvolumeclaims/status", "configmaps"),
			rule(read, g(""), "limitranges", "resourcequotas", "bindings", "events", "pods/status", "resourcequotas/status",
				"namespaces/status", "replicationcontrollers/status", "pods/log"),
			rule(read, g(""), "namespaces"),
			rule(read, g("discovery.k8s.io"), "endpointslices"),
			rule(read, g("apps"), "controllerrevisions", "statefulsets", "statefulsets/status", "statefulsets/scale", "daemonsets",
				"daemonsets/status", "deployments", "deployments/status", "deployments/scale", "replicasets", "replicasets/status", "replicasets/scale"),
			rule(read, g("autoscaling"), "horizontalpodautoscalers", "horizontalpodautoscalers/status"),
			rule(read, g("batch"), "jobs", "jobs/status", "cronjobs", "cronjobs/status"),
			rule(read, g("policy"), "poddisruptionbudgets", "poddisruptionbudgets/status"),
			rule(read, g("networking.k8s.io"), "networkpolicies", "ingresses", "ingresses/status"),
			rule(read, g("coordination.k8s.io"), "leases")),
		// A node's rules; the Node authorizer narrows them to its own
		// objects (its Node, its Lease, the pods bound to it and what they
		// reference).
		clusterRole("system:node", nil,
			rule([]string{"create"}, g("authentication.k8s.io"), "tokenreviews"),
			rule([]string{"create"}, g("authorization.k8s.io"), "subjectaccessreviews", "localsubjectaccessreviews"),
			rule(read, g(""), "services"),
			rule([]string{"create", "get", "list", "watch"}, g(""), "nodes"),
			rule([]string{"update", "patch"}, g(""), "nodes/status", "nodes"),
			rule([]string{"create", "update", "patch"}, g(""), "events"),
			rule(read, g(""), "pods"),
			rule([]string{"create", "delete"}, g(""), "pods"),
			rule([]string{"update", "patch"}, g(""), "pods/status"),
			rule([]string{"create"}, g(""), "pods/eviction"),
			rule(read, g(""), "secrets", "configmaps"),
			rule([]string{"get"}, g(""), "persistentvolumeclaims", "persistentvolumes", "endpoints"),
			rule([]string{"create", "get", "list", "watch"}, g("certificates.k8s.io"), "certificatesigningrequests"),
			rule([]string{"get", "create", "update", "patch", "delete"}, g("coordination.k8s.io"), "leases"),
			rule([]string{"create"}, g(""), "serviceaccounts/token")),
		// The service proxy (skep proxy), as kube-proxy's role.
		clusterRole("system:node-proxier", nil,
			rule([]string{"list", "watch"}, g(""), "services", "endpoints"),
			rule([]string{"get", "list", "watch"}, g(""), "nodes"),
			rule([]string{"create", "patch", "update"}, g("", "events.k8s.io"), "events"),
			rule([]string{"list", "watch"}, g("discovery.k8s.io"), "endpointslices")),
		// An agent joining with a bootstrap token may ask for its
		// certificate, and nothing else.
		clusterRole("system:node-bootstrapper", nil,
			rule([]string{"create", "get", "list", "watch"}, g("certificates.k8s.io"), "certificatesigningrequests")),
		clusterRole("system:certificates.k8s.io:certificatesigningrequests:nodeclient", nil,
			rule([]string{"create"}, g("certificates.k8s.io"), "certificatesigningrequests/nodeclient")),
		clusterRole("system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", nil,
			rule([]string{"create"}, g("certificates.k8s.io"), "certificatesigningrequests/selfnodeclient")),
	}
}

func clusterBinding(name, role string, subjects ...rbacv1.Subject) rbacv1.ClusterRoleBinding {
	return rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"},
			Annotations: map[string]string{rbacv1.AutoUpdateAnnotationKey: "true"}},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
		Subjects: subjects,
	}
}

func group(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: name}
}

func userSubject(name string) rbacv1.Subject {
	return rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: name}
}

// BootstrapClusterRoleBindings bind the bootstrap roles.
func BootstrapClusterRoleBindings() []rbacv1.ClusterRoleBinding {
	return []rbacv1.ClusterRoleBinding{
		clusterBinding("cluster-admin", "cluster-admin", group(user.SystemPrivilegedGroup)),
		clusterBinding("system:discovery", "system:discovery", group(user.AllAuthenticated)),
		clusterBinding("system:basic-user", "system:basic-user", group(user.AllAuthenticated)),
		clusterBinding("system:public-info-viewer", "system:public-info-viewer", group(user.AllAuthenticated), group(user.AllUnauthenticated)),
		clusterBinding("system:service-account-issuer-discovery", "system:service-account-issuer-discovery", group("system:serviceaccounts")),
		clusterBinding("system:node-proxier", "system:node-proxier", userSubject("system:kube-proxy")),
		clusterBinding("system:node-bootstrapper", "system:node-bootstrapper", group("system:bootstrappers")),
		clusterBinding("system:node-autoapprove-bootstrap", "system:certificates.k8s.io:certificatesigningrequests:nodeclient", group("system:bootstrappers")),
		clusterBinding("system:node-autoapprove-certificate-rotation", "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient", group("system:nodes")),
		// Nodes are authorized by the Node authorizer against this role;
		// the binding names no one, as in Kubernetes.
		clusterBinding("system:node", "system:node"),
	}
}
