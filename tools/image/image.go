// Package image builds small single-layer OCI images as OCI image-layout tar
// archives, the format `ctr images import` (and containerd's Go client
// Import) reads, so the lab and tests run images without a registry.
//
// The archive holds:
//
//	oci-layout                      {"imageLayoutVersion":"1.0.0"}
//	index.json                      one manifest, named by annotations
//	blobs/sha256/<layer>            uncompressed tar of the files
//	blobs/sha256/<config>           OCI image config (entrypoint, env, diff_ids)
//	blobs/sha256/<manifest>         OCI image manifest
package image

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// OCI media types used in the archive.
const (
	MediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	MediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"
)

// File is one regular file of the image's single layer.
type File struct {
	Path string // absolute path in the image, e.g. "/pause"
	Mode int64  // permission bits, e.g. 0o755
	Data []byte
}

// HostFile reads a file of this machine into a File at imagePath.
func HostFile(hostPath, imagePath string, mode int64) (File, error) {
	b, err := os.ReadFile(hostPath)
	if err != nil {
		return File{}, fmt.Errorf("read %s: %w", hostPath, err)
	}
	return File{Path: imagePath, Mode: mode, Data: b}, nil
}

// Image describes what to build.
type Image struct {
	// Name is the full reference the image is imported as, e.g.
	// "skep.local/pause:1". It must be fully qualified (a domain with a
	// dot) so runtimes do not rewrite it to docker.io.
	Name       string
	Files      []File
	Symlinks   map[string]string // link path -> target
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type blob struct {
	desc descriptor
	data []byte
}

func newBlob(mediaType string, data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{desc: descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}, data: data}
}

// fixedTime keeps archives reproducible: the same files give the same digests.
var fixedTime = time.Unix(0, 0).UTC()

// layer is the uncompressed tar of the files, with their parent directories.
func (im Image) layer() ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	var addDirs func(p string) error
	addDirs = func(p string) error {
		d := path.Dir(p)
		if d == "/" || d == "." || dirs[d] {
			return nil
		}
		if err := addDirs(d); err != nil {
			return err
		}
		dirs[d] = true
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: strings.TrimPrefix(d, "/") + "/", Mode: 0o755, ModTime: fixedTime})
	}
	files := append([]File(nil), im.Files...)
	sort.Slice(files, func(i, j int) bool { return files[i].Path < files[j].Path })
	for _, f := range files {
		if !path.IsAbs(f.Path) {
			return nil, fmt.Errorf("image file %q: path must be absolute", f.Path)
		}
		if err := addDirs(f.Path); err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: strings.TrimPrefix(f.Path, "/"), Mode: f.Mode, Size: int64(len(f.Data)), ModTime: fixedTime}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.Data); err != nil {
			return nil, err
		}
	}
	links := make([]string, 0, len(im.Symlinks))
	for l := range im.Symlinks {
		links = append(links, l)
	}
	sort.Strings(links)
	for _, l := range links {
		if err := addDirs(l); err != nil {
			return nil, err
		}
		hdr := &tar.Header{Typeflag: tar.TypeSymlink, Name: strings.TrimPrefix(l, "/"), Linkname: im.Symlinks[l], Mode: 0o777, ModTime: fixedTime}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArchive writes the image as an OCI image-layout tar to w.
func (im Image) WriteArchive(w io.Writer) error {
	if im.Name == "" {
		return fmt.Errorf("image has no name")
	}
	layerData, err := im.layer()
	if err != nil {
		return fmt.Errorf("build layer: %w", err)
	}
	layer := newBlob(MediaTypeLayer, layerData)

	type execConfig struct {
		Entrypoint []string `json:"Entrypoint,omitempty"`
		Cmd        []string `json:"Cmd,omitempty"`
		Env        []string `json:"Env,omitempty"`
		WorkingDir string   `json:"WorkingDir,omitempty"`
	}
	cfgData, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      fixedTime.Format(time.RFC3339),
		"config":       execConfig{Entrypoint: im.Entrypoint, Cmd: im.Cmd, Env: im.Env, WorkingDir: im.WorkingDir},
		// Uncompressed layer: its diff id is its digest.
		"rootfs": map[string]any{"type": "layers", "diff_ids": []string{layer.desc.Digest}},
	})
	if err != nil {
		return err
	}
	cfg := newBlob(MediaTypeConfig, cfgData)

	manData, err := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     MediaTypeManifest,
		"config":        cfg.desc,
		"layers":        []descriptor{layer.desc},
	})
	if err != nil {
		return err
	}
	man := newBlob(MediaTypeManifest, manData)

	tag := "latest"
	if i := strings.LastIndex(im.Name, ":"); i > strings.LastIndex(im.Name, "/") {
		tag = im.Name[i+1:]
	}
	idxDesc := man.desc
	idxDesc.Platform = &platform{Architecture: runtime.GOARCH, OS: "linux"}
	idxDesc.Annotations = map[string]string{
		// containerd names the image after this one...
		"io.containerd.image.name": im.Name,
		// ...other tools after the tag.
		"org.opencontainers.image.ref.name": tag,
	}
	idxData, err := json.Marshal(map[string]any{"schemaVersion": 2, "manifests": []descriptor{idxDesc}})
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	put := func(name string, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)), ModTime: fixedTime}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	if err := put("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	for _, b := range []blob{layer, cfg, man} {
		if err := put("blobs/sha256/"+strings.TrimPrefix(b.desc.Digest, "sha256:"), b.data); err != nil {
			return err
		}
	}
	if err := put("index.json", idxData); err != nil {
		return err
	}
	return tw.Close()
}

// WriteArchiveFile writes the archive to a file at p.
func (im Image) WriteArchiveFile(p string) error {
	f, err := os.Create(p)
	if err != nil {
		return err
	}
	if err := im.WriteArchive(f); err != nil {
		f.Close()
		return fmt.Errorf("write image %s: %w", im.Name, err)
	}
	return f.Close()
}

// Pause is the pod sandbox image: the static pause binary at /pause.
func Pause(name string, pauseBinary []byte) Image {
	return Image{
		Name:       name,
		Files:      []File{{Path: "/pause", Mode: 0o755, Data: pauseBinary}},
		Entrypoint: []string{"/pause"},
	}
}

// DefaultBusyboxApplets are the commands the busybox image links by default.
var DefaultBusyboxApplets = []string{"sh", "ls", "cat", "echo", "env", "sleep", "true", "false",
	"ps", "hostname", "ip", "ping", "wget", "nc", "httpd", "grep", "mkdir", "rm"}

// Busybox is a small shell image from this machine's static busybox
// (Debian's busybox-static at /bin/busybox): /bin/busybox, a link per applet
// (DefaultBusyboxApplets when none are given), PATH set and /bin/sh as the
// entrypoint.
func Busybox(name, busyboxPath string, applets ...string) (Image, error) {
	bb, err := HostFile(busyboxPath, "/bin/busybox", 0o755)
	if err != nil {
		return Image{}, err
	}
	if len(applets) == 0 {
		applets = DefaultBusyboxApplets
	}
	links := make(map[string]string, len(applets))
	for _, a := range applets {
		links["/bin/"+a] = "busybox"
	}
	return Image{
		Name:       name,
		Files:      []File{bb},
		Symlinks:   links,
		Entrypoint: []string{"/bin/sh"},
		Env:        []string{"PATH=/bin"},
	}, nil
}
