package apiserver

import (
	"encoding/json"
	"net"
	"net/http"
	"runtime"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/version"
)

// Version is what /version reports; kubectl and client-go compare it with
// their own for skew warnings and feature checks.
var Version = version.Info{
	Major: "1", Minor: "33", GitVersion: "v1.33.0", GitCommit: "skep", GitTreeState: "clean",
	BuildDate: "2026-01-01T00:00:00Z", GoVersion: runtime.Version(), Compiler: runtime.Compiler,
	Platform: runtime.GOOS + "/" + runtime.GOARCH,
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	js, err := json.Marshal(v)
	if err != nil {
		writeError(w, err)
		return
	}
	writeRaw(w, http.StatusOK, js, false)
}

// serveDiscovery answers the legacy (unaggregated) discovery documents;
// clients asking for aggregated discovery fall back to these.
func (s *Server) serveDiscovery(w http.ResponseWriter, r *http.Request) bool {
	path := strings.TrimSuffix(r.URL.Path, "/")
	switch {
	case path == "/api":
		writeJSON(w, &metav1.APIVersions{TypeMeta: metav1.TypeMeta{Kind: "APIVersions"}, Versions: []string{"v1"},
			ServerAddressByClientCIDRs: []metav1.ServerAddressByClientCIDR{{ClientCIDR: "0.0.0.0/0", ServerAddress: s.Addr()}}})
		return true
	case path == "/apis":
		list := &metav1.APIGroupList{TypeMeta: metav1.TypeMeta{Kind: "APIGroupList", APIVersion: "v1"}}
		for _, gv := range s.reg.GroupVersions() {
			if gv.Group != "" {
				list.Groups = append(list.Groups, s.apiGroup(gv))
			}
		}
		for _, a := range reviewAPIs {
			list.Groups = append(list.Groups, s.apiGroup(a.gv))
		}
		writeJSON(w, list)
		return true
	case path == "/api/v1":
		writeJSON(w, s.resourceList(schema.GroupVersion{Version: "v1"}))
		return true
	}
	segs := strings.Split(strings.Trim(path, "/"), "/")
	if segs[0] != "apis" {
		return false
	}
	for _, a := range reviewAPIs {
		if len(segs) == 2 && segs[1] == a.gv.Group {
			g := s.apiGroup(a.gv)
			g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
			writeJSON(w, &g)
			return true
		}
		if len(segs) == 3 && segs[1] == a.gv.Group && segs[2] == a.gv.Version {
			writeJSON(w, a.resourceList())
			return true
		}
	}
	for _, gv := range s.reg.GroupVersions() {
		if gv.Group == "" {
			continue
		}
		if len(segs) == 2 && segs[1] == gv.Group {
			g := s.apiGroup(gv)
			g.TypeMeta = metav1.TypeMeta{Kind: "APIGroup", APIVersion: "v1"}
			writeJSON(w, &g)
			return true
		}
		if len(segs) == 3 && segs[1] == gv.Group && segs[2] == gv.Version {
			writeJSON(w, s.resourceList(gv))
			return true
		}
	}
	return false
}

func (s *Server) apiGroup(gv schema.GroupVersion) metav1.APIGroup {
	v := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
	return metav1.APIGroup{Name: gv.Group, Versions: []metav1.GroupVersionForDiscovery{v}, PreferredVersion: v}
}

func (s *Server) resourceList(gv schema.GroupVersion) *metav1.APIResourceList {
	list := &metav1.APIResourceList{TypeMeta: metav1.TypeMeta{Kind: "APIResourceList", APIVersion: "v1"}, GroupVersion: gv.String(), APIResources: []metav1.APIResource{}}
	for _, r := range s.reg.All {
		if r.GVK.GroupVersion() != gv {
			continue
		}
		list.APIResources = append(list.APIResources, metav1.APIResource{
			Name: r.Plural, SingularName: r.Singular, Namespaced: r.Namespaced, Kind: r.GVK.Kind,
			Verbs:      metav1.Verbs(r.Verbs),
			ShortNames: r.ShortNames, Categories: r.Categories,
		})
		for _, sub := range r.Subresources {
			ar := metav1.APIResource{Name: r.Plural + "/" + sub.Name, Namespaced: r.Namespaced, Kind: r.GVK.Kind, Verbs: sub.Verbs}
			if sub.Kind.Kind != "" {
				ar.Kind = sub.Kind.Kind
				if gv := sub.Kind.GroupVersion(); gv != r.GVK.GroupVersion() {
					ar.Group, ar.Version = gv.Group, gv.Version
				}
			}
			list.APIResources = append(list.APIResources, ar)
		}
	}
	sort.SliceStable(list.APIResources, func(i, j int) bool { return list.APIResources[i].Name < list.APIResources[j].Name })
	return list
}

// Addr is the host:port the server listens on.
func (s *Server) Addr() string {
	if s.ln != nil {
		return s.ln.Addr().String()
	}
	return s.cfg.Listen
}

func hostOf(addr string) string {
	h, _, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h
}
