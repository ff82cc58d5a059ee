package images

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Marker is the comment that marks a field for a policy, as Flux's:
// `# {"$imagepolicy": "NAMESPACE:NAME"}` for the whole reference,
// NAMESPACE:NAME:tag for the tag, :name for the image's name and :digest
// for the digest.
const Marker = "$imagepolicy"

// Latest is what a policy chose: the image's name, tag and, when the
// policy reflects digests, its digest.
type Latest struct {
	Name, Tag, Digest string
}

// Ref is the whole reference: name:tag, with @digest when known.
func (l Latest) Ref() string {
	if l.Digest != "" {
		return l.Name + ":" + l.Tag + "@" + l.Digest
	}
	return l.Name + ":" + l.Tag
}

// TagOf is the tag of an image reference ("registry:5000/web:1.0@sha256:…"
// → "1.0"), or value itself when it has none (a ":tag" marker's value).
func TagOf(value string) string {
	ref, _, _ := strings.Cut(value, "@")
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") && i >= 0 {
		return ref[i+1:]
	}
	return ref
}

// Change is one field a policy changed.
type Change struct {
	File, Policy string
	Line         int
	Old, New     string
}

// Update sets every marked field in files (name → content; YAML only) to
// what its policy (keyed "namespace:name") chose, changing nothing else
// of a file, not even its spacing or comments. A marker naming a policy
// not in latest is left as it is. It returns the files it changed and the
// changes, or an error naming the file and line of a marker it cannot
// honour: Update never writes part of what it was asked.
func Update(files map[string][]byte, latest map[string]Latest) (map[string][]byte, []Change, error) {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	out := map[string][]byte{}
	var changes []Change
	for _, n := range names {
		data, cs, err := updateFile(n, files[n], latest)
		if err != nil {
			return nil, nil, err
		}
		if len(cs) > 0 {
			out[n] = data
			changes = append(changes, cs...)
		}
	}
	return out, changes, nil
}

// edit replaces a scalar's text at [start, end) of a line.
type edit struct {
	line, start, end int
	text             string
}

func updateFile(file string, data []byte, latest map[string]Latest) ([]byte, []Change, error) {
	if !bytes.Contains(data, []byte(Marker)) {
		return data, nil, nil
	}
	lines := bytes.SplitAfter(data, []byte("\n"))
	var edits []edit
	var changes []Change
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", file, err)
		}
		var walkErr error
		walk(&doc, func(n *yaml.Node, comment string) {
			if walkErr != nil {
				return
			}
			policy, field, ok := parseMarker(comment)
			if !ok {
				return
			}
			l, ok := latest[policy]
			if !ok {
				return
			}
			value, err := field.of(l)
			if err != nil {
				walkErr = fmt.Errorf("%s:%d: %w", file, n.Line, err)
				return
			}
			if value == n.Value {
				return
			}
			e, err := scalarEdit(lines, n, value)
			if err != nil {
				walkErr = fmt.Errorf("%s:%d: marker for %s: %w", file, n.Line, policy, err)
				return
			}
			edits = append(edits, e)
			changes = append(changes, Change{File: file, Policy: policy, Line: n.Line, Old: n.Value, New: value})
		})
		if walkErr != nil {
			return nil, nil, walkErr
		}
	}
	// Right to left, so that earlier offsets on a line stay true.
	sort.Slice(edits, func(i, j int) bool {
		if edits[i].line != edits[j].line {
			return edits[i].line < edits[j].line
		}
		return edits[i].start > edits[j].start
	})
	for _, e := range edits {
		l := lines[e.line]
		lines[e.line] = append(append(append([]byte{}, l[:e.start]...), e.text...), l[e.end:]...)
	}
	return bytes.Join(lines, nil), changes, nil
}

// walk calls fn with every scalar that a line comment may mark: a
// sequence's item, or a mapping's value (whose marker yaml may attach to
// the key).
func walk(n *yaml.Node, fn func(*yaml.Node, string)) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if c.Kind == yaml.ScalarNode {
				fn(c, c.LineComment)
			} else {
				walk(c, fn)
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if v.Kind == yaml.ScalarNode {
				comment := v.LineComment
				if comment == "" && k.Line == v.Line {
					comment = k.LineComment
				}
				fn(v, comment)
			} else {
				walk(v, fn)
			}
		}
	}
}

// field is what of a policy's choice a marker sets.
type field string

func (f field) of(l Latest) (string, error) {
	switch f {
	case "":
		return l.Ref(), nil
	case "tag":
		return l.Tag, nil
	case "name":
		return l.Name, nil
	case "digest":
		if l.Digest == "" {
			return "", errors.New(`a ":digest" marker needs a policy with digestReflectionPolicy: Always`)
		}
		return l.Digest, nil
	}
	return "", fmt.Errorf("marker field %q: want tag, name or digest", string(f))
}

// parseMarker reads `{"$imagepolicy": "ns:name[:field]"}` from a comment.
func parseMarker(comment string) (policy string, f field, ok bool) {
	c := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(comment), "#"))
	if !strings.HasPrefix(c, "{") || !strings.Contains(c, Marker) {
		return "", "", false
	}
	var m map[string]string
	if json.Unmarshal([]byte(c), &m) != nil {
		return "", "", false
	}
	parts := strings.Split(m[Marker], ":")
	switch len(parts) {
	case 2:
		return parts[0] + ":" + parts[1], "", true
	case 3:
		return parts[0] + ":" + parts[1], field(parts[2]), true
	}
	return "", "", false
}

// scalarEdit finds n's text on its line and says what replaces it: the
// value in the scalar's own style, or double-quoted where a plain scalar
// would not read back as that string (a tag "1.10" is a number).
func scalarEdit(lines [][]byte, n *yaml.Node, value string) (edit, error) {
	if n.Line < 1 || n.Line > len(lines) {
		return edit{}, errors.New("the field's line is out of range")
	}
	line := lines[n.Line-1]
	start := 0
	for col := 1; col < n.Column && start < len(line); col++ {
		_, size := utf8.DecodeRune(line[start:])
		start += size
	}
	rest := string(line[start:])
	var raw string
	switch n.Style {
	case 0:
		raw = n.Value
	case yaml.DoubleQuotedStyle:
		raw = `"` + n.Value + `"`
	case yaml.SingleQuotedStyle:
		raw = "'" + n.Value + "'"
	default:
		return edit{}, errors.New("the field must be a plain or quoted scalar on one line")
	}
	if !strings.HasPrefix(rest, raw) || strings.ContainsAny(n.Value, "\"'\\\n") {
		return edit{}, errors.New("the field must be a plain or quoted scalar on one line, without escapes")
	}
	text := value
	switch n.Style {
	case yaml.DoubleQuotedStyle:
		text = `"` + value + `"`
	case yaml.SingleQuotedStyle:
		text = "'" + value + "'"
	default:
		if !readsAsString(value) {
			text = `"` + value + `"`
		}
	}
	if strings.ContainsAny(value, "\"'\\\n#") {
		return edit{}, fmt.Errorf("%q is not an image reference", value)
	}
	return edit{line: n.Line - 1, start: start, end: start + len(raw), text: text}, nil
}

// readsAsString says whether value, written plain, reads back as itself.
func readsAsString(value string) bool {
	var v any
	if yaml.Unmarshal([]byte("v: "+value), &v) != nil {
		return false
	}
	m, ok := v.(map[string]any)
	if !ok {
		return false
	}
	s, ok := m["v"].(string)
	return ok && s == value
}
