// Package web holds the web UI's templates and static files (one CSS
// file, a little plain JavaScript), embedded into the binary so that
// `make build` needs only Go. internal/server serves them.
package web

import "embed"

// FS holds templates/*.html and static/*.
//
//go:embed templates/*.html static/*
var FS embed.FS
