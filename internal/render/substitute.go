package render

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/fluxcd/pkg/envsubst"
	"sigs.k8s.io/yaml"
)

// Substitution is a postBuild substitution (Flux's): ${var} references in
// every rendered object replaced by Vars, in the worker, after rendering.
type Substitution struct {
	Vars map[string]string `json:"vars,omitempty"`
	// Strict makes an undefined variable without a default an error.
	Strict bool `json:"strict,omitempty"`
}

// substituteDisabled, as a label or annotation set to "disabled", leaves
// an object out of the substitution (Flux's).
const substituteDisabled = "kustomize.toolkit.fluxcd.io/substitute"

// varName is what a variable may be called (Flux's rule).
var varName = regexp.MustCompile(`^[_[:alpha:]][_[:alpha:][:digit:]]*$`)

// CheckVarName says whether name may be a variable.
func CheckVarName(name string) error {
	if !varName.MatchString(name) {
		return fmt.Errorf("variable %q: a name is a letter or _ followed by letters, digits or _", name)
	}
	return nil
}

// substitute applies s to objs, each serialized to YAML, substituted and
// read back (as Flux does), naming the object and its file on error.
func substitute(objs []Object, s *Substitution) error {
	if s == nil {
		return nil
	}
	mapping := func(name string) (string, bool) {
		v, ok := s.Vars[name]
		return v, ok || !s.Strict
	}
	for i := range objs {
		o := &objs[i]
		if strings.EqualFold(o.GetLabels()[substituteDisabled], "disabled") || strings.EqualFold(o.GetAnnotations()[substituteDisabled], "disabled") {
			continue
		}
		data, err := yaml.Marshal(o.Object)
		if err != nil {
			return fmt.Errorf("%s: %s: %w", o.Source, o.Ref(), err)
		}
		if !strings.Contains(string(data), "$") {
			continue
		}
		out, err := envsubst.Eval(string(data), mapping)
		if err != nil {
			return fmt.Errorf("%s: %s: postBuild substitution: %w", o.Source, o.Ref(), err)
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(out), &m); err != nil {
			return fmt.Errorf("%s: %s: after postBuild substitution the object is no longer YAML: %w", o.Source, o.Ref(), err)
		}
		o.Object = m
	}
	return nil
}
