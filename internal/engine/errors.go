package engine

import (
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/internal/render"
)

// ErrEmptyRender is returned for an empty desired set, unless
// PlanOptions.AllowEmpty: a render that yields nothing is far more often a
// mistake (a wrong path, a missing dependency) than a wish to delete
// everything the app owns.
var ErrEmptyRender = errors.New("the desired set is empty: it would delete everything the app owns, or succeed with nothing")

// ErrUnknownKind is wrapped by errors about an object whose kind the
// cluster does not serve (its CRD may come from another app).
var ErrUnknownKind = errors.New("unknown kind")

// ErrNotOwned is wrapped by refusals to take over an existing object.
var ErrNotOwned = errors.New("refusing to take over an object")

// ObjectError is an error about one object: which (Ref, "Kind/ns/name"),
// from which file (Source, empty for objects known only to the cluster),
// and what went wrong.
type ObjectError struct {
	Ref    string
	Source string
	Err    error
}

func (e *ObjectError) Error() string {
	if e.Source != "" {
		return e.Ref + " (" + e.Source + "): " + e.Err.Error()
	}
	return e.Ref + ": " + e.Err.Error()
}

func (e *ObjectError) Unwrap() error { return e.Err }

// objectError makes an ObjectError for u from file source.
func objectError(u *unstructured.Unstructured, source string, err error) error {
	return &ObjectError{Ref: render.Ref(u), Source: source, Err: err}
}

// objectErrorf is objectError with a formatted message (%w wraps).
func objectErrorf(u *unstructured.Unstructured, source, format string, args ...any) error {
	return objectError(u, source, fmt.Errorf(format, args...))
}

// apiError is the apiserver's answer about u, in the apiserver's words
// (which name the field), with the values of a Secret removed. The
// original stays reachable for apierrors' checks.
func apiError(err error, u *unstructured.Unstructured) error {
	return &scrubbed{msg: scrubSecret(apiMessage(err), u), err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (s *scrubbed) Error() string { return s.msg }
func (s *scrubbed) Unwrap() error { return s.err }

// ValidationError lists every object a dry-run rejected. When a plan fails
// with it, nothing has been written.
type ValidationError struct {
	Errors []error
}

func (e *ValidationError) Error() string {
	msgs := make([]string, len(e.Errors))
	for i, err := range e.Errors {
		msgs[i] = err.Error()
	}
	return fmt.Sprintf("%d object(s) failed validation, nothing was applied:\n  %s", len(msgs), strings.Join(msgs, "\n  "))
}

func (e *ValidationError) Unwrap() []error { return e.Errors }
