package images

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/Masterminds/semver/v3"

	"converge.dev/converge/api/v1alpha1"
)

// ErrNoTag means no tag meets the policy.
type ErrNoTag struct{ Reason string }

func (e *ErrNoTag) Error() string { return e.Reason }

// Choose picks the latest of tags under spec: the highest semantic
// version within the range, or the highest (asc) or lowest (desc) number
// or string, over the tags FilterTags keeps, each ordered by what its
// Extract template makes of the match (the whole tag without one).
func Choose(spec v1alpha1.ImagePolicySpec, tags []string) (string, error) {
	ranked, err := Rank(spec, tags)
	if err != nil {
		return "", err
	}
	return ranked[0], nil
}

// Rank orders the tags spec allows, the latest first: never empty without
// an error.
func Rank(spec v1alpha1.ImagePolicySpec, tags []string) ([]string, error) {
	keys, err := filtered(spec.FilterTags, tags)
	if err != nil {
		return nil, err
	}
	p := spec.Policy
	switch {
	case p.Semver != nil:
		return byVersion(p.Semver.Range, keys)
	case p.Numerical != nil:
		return ordered(keys, p.Numerical.Order, "numerical", func(a, b string) (int, bool) {
			x, errX := strconv.ParseFloat(a, 64)
			y, errY := strconv.ParseFloat(b, 64)
			if errX != nil || errY != nil {
				return 0, false
			}
			return cmp.Compare(x, y), true
		})
	case p.Alphabetical != nil:
		return ordered(keys, p.Alphabetical.Order, "alphabetical", func(a, b string) (int, bool) {
			return strings.Compare(a, b), true
		})
	}
	return nil, fmt.Errorf("spec.policy: set one of semver, numerical and alphabetical")
}

// keyed is a tag and the value it is ordered by.
type keyed struct{ tag, key string }

func filtered(f *v1alpha1.TagFilter, tags []string) ([]keyed, error) {
	out := make([]keyed, 0, len(tags))
	if f == nil {
		for _, t := range tags {
			out = append(out, keyed{t, t})
		}
		return out, nil
	}
	re, err := regexp.Compile(f.Pattern)
	if err != nil {
		return nil, fmt.Errorf("spec.filterTags.pattern: %w", err)
	}
	for _, t := range tags {
		m := re.FindStringSubmatchIndex(t)
		switch {
		case m == nil:
		case f.Extract == "":
			out = append(out, keyed{t, t})
		default:
			out = append(out, keyed{t, string(re.ExpandString(nil, f.Extract, t, m))})
		}
	}
	return out, nil
}

// byVersion ranks the tags that are versions within rng, highest first;
// of equal versions ("1.0.0", "v1.0.0") the lower tag first, so the
// choice never depends on the registry's order.
func byVersion(rng string, keys []keyed) ([]string, error) {
	cons, err := semver.NewConstraint(rng)
	if err != nil {
		return nil, fmt.Errorf("spec.policy.semver.range %q: %w", rng, err)
	}
	type tv struct {
		tag string
		v   *semver.Version
	}
	var in []tv
	for _, k := range keys {
		if v, err := semver.NewVersion(k.key); err == nil && cons.Check(v) {
			in = append(in, tv{k.tag, v})
		}
	}
	if len(in) == 0 {
		return nil, &ErrNoTag{Reason: fmt.Sprintf("no tag is a version within %q", rng)}
	}
	slices.SortFunc(in, func(a, b tv) int {
		if c := b.v.Compare(a.v); c != 0 {
			return c
		}
		return strings.Compare(a.tag, b.tag)
	})
	out := make([]string, len(in))
	for i, t := range in {
		out[i] = t.tag
	}
	return out, nil
}

// ordered ranks the keys compare can order, highest first (lowest, desc).
func ordered(keys []keyed, order, kind string, compare func(a, b string) (int, bool)) ([]string, error) {
	var valid []keyed
	for _, k := range keys {
		if _, ok := compare(k.key, k.key); ok {
			valid = append(valid, k)
		}
	}
	if len(valid) == 0 {
		return nil, &ErrNoTag{Reason: fmt.Sprintf("no tag has a %s value", kind)}
	}
	slices.SortFunc(valid, func(a, b keyed) int {
		c, _ := compare(b.key, a.key)
		if order == "desc" {
			c = -c
		}
		if c == 0 {
			return strings.Compare(a.tag, b.tag)
		}
		return c
	})
	out := make([]string, len(valid))
	for i, k := range valid {
		out[i] = k.tag
	}
	return out, nil
}
