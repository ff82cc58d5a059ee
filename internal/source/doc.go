// Package source fetches the desired state from Git: it resolves a ref
// (branch, tag, semver range or commit) to a commit, fetches that commit
// shallowly into a cache shared by every Application using the repository,
// and hands out a read-only checkout of its tree.
//
// It drives the git command line (see docs/design/git.md): credentials
// reach git through its environment, never its arguments; SSH refuses
// unknown hosts; and every error has credentials stripped before it leaves
// the package.
package source
