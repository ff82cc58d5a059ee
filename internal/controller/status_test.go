package controller

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

func TestTerminal(t *testing.T) {
	invalid := apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "web",
		field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), -1, "must be >= 0")})
	noNamespace := apierrors.NewNotFound(schema.GroupResource{Resource: "namespaces"}, "shop")
	validation := func(errs ...error) error {
		var wrapped []error
		for _, err := range errs {
			wrapped = append(wrapped, &engine.ObjectError{Ref: "X/y", Source: "x.yaml", Err: err})
		}
		return &engine.ValidationError{Errors: wrapped}
	}
	for _, tc := range []struct {
		name   string
		reason string
		err    error
		want   bool
	}{
		{"render failure", v1alpha1.ReasonRenderFailed, errors.New("bad yaml"), true},
		{"invalid object", v1alpha1.ReasonValidationFailed, validation(invalid), true},
		{"namespace another app creates", v1alpha1.ReasonValidationFailed, validation(invalid, noNamespace), false},
		{"kind another app's CRD serves", v1alpha1.ReasonValidationFailed, fmt.Errorf("X (x.yaml): %w: example.com/v1, Kind=Widget", engine.ErrUnknownKind), false},
		{"fetch failure", v1alpha1.ReasonFetchFailed, errors.New("connection refused"), false},
		{"apply failure", v1alpha1.ReasonApplyFailed, invalid, false},
	} {
		if got := terminal(tc.reason, tc.err); got != tc.want {
			t.Errorf("%s: terminal = %v, want %v", tc.name, got, tc.want)
		}
	}
}
