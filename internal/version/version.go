// Package version reports which build of converge is running. Version and
// Commit are set at link time by the Makefile:
//
//	-ldflags "-X converge.dev/converge/internal/version.Version=v0.1.0 -X ...Commit=abc123"
package version

import (
	"runtime"
	"runtime/debug"
)

// Set by -ldflags -X at link time.
var (
	Version = "dev"
	Commit  = ""
)

// Info describes a build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the running build's Info. Without a linked-in commit it falls
// back to the VCS revision Go recorded at build time, if any.
func Get() Info {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" {
					commit = s.Value
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return Info{
		Version:   Version,
		Commit:    commit,
		GoVersion: runtime.Version(),
		Platform:  runtime.GOOS + "/" + runtime.GOARCH,
	}
}
