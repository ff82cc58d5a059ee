package image

import (
	"bytes"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The artifact types of what is attached to each image.
const (
	SBOMType       = "application/spdx+json"
	ProvenanceType = "application/vnd.in-toto+json"
	// emptyConfig is OCI's empty descriptor's media type, for artifacts.
	emptyConfig = "application/vnd.oci.empty.v1+json"
)

// spdxDocument is the part of SPDX 2.3 the SBOM uses.
type spdxDocument struct {
	SPDXVersion       string             `json:"spdxVersion"`
	DataLicense       string             `json:"dataLicense"`
	SPDXID            string             `json:"SPDXID"`
	Name              string             `json:"name"`
	DocumentNamespace string             `json:"documentNamespace"`
	CreationInfo      spdxCreation       `json:"creationInfo"`
	Packages          []spdxPackage      `json:"packages"`
	Relationships     []spdxRelationship `json:"relationships"`
}

type spdxCreation struct {
	Created  string   `json:"created"`
	Creators []string `json:"creators"`
}

type spdxPackage struct {
	SPDXID           string    `json:"SPDXID"`
	Name             string    `json:"name"`
	VersionInfo      string    `json:"versionInfo,omitempty"`
	DownloadLocation string    `json:"downloadLocation"`
	FilesAnalyzed    bool      `json:"filesAnalyzed"`
	Checksums        []spdxSum `json:"checksums,omitempty"`
	ExternalRefs     []spdxRef `json:"externalRefs,omitempty"`
}

type spdxSum struct {
	Algorithm string `json:"algorithm"`
	Value     string `json:"checksumValue"`
}

type spdxRef struct {
	Category string `json:"referenceCategory"`
	Type     string `json:"referenceType"`
	Locator  string `json:"referenceLocator"`
}

type spdxRelationship struct {
	Element string `json:"spdxElementId"`
	Type    string `json:"relationshipType"`
	Related string `json:"relatedSpdxElement"`
}

// sbom lists the image's Debian packages and the Go modules linked into
// its binary.
func sbom(opts Options, p v1.Platform, image v1.Hash, pkgs []Package, binary string) ([]byte, error) {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	doc := spdxDocument{
		SPDXVersion: "SPDX-2.3", DataLicense: "CC0-1.0", SPDXID: "SPDXRef-DOCUMENT",
		Name:              fmt.Sprintf("converge %s %s/%s", opts.Version, p.OS, p.Architecture),
		DocumentNamespace: "https://converge.dev/spdx/image/" + image.Hex,
		CreationInfo:      spdxCreation{Created: opts.Created.UTC().Format(time.RFC3339), Creators: []string{"Tool: converge internal/image"}},
	}
	add := func(pkg spdxPackage) {
		doc.Packages = append(doc.Packages, pkg)
		doc.Relationships = append(doc.Relationships, spdxRelationship{Element: "SPDXRef-image", Type: "CONTAINS", Related: pkg.SPDXID})
	}
	doc.Packages = append(doc.Packages, spdxPackage{SPDXID: "SPDXRef-image", Name: "converge", VersionInfo: opts.Version, DownloadLocation: "NOASSERTION",
		Checksums: []spdxSum{{Algorithm: "SHA256", Value: image.Hex}}})
	doc.Relationships = append(doc.Relationships, spdxRelationship{Element: "SPDXRef-DOCUMENT", Type: "DESCRIBES", Related: "SPDXRef-image"})
	add(spdxPackage{SPDXID: "SPDXRef-go-" + spdxID(info.Main.Path), Name: info.Main.Path, VersionInfo: opts.Version, DownloadLocation: orNoAssertion(opts.Source),
		ExternalRefs: []spdxRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: purlGo(info.Main.Path, opts.Version)}}})
	add(spdxPackage{SPDXID: "SPDXRef-go-stdlib", Name: "stdlib", VersionInfo: info.GoVersion, DownloadLocation: "https://go.dev/dl/",
		ExternalRefs: []spdxRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: purlGo("stdlib", info.GoVersion)}}})
	for _, m := range info.Deps {
		if m.Replace != nil {
			m = m.Replace
		}
		add(spdxPackage{SPDXID: "SPDXRef-go-" + spdxID(m.Path), Name: m.Path, VersionInfo: m.Version, DownloadLocation: "https://proxy.golang.org/" + m.Path + "/@v/" + m.Version + ".zip",
			ExternalRefs: []spdxRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: purlGo(m.Path, m.Version)}}})
	}
	for _, pkg := range pkgs {
		add(spdxPackage{SPDXID: "SPDXRef-deb-" + spdxID(pkg.Name), Name: pkg.Name, VersionInfo: pkg.Version, DownloadLocation: "NOASSERTION",
			Checksums:    []spdxSum{{Algorithm: "SHA256", Value: pkg.SHA256}},
			ExternalRefs: []spdxRef{{Category: "PACKAGE-MANAGER", Type: "purl", Locator: fmt.Sprintf("pkg:deb/debian/%s@%s?arch=%s", pkg.Name, url.PathEscape(pkg.Version), pkg.Architecture)}}})
	}
	return json.MarshalIndent(doc, "", "  ")
}

func purlGo(path, version string) string {
	return "pkg:golang/" + path + "@" + url.PathEscape(version)
}

// spdxID makes s an SPDX identifier's tail (letters, digits, '.', '-').
func spdxID(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '-' {
			return r
		}
		return '-'
	}, s)
}

func orNoAssertion(s string) string {
	if s == "" {
		return "NOASSERTION"
	}
	return s
}

// provenance is an in-toto statement of SLSA provenance v1 for the image:
// what it was built from (the commit, the Go toolchain, each package's
// file) and by what.
func provenance(opts Options, p v1.Platform, image v1.Hash, pkgs []Package, binary string) ([]byte, error) {
	info, err := buildinfo.ReadFile(binary)
	if err != nil {
		return nil, err
	}
	type digest map[string]string
	type dependency struct {
		URI    string `json:"uri"`
		Digest digest `json:"digest"`
		Name   string `json:"name,omitempty"`
	}
	deps := []dependency{{URI: "git+" + opts.Source + "@" + opts.Commit, Digest: digest{"gitCommit": opts.Commit}}}
	for _, pkg := range pkgs {
		deps = append(deps, dependency{URI: fmt.Sprintf("pkg:deb/debian/%s@%s?arch=%s", pkg.Name, url.PathEscape(pkg.Version), pkg.Architecture), Digest: digest{"sha256": pkg.SHA256}})
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	statement := map[string]any{
		"_type":         "https://in-toto.io/Statement/v1",
		"subject":       []any{map[string]any{"name": "converge", "digest": digest{"sha256": image.Hex}}},
		"predicateType": "https://slsa.dev/provenance/v1",
		"predicate": map[string]any{
			"buildDefinition": map[string]any{
				"buildType":            "https://converge.dev/image/v1",
				"externalParameters":   map[string]any{"platform": p.OS + "/" + p.Architecture, "version": opts.Version, "source": opts.Source, "basePackages": BasePackages},
				"internalParameters":   map[string]any{"goVersion": info.GoVersion, "goBuildSettings": settings},
				"resolvedDependencies": deps,
			},
			"runDetails": map[string]any{
				"builder":  map[string]any{"id": "https://converge.dev/image/make-image"},
				"metadata": map[string]any{"startedOn": opts.Created.UTC().Format(time.RFC3339)},
			},
		},
	}
	return json.MarshalIndent(statement, "", "  ")
}

// attestations are the SBOM and the provenance of the image desc
// describes, each an OCI artifact whose subject is that image.
func attestations(opts Options, p v1.Platform, desc v1.Descriptor, pkgs []Package, binary string) ([]v1.Image, error) {
	var out []v1.Image
	for _, a := range []struct {
		typ  string
		make func(Options, v1.Platform, v1.Hash, []Package, string) ([]byte, error)
	}{{SBOMType, sbom}, {ProvenanceType, provenance}} {
		data, err := a.make(opts, p, desc.Digest, pkgs, binary)
		if err != nil {
			return nil, err
		}
		art, err := artifact(a.typ, data, desc)
		if err != nil {
			return nil, err
		}
		out = append(out, art)
	}
	return out, nil
}

// artifact is an OCI 1.1 artifact manifest: artifactType typ, the empty
// config, one layer of data, and subject.
func artifact(typ string, data []byte, subject v1.Descriptor) (v1.Image, error) {
	subject.Platform = nil
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, emptyConfig)
	img, err := mutate.Append(img, mutate.Addendum{Layer: static.NewLayer(data, types.MediaType(typ)), MediaType: types.MediaType(typ)})
	if err != nil {
		return nil, err
	}
	img = mutate.Subject(img, subject).(v1.Image)
	return &withArtifactType{Image: img, typ: typ}, nil
}

// withArtifactType is an image whose manifest names its artifactType and
// whose config is empty ({}), which mutate has no option for.
type withArtifactType struct {
	v1.Image
	typ string
}

func (a *withArtifactType) RawConfigFile() ([]byte, error) { return []byte("{}"), nil }

func (a *withArtifactType) Manifest() (*v1.Manifest, error) {
	m, err := a.Image.Manifest()
	if err != nil {
		return nil, err
	}
	m = m.DeepCopy()
	m.ArtifactType = a.typ
	// The config is empty ({}); its media type is the artifact's too, for
	// registries older than OCI 1.1, which take that as the type.
	m.Config = v1.Descriptor{MediaType: types.MediaType(a.typ), Size: 2, Digest: emptyDigest}
	return m, nil
}

var emptyDigest = v1.Hash{Algorithm: "sha256", Hex: "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"}

func (a *withArtifactType) RawManifest() ([]byte, error) {
	m, err := a.Manifest()
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func (a *withArtifactType) Digest() (v1.Hash, error) { return partial.Digest(a) }
func (a *withArtifactType) Size() (int64, error)     { return partial.Size(a) }
func (a *withArtifactType) ConfigName() (v1.Hash, error) {
	return emptyDigest, nil
}

func (a *withArtifactType) ConfigLayer() (v1.Layer, error) {
	return static.NewLayer([]byte("{}"), types.MediaType(a.typ)), nil
}
