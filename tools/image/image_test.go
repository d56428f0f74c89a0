package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
)

// The archive is a valid OCI layout: index -> manifest -> config and layer,
// every blob stored under its own digest, the layer holding the files.
func TestArchiveIsConsistent(t *testing.T) {
	im := Image{
		Name:       "skep.local/test/tool:v1",
		Files:      []File{{Path: "/bin/tool", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")}},
		Symlinks:   map[string]string{"/usr/bin/tool": "/bin/tool"},
		Entrypoint: []string{"/bin/tool"},
	}
	var buf bytes.Buffer
	if err := im.WriteArchive(&buf); err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{}
	tr := tar.NewReader(&buf)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(tr)
		files[h.Name] = b
	}
	blob := func(d string) []byte {
		t.Helper()
		b, ok := files["blobs/sha256/"+strings.TrimPrefix(d, "sha256:")]
		if !ok {
			t.Fatalf("missing blob %s", d)
		}
		sum := sha256.Sum256(b)
		if "sha256:"+hex.EncodeToString(sum[:]) != d {
			t.Fatalf("blob %s has another digest", d)
		}
		return b
	}
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Fatalf("oci-layout: %q", files["oci-layout"])
	}
	var idx struct {
		Manifests []descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(files["index.json"], &idx); err != nil || len(idx.Manifests) != 1 {
		t.Fatalf("index: %v %s", err, files["index.json"])
	}
	if idx.Manifests[0].Annotations["io.containerd.image.name"] != im.Name ||
		idx.Manifests[0].Annotations["org.opencontainers.image.ref.name"] != "v1" {
		t.Fatalf("annotations: %v", idx.Manifests[0].Annotations)
	}
	var man struct {
		Config descriptor   `json:"config"`
		Layers []descriptor `json:"layers"`
	}
	json.Unmarshal(blob(idx.Manifests[0].Digest), &man)
	var cfg struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	json.Unmarshal(blob(man.Config.Digest), &cfg)
	if len(man.Layers) != 1 || cfg.RootFS.DiffIDs[0] != man.Layers[0].Digest || cfg.Config.Entrypoint[0] != "/bin/tool" {
		t.Fatalf("manifest %+v config %+v", man, cfg)
	}
	lr := tar.NewReader(bytes.NewReader(blob(man.Layers[0].Digest)))
	var names []string
	for {
		h, err := lr.Next()
		if err != nil {
			break
		}
		names = append(names, h.Name)
		if h.Name == "bin/tool" && h.Mode != 0o755 {
			t.Errorf("mode %o", h.Mode)
		}
	}
	if strings.Join(names, " ") != "bin/ bin/tool usr/ usr/bin/ usr/bin/tool" {
		t.Fatalf("layer entries: %v", names)
	}
	// Reproducible: same input, same bytes.
	var again bytes.Buffer
	im.WriteArchive(&again)
	var first bytes.Buffer
	im.WriteArchive(&first)
	if !bytes.Equal(first.Bytes(), again.Bytes()) {
		t.Fatal("archive not reproducible")
	}
}

func TestBusybox(t *testing.T) {
	im, err := Busybox("skep.local/busybox:1", "/proc/self/exe", "sh", "ping")
	if err != nil {
		t.Fatal(err)
	}
	layer, err := im.layer()
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(layer))
	got := map[string]string{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		got[h.Name] = h.Linkname
	}
	if _, ok := got["bin/busybox"]; !ok || got["bin/sh"] != "busybox" || got["bin/ping"] != "busybox" {
		t.Fatalf("layer %v", got)
	}
	if _, err := Busybox("x", "/nonexistent/busybox"); err == nil {
		t.Fatal("missing busybox accepted")
	}
}
