// Package chartrepo serves Helm charts for tests: a Helm repository (a
// static index.yaml and archives over HTTP) and an OCI registry
// (go-containerregistry's registry), both on loopback.
package chartrepo

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"sigs.k8s.io/yaml"
)

// Package makes a chart archive: Chart.yaml for name and version, plus
// files (paths relative to the chart).
func Package(name, version string, files map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	all := map[string]string{"Chart.yaml": fmt.Sprintf("apiVersion: v2\nname: %s\nversion: %s\n", name, version)}
	for k, v := range files {
		all[k] = v
	}
	names := make([]string, 0, len(all))
	for k := range all {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, n := range names {
		data := []byte(all[n])
		_ = tw.WriteHeader(&tar.Header{Name: name + "/" + n, Mode: 0o644, Size: int64(len(data)), ModTime: time.Unix(0, 0)})
		_, _ = tw.Write(data)
	}
	_ = tw.Close()
	_ = gz.Close()
	return buf.Bytes()
}

// Digest is "sha256:<hex>" of data.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// HelmRepo is a Helm repository over HTTP.
type HelmRepo struct {
	*httptest.Server
	mu     sync.Mutex
	charts map[string][]byte // file name -> archive
	index  map[string][]map[string]any
	// Username and Password, when set, are required (basic auth); Token,
	// when set, is required as a bearer token.
	Username, Password, Token string
	// Requests counts requests by path; Authorized those with credentials.
	Requests, Authorized map[string]int
}

// NewHelmRepo starts an empty repository.
func NewHelmRepo() *HelmRepo {
	r := &HelmRepo{charts: map[string][]byte{}, index: map[string][]map[string]any{}, Requests: map[string]int{}, Authorized: map[string]int{}}
	r.Server = httptest.NewServer(http.HandlerFunc(r.serve))
	return r
}

// Add publishes a chart archive (from Package) and returns its digest.
func (r *HelmRepo) Add(name, version string, archive []byte) string {
	file := fmt.Sprintf("%s-%s.tgz", name, version)
	r.mu.Lock()
	r.charts[file] = archive
	r.mu.Unlock()
	return r.AddAt(name, version, file, archive)
}

// AddAt lists a chart in the index at url (relative or absolute) without
// serving it: another server may.
func (r *HelmRepo) AddAt(name, version, url string, archive []byte) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	digest := Digest(archive)
	r.index[name] = append(r.index[name], map[string]any{
		"apiVersion": "v2", "name": name, "version": version,
		"urls": []string{url}, "digest": strings.TrimPrefix(digest, "sha256:"), "created": time.Now().UTC().Format(time.RFC3339),
	})
	return digest
}

// RequestCount is how many requests the repository received in all.
func (r *HelmRepo) RequestCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, c := range r.Requests {
		n += c
	}
	return n
}

func (r *HelmRepo) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.Requests[req.URL.Path]++
	user, pass, ok := req.BasicAuth()
	bearer := strings.TrimPrefix(req.Header.Get("Authorization"), "Bearer ")
	if ok || req.Header.Get("Authorization") != "" {
		r.Authorized[req.URL.Path]++
	}
	if (r.Username != "" && (!ok || user != r.Username || pass != r.Password)) || (r.Token != "" && bearer != r.Token) {
		w.Header().Set("WWW-Authenticate", `Basic realm="charts"`)
		http.Error(w, "unauthorized", http.StatusUnauthorized)
		return
	}
	path := strings.TrimPrefix(req.URL.Path, "/")
	if path == "index.yaml" {
		data, _ := yaml.Marshal(map[string]any{"apiVersion": "v1", "entries": r.index, "generated": time.Now().UTC().Format(time.RFC3339)})
		_, _ = w.Write(data)
		return
	}
	if data, ok := r.charts[path]; ok {
		_, _ = w.Write(data)
		return
	}
	http.NotFound(w, req)
}

// Registry is an OCI registry on loopback.
type Registry struct {
	*httptest.Server
	// Host is host:port, for oci://Host/... references.
	Host string
}

// NewRegistry starts an empty registry.
func NewRegistry() *Registry {
	s := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	return &Registry{Server: s, Host: strings.TrimPrefix(s.URL, "http://")}
}

// Push stores a chart archive as Helm does, at repository:tag, and
// returns the manifest's digest.
func (r *Registry) Push(repository, tag string, archive []byte) (string, error) {
	ref, err := name.ParseReference(r.Host + "/" + repository + ":" + tag)
	if err != nil {
		return "", err
	}
	layer := static.NewLayer(archive, "application/vnd.cncf.helm.chart.content.v1.tar+gzip")
	img, err := mutate.Append(empty.Image, mutate.Addendum{Layer: layer})
	if err != nil {
		return "", err
	}
	img = mutate.MediaType(img, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, "application/vnd.cncf.helm.config.v1+json")
	if err := remote.Write(ref, img); err != nil {
		return "", err
	}
	d, err := img.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}
