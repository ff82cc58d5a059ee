package migrate

import (
	"strings"
	"testing"

	notifyv1 "github.com/fluxcd/notification-controller/api/v1"
	notify "github.com/fluxcd/notification-controller/api/v1beta3"
	fluxmeta "github.com/fluxcd/pkg/apis/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
)

// fluxDoc is obj as Flux's own types write it.
func fluxDoc(t *testing.T, obj any) string {
	t.Helper()
	data, err := yaml.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func TestTranslate_FluxProvidersAndAlerts(t *testing.T) {
	tm := func(kind string) metav1.TypeMeta {
		return metav1.TypeMeta{APIVersion: notify.GroupVersion.String(), Kind: kind}
	}
	om := func(name string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: name, Namespace: "apps"} }
	docs := []string{
		fluxDoc(t, &notify.Provider{TypeMeta: tm("Provider"), ObjectMeta: om("slack"),
			Spec: notify.ProviderSpec{Type: "slack", Channel: "deploys", SecretRef: &fluxmeta.LocalObjectReference{Name: "slack-url"}}}),
		fluxDoc(t, &notify.Provider{TypeMeta: tm("Provider"), ObjectMeta: om("github"),
			Spec: notify.ProviderSpec{Type: "github", Address: "https://github.com/acme/fleet", SecretRef: &fluxmeta.LocalObjectReference{Name: "gh"}}}),
		fluxDoc(t, &notify.Provider{TypeMeta: tm("Provider"), ObjectMeta: om("bitbucket"),
			Spec: notify.ProviderSpec{Type: "bitbucket", Address: "https://bitbucket.org/acme/fleet.git", SecretRef: &fluxmeta.LocalObjectReference{Name: "bb"}}}),
		fluxDoc(t, &notify.Provider{TypeMeta: tm("Provider"), ObjectMeta: om("ops"),
			Spec: notify.ProviderSpec{Type: "opsgenie", Address: "https://api.opsgenie.com/v2/alerts"}}),
		fluxDoc(t, &notify.Alert{TypeMeta: tm("Alert"), ObjectMeta: om("errors"),
			Spec: notify.AlertSpec{ProviderRef: fluxmeta.LocalObjectReference{Name: "slack"}, EventSeverity: "error",
				EventSources: []notifyv1.CrossNamespaceObjectReference{{Kind: "Kustomization", Name: "*"}}}}),
		fluxDoc(t, &notify.Alert{TypeMeta: tm("Alert"), ObjectMeta: om("shop"),
			Spec: notify.AlertSpec{ProviderRef: fluxmeta.LocalObjectReference{Name: "github"}, EventSeverity: "info",
				EventSources: []notifyv1.CrossNamespaceObjectReference{
					{Kind: "Kustomization", Name: "shop"}, {Kind: "HelmRelease", Name: "cart"},
					{Kind: "GitRepository", Name: "fleet"}, {Kind: "Kustomization", Name: "other", Namespace: "elsewhere"}},
				InclusionList: []string{".*succeeded.*"}}}),
		fluxDoc(t, &notify.Alert{TypeMeta: tm("Alert"), ObjectMeta: om("sources-only"),
			Spec: notify.AlertSpec{ProviderRef: fluxmeta.LocalObjectReference{Name: "slack"},
				EventSources: []notifyv1.CrossNamespaceObjectReference{{Kind: "GitRepository", Name: "*"}}}}),
	}
	res := Translate(objects(t, docs...), Options{})
	if len(res.Notifiers) != 3 || len(res.Alerts) != 2 {
		t.Fatalf("%d Notifiers and %d Alerts, want 3 and 2 (each translated once)", len(res.Notifiers), len(res.Alerts))
	}
	notifiers := map[string]v1alpha1.Notifier{}
	for _, n := range res.Notifiers {
		notifiers[n.Name] = n
	}
	if n := notifiers["slack"]; n.Spec.Type != "slack" || n.Spec.SecretRef == nil || n.Spec.SecretRef.Name != "slack-url" || n.Namespace != "apps" {
		t.Errorf("slack: %+v", n)
	}
	if n := notifiers["github"]; n.Spec.Type != "github" || n.Spec.URL != "" || n.Spec.Repository != "acme/fleet" {
		t.Errorf("github: %+v (want the API default and acme/fleet)", n.Spec)
	}
	if n := notifiers["bitbucket"]; n.Spec.Type != "bitbucket" || n.Spec.URL != "" || n.Spec.Repository != "acme/fleet" {
		t.Errorf("bitbucket: %+v (want Bitbucket Cloud's API and acme/fleet)", n.Spec)
	}
	if _, ok := notifiers["ops"]; ok {
		t.Error("an opsgenie Provider was translated: converge has no such receiver")
	}
	alerts := map[string]v1alpha1.Alert{}
	for _, a := range res.Alerts {
		alerts[a.Name] = a
	}
	if a := alerts["errors"]; a.Spec.Severity != v1alpha1.SeverityError || a.Spec.NotifierRef.Name != "slack" || len(a.Spec.Names) != 0 {
		t.Errorf("errors: %+v (want error severity, every app)", a.Spec)
	}
	if a := alerts["shop"]; strings.Join(a.Spec.Names, ",") != "shop,cart" || a.Spec.Severity != "" {
		t.Errorf("shop: %+v (want names shop and cart, info)", a.Spec)
	}
	if _, ok := alerts["sources-only"]; ok {
		t.Error("an Alert of source events only was translated: it would send every app's events")
	}
	got := findings(res)
	for _, want := range []string{
		"Provider/apps/slack: spec.channel", "Secret slack-url is read with converge's keys: it needs \"url\"",
		"Provider/apps/ops: spec.type: opsgenie has no converge receiver",
		"Alert/apps/shop: spec.eventSources[2]: GitRepository events are not sent",
		"Alert/apps/shop: spec.eventSources[3]: Kustomization/other in namespace elsewhere",
		"Alert/apps/shop: spec.inclusionList: not carried",
		"Alert/apps/sources-only: spec.eventSources: no Kustomization or HelmRelease",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("findings lack %q:\n%s", want, got)
		}
	}
}
