package controller

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/generate"
)

func TestBackoff(t *testing.T) {
	d := func(s string) *metav1.Duration {
		v, _ := time.ParseDuration(s)
		return &metav1.Duration{Duration: v}
	}
	three := int32(3)
	custom := &v1alpha1.RetryPolicy{Backoff: &v1alpha1.Backoff{Duration: d("1s"), Factor: &three, MaxDuration: d("20s")}}
	cases := []struct {
		policy  *v1alpha1.RetryPolicy
		attempt int32
		want    time.Duration
	}{
		{nil, 1, 5 * time.Second},
		{nil, 2, 10 * time.Second},
		{nil, 6, 160 * time.Second},
		{nil, 7, 3 * time.Minute}, // 320 s, capped
		{nil, 200, 3 * time.Minute},
		{custom, 1, time.Second},
		{custom, 3, 9 * time.Second},
		{custom, 4, 20 * time.Second}, // 27 s, capped
		{&v1alpha1.RetryPolicy{Limit: 2}, 1, 5 * time.Second},
	}
	for _, tc := range cases {
		if got := backoff(tc.policy, tc.attempt); got != tc.want {
			t.Errorf("backoff(%+v, %d) = %v, want %v", tc.policy, tc.attempt, got, tc.want)
		}
	}
}

func TestAggregateHealth(t *testing.T) {
	h := func(ref, status, msg string) engine.ObjectHealth {
		return engine.ObjectHealth{Ref: ref, Status: status, Message: msg}
	}
	cases := []struct {
		name string
		in   []engine.ObjectHealth
		want v1alpha1.HealthStatus
	}{
		{"nothing", nil, v1alpha1.HealthStatus{Status: v1alpha1.HealthHealthy}},
		{"all current", []engine.ObjectHealth{h("a", "Current", ""), h("b", "Current", "")}, v1alpha1.HealthStatus{Status: v1alpha1.HealthHealthy}},
		{"terminating is progressing", []engine.ObjectHealth{h("a", "Current", ""), h("b", "Terminating", "going")},
			v1alpha1.HealthStatus{Status: v1alpha1.HealthProgressing, Message: "b: Terminating: going"}},
		{"the worst wins", []engine.ObjectHealth{h("a", "InProgress", ""), h("b", "Failed", "crash"), h("c", "NotFound", "")},
			v1alpha1.HealthStatus{Status: v1alpha1.HealthDegraded, Message: "b: Failed: crash"}},
		{"missing beats progressing", []engine.ObjectHealth{h("a", "InProgress", ""), h("c", "NotFound", "")},
			v1alpha1.HealthStatus{Status: v1alpha1.HealthMissing, Message: "c: NotFound"}},
		{"unknown words", []engine.ObjectHealth{h("a", "Current", ""), h("b", "Weird", "")},
			v1alpha1.HealthStatus{Status: v1alpha1.HealthUnknown, Message: "b: Weird"}},
		{"itself left out", []engine.ObjectHealth{h("a", "Current", ""), h("Application/ns/self", "InProgress", "waiting")},
			v1alpha1.HealthStatus{Status: v1alpha1.HealthHealthy}},
		{"bounded", []engine.ObjectHealth{h("a", "InProgress", strings.Repeat("é", 2000))},
			v1alpha1.HealthStatus{Status: v1alpha1.HealthProgressing, Message: "a: InProgress: " + strings.Repeat("é", 503) + "…"}},
	}
	for _, tc := range cases {
		if got := aggregateHealth("Application/ns/self", tc.in); got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
	// The API's words are the engine's.
	for api, word := range map[v1alpha1.HealthStatusCode]engine.Health{
		v1alpha1.HealthHealthy: engine.HealthHealthy, v1alpha1.HealthProgressing: engine.HealthProgressing,
		v1alpha1.HealthDegraded: engine.HealthDegraded, v1alpha1.HealthMissing: engine.HealthMissing, v1alpha1.HealthUnknown: engine.HealthUnknown,
	} {
		if string(api) != string(word) {
			t.Errorf("API health %q, engine %q", api, word)
		}
	}
}

func TestRequeueAfter(t *testing.T) {
	cases := []struct {
		health   v1alpha1.HealthStatusCode
		interval time.Duration
		want     time.Duration
	}{
		{v1alpha1.HealthHealthy, 3 * time.Minute, 3 * time.Minute},
		{v1alpha1.HealthDegraded, 3 * time.Minute, 3 * time.Minute},
		{v1alpha1.HealthProgressing, 3 * time.Minute, 5 * time.Second},
		{v1alpha1.HealthMissing, 3 * time.Minute, 5 * time.Second},
		{v1alpha1.HealthProgressing, 2 * time.Second, 2 * time.Second},
	}
	for _, tc := range cases {
		if got := requeueAfter(tc.health, tc.interval); got != tc.want {
			t.Errorf("requeueAfter(%s, %v) = %v, want %v", tc.health, tc.interval, got, tc.want)
		}
	}
}

func TestVersionsHash(t *testing.T) {
	cm := schema.GroupVersionKind{Version: "v1", Kind: "ConfigMap"}
	dep := schema.GroupVersionKind{Group: "apps", Version: "v1", Kind: "Deployment"}
	kinds := []schema.GroupVersionKind{cm, dep}
	base := map[schema.GroupVersionKind]map[string]string{cm: {"ns/a": "1", "ns/b": "2"}, dep: {"ns/web": "7"}}
	same := map[schema.GroupVersionKind]map[string]string{dep: {"ns/web": "7"}, cm: {"ns/b": "2", "ns/a": "1"}}
	h := versionsHash(kinds, base, "10")
	if h == 0 || versionsHash(kinds, same, "10") != h {
		t.Fatalf("the same versions in another order hash differently (or to zero)")
	}
	differ := map[string]uint64{
		"an object changed":       versionsHash(kinds, map[schema.GroupVersionKind]map[string]string{cm: {"ns/a": "1", "ns/b": "3"}, dep: {"ns/web": "7"}}, "10"),
		"an object added":         versionsHash(kinds, map[schema.GroupVersionKind]map[string]string{cm: {"ns/a": "1", "ns/b": "2", "ns/c": "1"}, dep: {"ns/web": "7"}}, "10"),
		"an object removed":       versionsHash(kinds, map[schema.GroupVersionKind]map[string]string{cm: {"ns/a": "1"}, dep: {"ns/web": "7"}}, "10"),
		"moved to another kind":   versionsHash(kinds, map[schema.GroupVersionKind]map[string]string{cm: {"ns/a": "1", "ns/b": "2", "ns/web": "7"}}, "10"),
		"the inventory rewritten": versionsHash(kinds, base, "11"),
		"the inventory gone":      versionsHash(kinds, base, ""),
		"a kind no longer owned":  versionsHash(kinds[:1], base, "10"),
	}
	for what, got := range differ {
		if got == h {
			t.Errorf("%s: same fingerprint", what)
		}
	}
}

func TestRolloutSteps(t *testing.T) {
	app := func(name, env string) *v1alpha1.Application {
		a := &v1alpha1.Application{}
		a.Name, a.Labels = name, map[string]string{"env": env}
		return a
	}
	step := func(env string) v1alpha1.RolloutStep {
		return v1alpha1.RolloutStep{Selector: metav1.LabelSelector{MatchLabels: map[string]string{"env": env}}}
	}
	strategy := &v1alpha1.RolloutStrategy{Steps: []v1alpha1.RolloutStep{step("dev"), step("empty"), step("prod")}}
	apps := []*v1alpha1.Application{app("d1", "dev"), app("p1", "prod"), app("d2", "dev"), app("x", "other"), app("p2", "prod")}
	if err := rolloutSteps(strategy, apps); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, a := range apps {
		var deps []string
		for _, d := range a.Spec.DependsOn {
			deps = append(deps, fmt.Sprintf("%s=%v", d.Name, d.SameRevision))
		}
		got[a.Name] = a.Annotations[annotationRolloutStep] + " " + strings.Join(deps, ",")
	}
	want := map[string]string{
		"d1": "1 ", "d2": "1 ",
		"p1": "3 d1=true,d2=true", "p2": "3 d1=true,d2=true", // the empty step is skipped
		"x": "4 p1=true,p2=true", // selected by no step: last
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("steps and dependencies:\n%v\nwant\n%v", got, want)
	}

	// No strategy: nothing changes.
	plain := []*v1alpha1.Application{app("a", "dev")}
	if err := rolloutSteps(nil, plain); err != nil || plain[0].Annotations != nil || plain[0].Spec.DependsOn != nil {
		t.Errorf("no strategy changed the apps: %v", err)
	}
	// A bad selector is named.
	bad := &v1alpha1.RolloutStrategy{Steps: []v1alpha1.RolloutStep{{Selector: metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "env", Operator: "Near"}}}}}}
	if err := rolloutSteps(bad, plain); err == nil || !strings.Contains(err.Error(), "strategy.steps[0].selector") {
		t.Errorf("bad selector: %v", err)
	}
	// A step a later one waits for is bounded by the dependsOn limit.
	var big []*v1alpha1.Application
	for i := range maxDependsOn + 1 {
		big = append(big, app(fmt.Sprintf("d%d", i), "dev"))
	}
	big = append(big, app("p", "prod"))
	err := rolloutSteps(&v1alpha1.RolloutStrategy{Steps: []v1alpha1.RolloutStep{step("dev"), step("prod")}}, big)
	var lerr *generate.LimitError
	if !errors.As(err, &lerr) || lerr.Where != "strategy.steps[0]" || lerr.Have != maxDependsOn+1 {
		t.Errorf("65 apps before a step: %v, want a LimitError on strategy.steps[0]", err)
	}
}

// notifyTemplates parses each target's template once, by its index, and
// names the field of a bad one.
func TestNotifyTemplates(t *testing.T) {
	app := &v1alpha1.Application{Spec: v1alpha1.ApplicationSpec{Notify: []v1alpha1.NotifyTarget{
		{Type: "slack"}, {Type: "discord", Template: "{{.Name}} {{.Event}}"},
	}}}
	got, err := notifyTemplates(app)
	if err != nil || len(got) != 1 || got[1] == nil || got[0] != nil {
		t.Fatalf("templates %v, %v: want target 1's alone", got, err)
	}
	app.Spec.Notify = append(app.Spec.Notify, v1alpha1.NotifyTarget{Type: "slack", Template: "{{range 9}}x{{end}}"})
	if _, err := notifyTemplates(app); err == nil || !strings.Contains(err.Error(), "spec.notify[2].template: range may only go over a field") {
		t.Errorf("a looping template: %v", err)
	}
}

func TestAlertWants(t *testing.T) {
	app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{"team": "a"}}}
	cases := []struct {
		name string
		spec v1alpha1.AlertSpec
		ev   v1alpha1.NotifyEvent
		want bool
	}{
		{"everything by default", v1alpha1.AlertSpec{}, v1alpha1.NotifySyncStarted, true},
		{"suspended", v1alpha1.AlertSpec{Suspend: true}, v1alpha1.NotifySyncFailed, false},
		{"not among its events", v1alpha1.AlertSpec{Events: []v1alpha1.NotifyEvent{v1alpha1.NotifySyncFailed}}, v1alpha1.NotifySyncSucceeded, false},
		{"errors only: a success", v1alpha1.AlertSpec{Severity: v1alpha1.SeverityError}, v1alpha1.NotifySyncSucceeded, false},
		{"errors only: degraded", v1alpha1.AlertSpec{Severity: v1alpha1.SeverityError}, v1alpha1.NotifyHealthDegraded, true},
		{"selected by label", v1alpha1.AlertSpec{Applications: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "a"}}}, v1alpha1.NotifySyncFailed, true},
		{"another team", v1alpha1.AlertSpec{Applications: &metav1.LabelSelector{MatchLabels: map[string]string{"team": "b"}}}, v1alpha1.NotifySyncFailed, false},
		{"named", v1alpha1.AlertSpec{Names: []string{"cart", "shop"}}, v1alpha1.NotifySyncFailed, true},
		{"not named", v1alpha1.AlertSpec{Names: []string{"cart"}}, v1alpha1.NotifySyncFailed, false},
		{"image events only when listed", v1alpha1.AlertSpec{}, v1alpha1.NotifyImageUpdated, false},
		{"image events listed", v1alpha1.AlertSpec{Events: []v1alpha1.NotifyEvent{v1alpha1.NotifyImageUpdated}}, v1alpha1.NotifyImageUpdated, true},
		{"errors only: a failed image update", v1alpha1.AlertSpec{Severity: v1alpha1.SeverityError, Events: []v1alpha1.NotifyEvent{v1alpha1.NotifyImageUpdateFailed}}, v1alpha1.NotifyImageUpdateFailed, true},
	}
	for _, tc := range cases {
		got, err := alertWants(&v1alpha1.Alert{Spec: tc.spec}, app, tc.ev)
		if err != nil || got != tc.want {
			t.Errorf("%s: %v (%v), want %v", tc.name, got, err, tc.want)
		}
	}
	bad := &v1alpha1.Alert{Spec: v1alpha1.AlertSpec{Applications: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "team", Operator: "Sometimes"}}}}}
	if ok, err := alertWants(bad, app, v1alpha1.NotifySyncFailed); ok || err == nil {
		t.Errorf("a bad selector: %v, %v; want an error", ok, err)
	}
}
