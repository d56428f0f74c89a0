// Package apiserver is skep's Kubernetes-compatible API server: one generic
// REST handler driven by a table of resources (resources.go) over the
// control plane store, serving the upstream k8s.io/api types to kubectl and
// client-go over HTTPS with bearer tokens.
//
// A request flows: TLS → recover → metrics → authenticate → authorize →
// route (discovery, OpenAPI, health, or a resource path) → the generic
// handler (decode, default, validate, store with compare-and-swap, encode
// as JSON, YAML or a Table).
package apiserver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
	"k8s.io/apiserver/pkg/endpoints/filters"
	"k8s.io/apiserver/pkg/endpoints/request"
	"k8s.io/client-go/rest"

	"github.com/skep-dev/skep/controlplane/apiserver/internal/auth"
	"github.com/skep-dev/skep/controlplane/apiserver/openapi"
	"github.com/skep-dev/skep/controlplane/apiserver/registry"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/apiextensions"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/apps"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/batch"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/certificates"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/coordination"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/core"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/discovery"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/networking"
	"github.com/skep-dev/skep/controlplane/apiserver/registry/rbac"
	"github.com/skep-dev/skep/controlplane/store"
	"github.com/skep-dev/skep/internal/memnet"
	"github.com/skep-dev/skep/internal/pki"
)

// Files the server keeps in its data directory. The CA, serving
// certificate and admin token are generated on first start and reused.
const (
	caCertFile      = "pki/ca.crt"
	caKeyFile       = "pki/ca.key"
	servingCertFile = "pki/apiserver.crt"
	servingKeyFile  = "pki/apiserver.key"
	adminTokenFile  = "admin.token"
	// serviceAccountKeyFile signs ServiceAccount tokens; every server of
	// a cluster needs the same one.
	serviceAccountKeyFile = "pki/sa.key"
	// AdminKubeconfigFile is the admin kubeconfig, relative to the data dir.
	AdminKubeconfigFile = "admin.kubeconfig"
)

// Config configures a Server.
type Config struct {
	// DataDir holds the CA, serving certificate, admin token, admin
	// kubeconfig, the store (state.db) and its secrets key (secrets.key).
	DataDir string
	// Listen is host:port to serve HTTPS on (port 0 picks a free port).
	Listen string
	// AdvertiseAddress is the address other machines reach the server at;
	// it is added to the certificate and to the kubernetes service's endpoints.
	AdvertiseAddress string
	// TLSSANs are extra certificate subject alternative names.
	TLSSANs []string
	// Store overrides the store (tests); nil opens DataDir/state.db.
	Store store.Interface
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// ServiceCIDR is the service cluster IP range (default 10.96.0.0/12).
	ServiceCIDR string
	// NodePortMin and NodePortMax bound node ports (default 30000-32767).
	NodePortMin, NodePortMax int32
	// BookmarkInterval is how often idle watches asking for bookmarks get
	// one (default 30s).
	BookmarkInterval time.Duration
	// BodyReadTimeout bounds reading a request (default 60s).
	BodyReadTimeout time.Duration
	// MaxWatchTimeout ends watches that set no timeoutSeconds (default 30m).
	MaxWatchTimeout time.Duration
	// FreshnessWait is how long a list at a resourceVersion the store has
	// not reached waits for it before answering 504 (default 3s, as
	// kube-apiserver's watch cache).
	FreshnessWait time.Duration
}

// Server is a running API server.
type Server struct {
	cfg         Config
	log         *slog.Logger
	store       store.Interface
	ownStore    bool
	reg         *registry.Table
	schemas     *openapi.Schemas
	fields      fieldManagers
	crds        customResources
	ln          net.Listener
	ca          *pki.CA
	serving     tls.Certificate
	adminToken  string
	tokens      *auth.StaticTokens
	authn       authenticator.Request
	authz       authorizer.Authorizer
	rbac        *auth.RBAC
	nodeAuthz   *auth.NodeAuthorizer
	saTokens    *auth.ServiceAccountTokens
	impersonate http.Handler
	metrics     *metrics
	// lifetime ends with Close: the server's own goroutines (the RBAC
	// feed) stop with it.
	lifetime context.Context
	stop     context.CancelFunc
	// serviceCIDR is the service cluster IP range (the kubernetes
	// service has its first address).
	serviceCIDR netip.Prefix
	ready       atomic.Bool
	kubeconfig  string
	// nsState caches namespaces' lifecycle by name (checkNamespace); a
	// deleted and recreated namespace has a new revision.
	nsState sync.Map

	// loopback serves the in-process clients (loopback.go).
	loopback      *memnet.Listener
	loopbackToken string
}

// New prepares a server: data directory, certificates, token, store,
// default objects and the listening socket. Run serves.
func New(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		cfg.DataDir = "/var/lib/skep"
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:6443"
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.ServiceCIDR == "" {
		cfg.ServiceCIDR = "10.96.0.0/12"
	}
	if cfg.NodePortMin == 0 {
		cfg.NodePortMin, cfg.NodePortMax = 30000, 32767
	}
	if cfg.BookmarkInterval == 0 {
		cfg.BookmarkInterval = 30 * time.Second
	}
	if cfg.BodyReadTimeout == 0 {
		cfg.BodyReadTimeout = 60 * time.Second
	}
	if cfg.FreshnessWait == 0 {
		cfg.FreshnessWait = 3 * time.Second
	}
	if cfg.MaxWatchTimeout == 0 {
		cfg.MaxWatchTimeout = 30 * time.Minute
	}
	cidr, err := netip.ParsePrefix(cfg.ServiceCIDR)
	if err != nil || !cidr.Addr().Is4() {
		return nil, fmt.Errorf("service CIDR %q: must be an IPv4 prefix", cfg.ServiceCIDR)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, metrics: newMetrics(), serviceCIDR: cidr.Masked()}
	s.lifetime, s.stop = context.WithCancel(context.Background())

	// The store's file lock says who owns the data directory: take it
	// before writing anything there, so a second server on a directory in
	// use fails without touching the running one's kubeconfig or files.
	if cfg.Store != nil {
		s.store = cfg.Store
	} else {
		st, err := openStore(cfg.DataDir, s.metrics.reg, s.log)
		if err != nil {
			return nil, err
		}
		s.store, s.ownStore = st, true
	}
	fail := func(err error) (*Server, error) {
		if s.ln != nil {
			s.ln.Close()
		}
		if s.ownStore {
			s.store.Close()
		}
		return nil, err
	}

	ca, err := pki.LoadOrCreateCA(filepath.Join(cfg.DataDir, caCertFile), filepath.Join(cfg.DataDir, caKeyFile))
	if err != nil {
		return fail(fmt.Errorf("ca: %w", err))
	}
	if s.saTokens, err = auth.LoadOrCreateServiceAccountKey(filepath.Join(cfg.DataDir, serviceAccountKeyFile)); err != nil {
		return fail(err)
	}
	s.saTokens.Lookup = boundObjects{s}
	if s.reg, err = newTable(cidr, cfg, rbacChecker{s}, s.saTokens); err != nil {
		return fail(err)
	}
	s.schemas = newSchemas(s.reg)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fail(fmt.Errorf("listen: %w", err))
	}
	s.ln = ln
	names := []string{"127.0.0.1", "localhost", hostOf(cfg.Listen), hostOf(ln.Addr().String()), cfg.AdvertiseAddress, core.KubernetesServiceIP(s.serviceCIDR).String(),
		"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}
	names = append(names, cfg.TLSSANs...)
	serving, err := ca.LoadOrCreateServing(filepath.Join(cfg.DataDir, servingCertFile), filepath.Join(cfg.DataDir, servingKeyFile), "skep-apiserver", names)
	if err != nil {
		return fail(fmt.Errorf("serving certificate: %w", err))
	}
	token, err := pki.LoadOrCreateToken(filepath.Join(cfg.DataDir, adminTokenFile))
	if err != nil {
		return fail(fmt.Errorf("admin token: %w", err))
	}
	s.ca, s.serving, s.adminToken = ca, serving, token
	s.tokens = auth.NewStaticTokens()
	s.tokens.Add(token, &user.DefaultInfo{Name: "skep-admin", Groups: []string{user.SystemPrivilegedGroup}})
	s.rbac = auth.NewRBAC()
	s.nodeAuthz = auth.NewNodeAuthorizer(nodeRules())
	s.authz = auth.NewAuthorizer(s.nodeAuthz, s.rbac)
	clientCA := x509.NewCertPool()
	clientCA.AddCert(ca.Cert)
	s.authn = auth.NewAuthenticator(auth.AuthenticatorConfig{ClientCA: clientCA, Static: s.tokens, Tokens: []authenticator.Token{s.saTokens, &auth.BootstrapTokens{Secret: s.kubeSystemSecret}}})
	s.impersonate = filters.WithImpersonation(http.HandlerFunc(s.serveAuthorized), s.authz, codecs)
	if err := s.initLoopback(); err != nil {
		return fail(err)
	}

	s.kubeconfig = filepath.Join(cfg.DataDir, AdminKubeconfigFile)
	if err := pki.WriteKubeconfig(s.kubeconfig, "https://"+s.clientAddr(), ca.PEM, "skep-admin", token); err != nil {
		return fail(fmt.Errorf("write admin kubeconfig: %w", err))
	}

	s.store = instrumentStore(s.store, s.metrics)
	if err := s.bootstrap(context.Background()); err != nil {
		s.Close()
		return nil, fmt.Errorf("bootstrap: %w", err)
	}
	if err := s.startFeeds(context.Background()); err != nil {
		s.Close()
		return nil, err
	}
	s.ready.Store(true)
	return s, nil
}

// clientAddr is the address clients use: the listen address, with a
// wildcard host replaced by the advertise address or loopback.
func (s *Server) clientAddr() string {
	host, port, err := net.SplitHostPort(s.ln.Addr().String())
	if err != nil {
		return s.ln.Addr().String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if s.cfg.AdvertiseAddress != "" {
			host = s.cfg.AdvertiseAddress
		}
	}
	return net.JoinHostPort(host, port)
}

// KubeconfigPath is the admin kubeconfig written for this server.
func (s *Server) KubeconfigPath() string { return s.kubeconfig }

// AdminToken is the admin bearer token.
func (s *Server) AdminToken() string { return s.adminToken }

// CAPEM is the cluster CA certificate.
func (s *Server) CAPEM() []byte { return s.ca.PEM }

// RESTConfig is a client-go config for the admin user.
func (s *Server) RESTConfig() *rest.Config {
	return &rest.Config{Host: "https://" + s.clientAddr(), BearerToken: s.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: s.ca.PEM}, QPS: -1}
}

// Handler is the full HTTP handler (without TLS), for in-process tests.
func (s *Server) Handler() http.Handler {
	return s.recoverMiddleware(s.metricsMiddleware(http.HandlerFunc(s.serveHTTP)))
}

// Run serves until ctx ends, then shuts down gracefully.
func (s *Server) Run(ctx context.Context) error {
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       90 * time.Second,
		MaxHeaderBytes:    1 << 20,
		// client-go multiplexes every watch of a client over one HTTP/2
		// connection; allow as many streams as kube-apiserver does.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: 1000},
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{s.serving},
			MinVersion:   tls.VersionTLS12,
			// Client certificates (nodes') are verified by the
			// authenticator, which answers 401 for a bad one.
			ClientAuth: tls.RequestClientCert,
			NextProtos: []string{"h2", "http/1.1"},
		},
		ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		BaseContext: func(net.Listener) context.Context {
			return ctx
		},
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(s.ln, "", "") }()
	stopLoopback := s.serveLoopback(ctx)
	s.log.Info("skep API server serving", "addr", s.ln.Addr().String(), "kubeconfig", s.kubeconfig)
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
	}
	s.ready.Store(false)
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if e := srv.Shutdown(sctx); e != nil {
		srv.Close()
	}
	// The in-process clients go last: they may still be finishing work
	// while external clients drain.
	stopLoopback(sctx)
	if cerr := s.Close(); err == nil {
		err = cerr
	}
	return err
}

// Close releases the listeners, closing every in-memory connection, and
// the store (if the server opened it).
func (s *Server) Close() error {
	s.stop()
	s.ln.Close()
	if s.loopback != nil {
		s.loopback.Close()
	}
	if s.ownStore && s.store != nil {
		return s.store.Close()
	}
	return nil
}

// public paths answer without a token, like the real API server's
// system:public-info-viewer role.
func isPublic(p string) bool {
	switch p {
	case "/healthz", "/readyz", "/livez", "/version", "/version/":
		return true
	}
	return strings.HasPrefix(p, "/healthz/") || strings.HasPrefix(p, "/readyz/") || strings.HasPrefix(p, "/livez/")
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-cache, private")
	// Bound the time to read a request body; watches then stream freely.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout))
	r.Body = http.MaxBytesReader(w, r.Body, maxBodyBytes+1)

	path := r.URL.Path
	switch {
	case path == "/healthz" || path == "/livez" || strings.HasPrefix(path, "/healthz/") || strings.HasPrefix(path, "/livez/"):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
		return
	case path == "/readyz" || strings.HasPrefix(path, "/readyz/"):
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !s.ready.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready"))
			return
		}
		_, _ = w.Write([]byte("ok"))
		return
	case path == "/version" || path == "/version/":
		writeJSON(w, Version)
		return
	}
	// Everything else needs an identity: no request without one reaches
	// a handler.
	resp, ok, err := s.authn.AuthenticateRequest(r)
	if err != nil || !ok {
		writeError(w, apierrors.NewUnauthorized("Unauthorized"))
		return
	}
	r = r.WithContext(request.WithUser(r.Context(), resp.User))
	// Impersonation headers (kubectl --as) replace the user, once the
	// authenticated one may impersonate it.
	s.impersonate.ServeHTTP(w, r)
}

// serveAuthorized authorizes a request as its (possibly impersonated) user
// and routes it.
func (s *Server) serveAuthorized(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	u, _ := request.UserFrom(r.Context())
	attrs := authorizer.AttributesRecord{User: u, Verb: strings.ToLower(r.Method), Path: path}
	if api := s.reviewFor(r); api != nil {
		attrs.Verb, attrs.APIGroup, attrs.APIVersion, attrs.Resource, attrs.ResourceRequest = "create", api.gv.Group, api.gv.Version, api.resource, true
		if api.namespaced {
			attrs.Namespace = api.namespace
		}
		if !s.authorize(w, r, attrs) {
			return
		}
		s.serveReview(w, r, u, api)
		return
	}
	if strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/apis/") {
		if ri, err := s.parseResourcePath(path); err == nil {
			verb, err := verbFor(r, ri)
			if err != nil {
				// What the resource does not serve: 405, once the caller
				// may see the resource at all.
				attrs.Verb, attrs.ResourceRequest = "get", true
				attrs.APIGroup, attrs.Resource, attrs.Namespace = ri.res.GVK.Group, ri.res.Plural, ri.namespace
				if !s.authorize(w, r, attrs) {
					return
				}
				writeError(w, err)
				return
			}
			ri.verb = verb
			attrs.Verb, attrs.Resource, attrs.Subresource = verb, ri.res.Plural, ri.subName()
			attrs.APIGroup, attrs.APIVersion, attrs.Namespace, attrs.Name, attrs.ResourceRequest = ri.res.GVK.Group, ri.res.GVK.Version, ri.namespace, ri.name, true
			if !s.authorize(w, r, attrs) {
				return
			}
			setRequestInfo(r, verb, ri.res.Plural+subSuffix(ri.subName()))
			s.serveResource(w, r, ri)
			return
		}
	}
	if !s.authorize(w, r, attrs) {
		return
	}
	switch {
	case path == "/metrics":
		s.metrics.handler().ServeHTTP(w, r)
	case strings.HasPrefix(path, "/debug/pprof"):
		// Go's profiles, as kube-apiserver serves them (--profiling, on
		// by default), to those authorized for the path.
		serveProfile(w, r)
	case path == "/.well-known/openid-configuration":
		// ServiceAccount token issuer discovery, as kube-apiserver serves
		// it, for whoever verifies the tokens (system:serviceaccounts by
		// the bootstrap policy).
		js, err := auth.OpenIDConfiguration("https://" + s.clientAddr() + "/openid/v1/jwks")
		if err != nil {
			writeError(w, err)
			return
		}
		writeRaw(w, http.StatusOK, js, false)
	case path == "/openid/v1/jwks":
		js, err := s.saTokens.JWKS()
		if err != nil {
			writeError(w, err)
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		_, _ = w.Write(js)
	case path == "/openapi/v2":
		s.serveOpenAPIv2(w, r)
	case path == "/openapi/v3" || strings.HasPrefix(path, "/openapi/v3/"):
		s.serveOpenAPI(w, r)
	case r.Method == http.MethodGet && s.serveDiscovery(w, r):
	default:
		if _, err := s.parseResourcePath(path); err != nil && (strings.HasPrefix(path, "/api/") || strings.HasPrefix(path, "/apis/")) {
			writeError(w, err)
			return
		}
		writeError(w, errNoRoute())
	}
}

// authorize answers 403 with Kubernetes' message and returns false unless
// the request's user may do what attrs say.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, attrs authorizer.AttributesRecord) bool {
	ok, reason := auth.Allowed(r.Context(), s.authz, attrs)
	if ok {
		return true
	}
	writeError(w, forbidden(attrs, reason))
	return false
}

// forbidden is the 403 kube-apiserver answers a denied request with.
func forbidden(a authorizer.Attributes, reason string) error {
	name := ""
	if u := a.GetUser(); u != nil {
		name = u.GetName()
	}
	var msg string
	switch {
	case !a.IsResourceRequest():
		msg = fmt.Sprintf("User %q cannot %s path %q", name, a.GetVerb(), a.GetPath())
	default:
		resource := a.GetResource()
		if sub := a.GetSubresource(); sub != "" {
			resource += "/" + sub
		}
		if ns := a.GetNamespace(); ns != "" {
			msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q in the namespace %q", name, a.GetVerb(), resource, a.GetAPIGroup(), ns)
		} else {
			msg = fmt.Sprintf("User %q cannot %s resource %q in API group %q at the cluster scope", name, a.GetVerb(), resource, a.GetAPIGroup())
		}
	}
	if reason != "" {
		msg += ": " + reason
	}
	return apierrors.NewForbidden(schema.GroupResource{Group: a.GetAPIGroup(), Resource: a.GetResource()}, a.GetName(), errors.New(msg))
}

func subSuffix(sub string) string {
	if sub == "" {
		return ""
	}
	return "/" + sub
}

func (s *Server) recoverMiddleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				s.log.Error("panic serving request", "method", r.Method, "url", r.URL.String(), "panic", v, "stack", string(debug.Stack()))
				writeError(w, apierrors.NewInternalError(fmt.Errorf("internal error: %v", v)))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// newTable is the resource table: the rows of every served API group.
func newTable(cidr netip.Prefix, cfg Config, rc rbac.Checker, tokens *auth.ServiceAccountTokens) (*registry.Table, error) {
	opts := core.Options{ServiceCIDR: cidr, NodePortMin: cfg.NodePortMin, NodePortMax: cfg.NodePortMax}
	if tokens != nil {
		opts.Tokens = tokens
	}
	coreRows, err := core.Resources(opts)
	if err != nil {
		return nil, err
	}
	return registry.NewTable(coreRows, apps.Resources(), batch.Resources(), coordination.Resources(), discovery.Resources(), networking.Resources(),
		rbac.Resources(rc), certificates.Resources(), apiextensions.Resources())
}

// serveProfile answers /debug/pprof/... with net/http/pprof's handlers.
func serveProfile(w http.ResponseWriter, r *http.Request) {
	switch name := strings.TrimPrefix(r.URL.Path, "/debug/pprof/"); name {
	case "cmdline":
		pprof.Cmdline(w, r)
	case "profile":
		pprof.Profile(w, r)
	case "symbol":
		pprof.Symbol(w, r)
	case "trace":
		pprof.Trace(w, r)
	default:
		pprof.Index(w, r) // the index, and the named profiles (heap, goroutine, …)
	}
}

// CA is the cluster certificate authority, which the in-process
// controllers sign approved certificate requests with.
func (s *Server) CA() *pki.CA { return s.ca }
