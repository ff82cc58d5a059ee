package source

import (
	"fmt"
	"sort"
	"strings"

	"github.com/Masterminds/semver/v3"
)

// Ref selects a revision; at most one field is set. The zero Ref means the
// branch "main".
type Ref struct {
	Branch string `json:"branch,omitempty"`
	Tag    string `json:"tag,omitempty"`
	Semver string `json:"semver,omitempty"`
	Commit string `json:"commit,omitempty"`
	// Revision is whichever of a branch, a tag or a full commit SHA
	// matches, in that order (what `converge diff APP --revision` takes).
	Revision string `json:"revision,omitempty"`
}

func (r Ref) String() string {
	switch {
	case r.Revision != "":
		return "revision " + r.Revision
	case r.Commit != "":
		return "commit " + r.Commit
	case r.Tag != "":
		return "tag " + r.Tag
	case r.Semver != "":
		return "semver " + r.Semver
	case r.Branch != "":
		return "branch " + r.Branch
	}
	return "branch main"
}

// remoteRefs maps ref names (refs/heads/main, refs/tags/v1) to commits, as
// ls-remote reports them; annotated tags are peeled to their commit.
type remoteRefs map[string]string

// resolve picks the ref name and commit that r selects.
func (refs remoteRefs) resolve(r Ref) (name, commit string, err error) {
	switch {
	case r.Revision != "":
		for _, name := range []string{"refs/heads/" + r.Revision, "refs/tags/" + r.Revision, r.Revision} {
			if commit, ok := refs[name]; ok && (name != r.Revision || strings.HasPrefix(name, "refs/")) {
				return name, commit, nil
			}
		}
		if isFullSHA(r.Revision) {
			return "", r.Revision, nil
		}
		return "", "", fmt.Errorf("%q is neither a branch nor a tag of the repository, nor a full commit SHA", r.Revision)
	case r.Commit != "":
		return "", r.Commit, nil
	case r.Tag != "":
		name = "refs/tags/" + r.Tag
	case r.Semver != "":
		return refs.highest(r.Semver)
	default:
		branch := r.Branch
		if branch == "" {
			branch = "main"
		}
		name = "refs/heads/" + branch
	}
	commit, ok := refs[name]
	if !ok {
		return "", "", fmt.Errorf("%s not found in the repository", r)
	}
	return name, commit, nil
}

// highest returns the tag with the highest version in the range.
func (refs remoteRefs) highest(rng string) (string, string, error) {
	c, err := semver.NewConstraint(rng)
	if err != nil {
		return "", "", fmt.Errorf("semver range %q: %w", rng, err)
	}
	type tagged struct {
		name string
		v    *semver.Version
	}
	var matches []tagged
	for name := range refs {
		tag, ok := strings.CutPrefix(name, "refs/tags/")
		if !ok {
			continue
		}
		v, err := semver.NewVersion(tag)
		if err != nil || !c.Check(v) {
			continue
		}
		matches = append(matches, tagged{name, v})
	}
	if len(matches) == 0 {
		return "", "", fmt.Errorf("no tag matches semver range %q", rng)
	}
	sort.Slice(matches, func(i, j int) bool { return matches[i].v.GreaterThan(matches[j].v) })
	return matches[0].name, refs[matches[0].name], nil
}

// parseLsRemote reads `git ls-remote` output. A peeled entry ("^{}") wins
// over the tag object it peels; tags maps each annotated tag's ref name to
// its tag object.
func parseLsRemote(out string) (refs remoteRefs, tags map[string]string) {
	refs, tags = remoteRefs{}, map[string]string{}
	unpeeled := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		sha, name, ok := strings.Cut(strings.TrimSpace(line), "\t")
		if !ok {
			continue
		}
		if base, peeled := strings.CutSuffix(name, "^{}"); peeled {
			refs[base] = sha
			continue
		}
		unpeeled[name] = sha
		if _, seen := refs[name]; !seen {
			refs[name] = sha
		}
	}
	for name, sha := range unpeeled {
		if refs[name] != sha {
			tags[name] = sha
		}
	}
	return refs, tags
}

func isFullSHA(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// pinnedCommit is the commit r names without asking the server: Commit, or
// a Revision that is a full SHA.
func (r Ref) pinnedCommit() string {
	if r.Commit != "" {
		return r.Commit
	}
	if isFullSHA(r.Revision) {
		return r.Revision
	}
	return ""
}
