package migrate

import (
	"net/url"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/api/v1alpha1"
)

// Flux's notification-controller: a Provider becomes a Notifier, an Alert
// an Alert. Flux sends the events of Kustomizations and HelmReleases, which
// become Applications of the same names; converge sends an app's sync
// events (SyncStarted, SyncSucceeded, SyncFailed, HealthDegraded,
// DriftHealed), so an Alert's severity carries over and the exact event
// reasons do not.

// fluxProviderTypes are the Provider types converge has a receiver for,
// and its name for each.
var fluxProviderTypes = map[string]string{
	"generic": "webhook", "generic-hmac": "webhook", "slack": "slack", "msteams": "msteams", "discord": "discord",
	"alertmanager": "alertmanager", "github": "github", "gitlab": "gitlab", "gitea": "gitea", "bitbucket": "bitbucket",
}

// fluxProvider translates a Provider into a Notifier.
func (t *translator) fluxProvider(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	typ := strAt(spec, "type")
	ours, ok := fluxProviderTypes[typ]
	if !ok {
		t.note(u, "spec.type", "%s has no converge receiver (webhook, slack, msteams, discord, alertmanager, github, gitlab, gitea and bitbucket do); not translated", typ)
		return
	}
	n := v1alpha1.Notifier{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Notifier"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace()},
		Spec:       v1alpha1.NotifierSpec{Type: ours, URL: strAt(spec, "address")},
	}
	n.Spec.Suspend, _, _ = unstructured.NestedBool(spec, "suspend")
	secret := strAt(spec, "secretRef", "name")
	if secret != "" {
		n.Spec.SecretRef = &v1alpha1.LocalObjectReference{Name: secret}
	}
	switch typ {
	case "slack":
		if strings.Contains(n.Spec.URL, "slack.com/api/") {
			t.note(u, "spec.address", "a Slack bot token (chat.postMessage) is not supported: converge posts to incoming webhooks; not translated")
			return
		}
	case "github", "gitlab", "gitea", "bitbucket":
		// Flux's address is the repository's URL; converge's the forge's
		// API and the repository apart.
		if base, repo, ok := forgeRepository(n.Spec.URL); ok {
			n.Spec.Repository = repo
			n.Spec.URL = base
			switch typ {
			case "github":
				n.Spec.URL = ""
				if base != "https://github.com" {
					n.Spec.URL = base + "/api/v3"
				}
			case "bitbucket": // Bitbucket Cloud's API, Flux's too
				n.Spec.URL = ""
			}
		}
	}
	if secret != "" {
		keys := "\"token\""
		switch {
		case typ == "generic-hmac":
			keys = "\"hmac\" (the HMAC key, Flux's \"token\")"
		case typ == "generic":
			keys = "\"url\" (if the address is in it, Flux's \"address\")"
		case ours == "slack" || ours == "msteams" || ours == "discord":
			keys = "\"url\" (the webhook, Flux's \"address\")"
		}
		t.note(u, "spec.secretRef", "Secret %s is read with converge's keys: it needs %s; headers and proxy are not carried", secret, keys)
	} else if typ == "generic-hmac" {
		t.note(u, "spec.secretRef", "generic-hmac without a Secret signs nothing")
	}
	for _, f := range []string{"channel", "username", "proxy", "certSecretRef", "timeout", "commitStatusExpr"} {
		if _, found, _ := unstructured.NestedFieldNoCopy(spec, f); found {
			t.note(u, "spec."+f, "not carried (converge has no such setting)")
		}
	}
	t.res.Notifiers = append(t.res.Notifiers, n)
}

// forgeRepository splits a repository URL (https://host/owner/repo[.git])
// into the forge's base URL and owner/repo.
func forgeRepository(raw string) (base, repo string, ok bool) {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "", "", false
	}
	repo = strings.Trim(strings.TrimSuffix(strings.TrimSuffix(u.Path, "/"), ".git"), "/")
	if strings.Count(repo, "/") < 1 {
		return "", "", false
	}
	return u.Scheme + "://" + u.Host, repo, true
}

// fluxAlert translates an Alert: its Provider, its severity, the
// Kustomizations and HelmReleases it names.
func (t *translator) fluxAlert(u *unstructured.Unstructured) {
	spec := mapAt(u.Object, "spec")
	a := v1alpha1.Alert{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Alert"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName(), Namespace: u.GetNamespace()},
		Spec:       v1alpha1.AlertSpec{NotifierRef: v1alpha1.LocalObjectReference{Name: strAt(spec, "providerRef", "name")}},
	}
	a.Spec.Suspend, _, _ = unstructured.NestedBool(spec, "suspend")
	if sev := strAt(spec, "eventSeverity"); sev == "error" {
		a.Spec.Severity = v1alpha1.SeverityError
	}
	sources, _, _ := unstructured.NestedSlice(spec, "eventSources")
	all, some := false, false
	for i, s := range sources {
		src, _ := s.(map[string]any)
		kind, name, ns := strAt(src, "kind"), strAt(src, "name"), strAt(src, "namespace")
		field := "spec.eventSources[" + strconv.Itoa(i) + "]"
		switch {
		case kind != "Kustomization" && kind != "HelmRelease":
			t.note(u, field, "%s events are not sent by converge (an Application's sync and health events are); not carried", kind)
		case ns != "" && ns != u.GetNamespace():
			t.note(u, field, "%s/%s in namespace %s: a converge Alert sends the events of its own namespace's apps; not carried", kind, name, ns)
		case len(mapAt(src, "matchLabels")) > 0:
			t.note(u, field+".matchLabels", "translated Applications do not carry the labels of the %ss they come from; not carried (select them with spec.applications once they have labels)", kind)
		case name == "*":
			all = true
		default:
			some = true
			if !slices.Contains(a.Spec.Names, name) {
				a.Spec.Names = append(a.Spec.Names, name)
			}
		}
	}
	if !all && !some {
		t.note(u, "spec.eventSources", "no Kustomization or HelmRelease of the namespace is carried: not translated, so that the Alert does not send every app's events")
		return
	}
	if all {
		a.Spec.Names = nil
	}
	for _, f := range []string{"inclusionList", "exclusionList", "eventMetadata", "summary"} {
		if _, found, _ := unstructured.NestedFieldNoCopy(spec, f); found {
			t.note(u, "spec."+f, "not carried (converge sends every event the Alert chooses, with its own message)")
		}
	}
	t.res.Alerts = append(t.res.Alerts, a)
}
