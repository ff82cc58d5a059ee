package render

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strconv"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utiljson "k8s.io/apimachinery/pkg/util/json"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

// Object is one desired object and where it came from.
type Object struct {
	*unstructured.Unstructured
	// Source names the file and document, e.g. "apps/web.yaml#2" (documents
	// count from 1), or the template for Helm ("templates/deploy.yaml").
	Source string
}

// Ref returns "Kind/namespace/name" or "Kind/name" for cluster-scoped
// objects: the way errors and output name an object.
func (o Object) Ref() string { return Ref(o.Unstructured) }

// Ref names u as "Kind/namespace/name" or "Kind/name".
func Ref(u *unstructured.Unstructured) string {
	if ns := u.GetNamespace(); ns != "" {
		return u.GetKind() + "/" + ns + "/" + u.GetName()
	}
	return u.GetKind() + "/" + u.GetName()
}

// Key identifies an object within a desired set: group, kind, namespace and
// name. The version is not part of it: one object served at two versions is
// still one object.
type Key struct {
	Group, Kind, Namespace, Name string
}

// KeyOf returns u's key.
func KeyOf(u *unstructured.Unstructured) Key {
	return Key{Group: u.GroupVersionKind().Group, Kind: u.GetKind(), Namespace: u.GetNamespace(), Name: u.GetName()}
}

func (k Key) String() string {
	gk := schema.GroupKind{Group: k.Group, Kind: k.Kind}.String()
	if k.Namespace != "" {
		return gk + "/" + k.Namespace + "/" + k.Name
	}
	return gk + "/" + k.Name
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// decode parses a stream of YAML documents (or one JSON document) into
// objects. Empty documents and comment-only documents are skipped. Errors
// name the file, the document and, when the parser gives one, the line in the
// file.
func decode(file string, data []byte) ([]Object, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objs []Object
	line := 1 // first line of the current document in the file
	for doc := 1; ; doc++ {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: document %d: %w", file, doc, err)
		}
		start := line
		// The reader drops the "---" line that ends each document.
		line += bytes.Count(raw, []byte("\n")) + 1
		if len(bytes.TrimSpace(stripComments(raw))) == 0 {
			doc--
			continue
		}
		obj, err := decodeDocument(raw)
		if err != nil {
			msg := yamlLine.ReplaceAllStringFunc(err.Error(), func(m string) string {
				n, _ := strconv.Atoi(yamlLine.FindStringSubmatch(m)[1])
				return "line " + strconv.Itoa(start+n-1)
			})
			return nil, fmt.Errorf("%s: document %d: %s", file, doc, msg)
		}
		if obj == nil {
			continue
		}
		for _, o := range obj {
			objs = append(objs, Object{Unstructured: o, Source: fmt.Sprintf("%s#%d", file, doc)})
		}
	}
}

// decodeDocument parses one document. A List kind is expanded into its
// items.
func decodeDocument(raw []byte) ([]*unstructured.Unstructured, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(bytes.TrimSpace(js), []byte("null")) {
		return nil, nil
	}
	// apimachinery's JSON decoding keeps whole numbers as int64, as the
	// API machinery itself does, rather than float64.
	var content map[string]any
	if err := utiljson.Unmarshal(js, &content); err != nil {
		return nil, fmt.Errorf("not an object: %w", err)
	}
	u := &unstructured.Unstructured{Object: content}
	if u.IsList() {
		list, err := u.ToList()
		if err != nil {
			return nil, err
		}
		out := make([]*unstructured.Unstructured, 0, len(list.Items))
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
		return out, nil
	}
	return []*unstructured.Unstructured{u}, nil
}

func stripComments(raw []byte) []byte {
	var out bytes.Buffer
	for _, l := range bytes.Split(raw, []byte("\n")) {
		t := bytes.TrimSpace(l)
		if len(t) == 0 || t[0] == '#' || bytes.Equal(t, []byte("---")) {
			continue
		}
		out.Write(l)
		out.WriteByte('\n')
	}
	return out.Bytes()
}

// isManifest reports whether u looks like a Kubernetes object at all: it has
// apiVersion or kind. Documents with neither (a values file, a CI config) are
// not manifests.
func isManifest(u *unstructured.Unstructured) bool {
	return u.GetAPIVersion() != "" || u.GetKind() != ""
}

// validate checks what every object needs before it can be applied.
func validate(o Object) error {
	switch {
	case o.GetAPIVersion() == "":
		return fmt.Errorf("%s: %s has no apiVersion", o.Source, describe(o))
	case o.GetKind() == "":
		return fmt.Errorf("%s: %s has no kind", o.Source, describe(o))
	case o.GetName() == "":
		if o.GetGenerateName() != "" && IsHook(o.Unstructured) {
			break // a hook is created anew each time it runs
		}
		if o.GetGenerateName() != "" {
			return fmt.Errorf("%s: %s uses metadata.generateName, which cannot be synced declaratively; set metadata.name (only hooks may use generateName)", o.Source, describe(o))
		}
		return fmt.Errorf("%s: %s has no metadata.name", o.Source, describe(o))
	}
	if _, err := schema.ParseGroupVersion(o.GetAPIVersion()); err != nil {
		return fmt.Errorf("%s: %s: apiVersion: %w", o.Source, describe(o), err)
	}
	return nil
}

// HookAnnotations are the annotations that make an object a hook, which
// runs at a phase of a sync instead of being kept in sync: converge's own,
// Argo CD's and Helm's.
// converge's wins over Argo CD's, which wins over Helm's.
var HookAnnotations = []string{AnnotationHook, AnnotationArgoHook, AnnotationHelmHook}

// The hook annotations.
const (
	AnnotationHook     = "converge.dev/hook"
	AnnotationArgoHook = "argocd.argoproj.io/hook"
	AnnotationHelmHook = "helm.sh/hook"
)

// IsHook reports whether u carries a hook annotation.
func IsHook(u *unstructured.Unstructured) bool {
	ann := u.GetAnnotations()
	for _, k := range HookAnnotations {
		if _, ok := ann[k]; ok {
			return true
		}
	}
	return false
}

func describe(o Object) string {
	switch {
	case o.GetKind() != "" && o.GetName() != "":
		return o.Ref()
	case o.GetKind() != "":
		return "a " + o.GetKind()
	case o.GetName() != "":
		return "object " + strconv.Quote(o.GetName())
	}
	return "the object"
}

// finish validates objs, refuses duplicates and sorts them by key so that a
// render's output does not depend on file order.
func finish(objs []Object, maxObjectSize int) ([]Object, error) {
	seen := make(map[Key]string, len(objs))
	for _, o := range objs {
		if err := validate(o); err != nil {
			return nil, err
		}
		if sopsEncrypted(o.Object) {
			// Decryption happens as files are read; an object that still
			// carries SOPS metadata would be applied as ciphertext.
			return nil, fmt.Errorf("%s: %s is SOPS-encrypted and was not decrypted: converge decrypts encrypted files as they are read (manifests, Kustomize inputs, Helm values files) with the keys of spec.decryption, not objects that a chart or Jsonnet makes", o.Source, o.Ref())
		}
		if data, err := json.Marshal(o.Object); err != nil {
			return nil, fmt.Errorf("%s: %s: %w", o.Source, o.Ref(), err)
		} else if len(data) > maxObjectSize {
			return nil, fmt.Errorf("%s: %s is %d bytes, over the %d byte limit for one object (the apiserver stores nothing larger)", o.Source, o.Ref(), len(data), maxObjectSize)
		}
		k := KeyOf(o.Unstructured)
		if k.Name == "" {
			continue // a hook with generateName
		}
		if prev, dup := seen[k]; dup {
			return nil, fmt.Errorf("%s: %s is also defined in %s", o.Source, o.Ref(), prev)
		}
		seen[k] = o.Source
	}
	sort.SliceStable(objs, func(i, j int) bool { return less(KeyOf(objs[i].Unstructured), KeyOf(objs[j].Unstructured)) })
	return objs, nil
}

func less(a, b Key) bool {
	if a.Group != b.Group {
		return a.Group < b.Group
	}
	if a.Kind != b.Kind {
		return a.Kind < b.Kind
	}
	if a.Namespace != b.Namespace {
		return a.Namespace < b.Namespace
	}
	return a.Name < b.Name
}
