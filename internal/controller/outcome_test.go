package controller

import (
	"errors"
	"fmt"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

func TestClassify(t *testing.T) {
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
		name string
		err  error
		want outcome
	}{
		{"render failure", failAs(v1alpha1.ReasonRenderFailed, errors.New("bad yaml")), outcome{outcomeTerminal, v1alpha1.ReasonRenderFailed}},
		{"render slots busy", failAs(v1alpha1.ReasonRenderFailed, fmt.Errorf("rendering: %w", render.ErrBusy)), outcome{outcomeBusy, ""}},
		{"cluster unknown to helm", failAs(v1alpha1.ReasonRenderFailed, &capabilitiesError{errors.New("discovery")}), outcome{outcomeRetry, v1alpha1.ReasonApplyFailed}},
		{"invalid object", validation(invalid), outcome{outcomeTerminal, v1alpha1.ReasonValidationFailed}},
		{"namespace another app creates", validation(invalid, noNamespace), outcome{outcomeRetry, v1alpha1.ReasonValidationFailed}},
		{"kind another app's CRD serves", fmt.Errorf("X (x.yaml): %w: example.com/v1, Kind=Widget", engine.ErrUnknownKind), outcome{outcomeRetry, v1alpha1.ReasonValidationFailed}},
		{"empty render", fmt.Errorf("deploy renders no objects: %w", engine.ErrEmptyRender), outcome{outcomeTerminal, v1alpha1.ReasonRenderFailed}},
		{"git fetch failure", &appspec.FetchError{Err: errors.New("connection refused")}, outcome{outcomeRetry, v1alpha1.ReasonFetchFailed}},
		{"unsigned commit", &appspec.FetchError{Err: &source.VerificationError{Revision: "abc", Object: "commit", Reason: "no signature"}}, outcome{outcomeRefused, v1alpha1.ReasonVerificationFailed}},
		{"tenant's chart rule", &tenancy.PolicyError{Err: errors.New("chart URL x")}, outcome{outcomeRefused, v1alpha1.ReasonPolicyViolation}},
		{"egress policy", &appspec.FetchError{Err: &egress.RefusedError{Addr: "10.0.0.1:443", Class: "private"}}, outcome{outcomeRefused, v1alpha1.ReasonPolicyViolation}},
		{"tenant's kinds", fmt.Errorf("Secret x: %w", engine.ErrPolicy), outcome{outcomeRefused, v1alpha1.ReasonPolicyViolation}},
		{"dependency cycle", refuseAs(v1alpha1.ReasonDependencyCycle, errors.New("a -> b -> a")), outcome{outcomeRefused, v1alpha1.ReasonDependencyCycle}},
		{"cluster unreachable", &ClusterError{Cluster: "b", Reason: v1alpha1.ReasonClusterUnreachable, Err: errors.New("timeout")}, outcome{outcomeUnavailable, v1alpha1.ReasonClusterUnreachable}},
		{"hook failed", &engine.HookError{}, outcome{outcomeRetry, v1alpha1.ReasonHookFailed}},
		{"apply failure", failAs(v1alpha1.ReasonApplyFailed, invalid), outcome{outcomeRetry, v1alpha1.ReasonApplyFailed}},
		{"anything else", errors.New("?"), outcome{outcomeRetry, v1alpha1.ReasonApplyFailed}},
	} {
		if got := classify(tc.err); got != tc.want {
			t.Errorf("%s: classify = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
