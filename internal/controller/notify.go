package controller

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/notify"
	"converge.dev/converge/internal/redact"
)

// notifier sends app's events to the receivers its spec names, reading
// their Secrets through secrets (the app's account) only when an event is
// sent: an idle app costs nothing.
type notifier struct {
	ctx context.Context
	n   *notify.Notifier
	// outbox, when set, holds what is sent until the status is written.
	outbox  *outbox
	app     *v1alpha1.Application
	secrets client.Reader
	// allow is the Tenant's rule for receiver URLs (one from a Secret
	// included).
	allow func(rawURL string) error
	// templates are the targets' message templates, by index, parsed
	// once per reconcile (notifyTemplates).
	templates map[int]*template.Template
	// alerts reads the Alerts and Notifiers of the app's namespace (the
	// agent's cache).
	alerts client.Reader
}

// notifyTemplates parses app's notify templates; an error names the
// target's field.
func notifyTemplates(app *v1alpha1.Application) (map[int]*template.Template, error) {
	var out map[int]*template.Template
	for i, t := range app.Spec.Notify {
		if t.Template == "" {
			continue
		}
		tmpl, err := notify.ParseTemplate(t.Template)
		if err != nil {
			return nil, fmt.Errorf("spec.notify[%d].template: %w", i, err)
		}
		if out == nil {
			out = map[int]*template.Template{}
		}
		out[i] = tmpl
	}
	return out, nil
}

// outbox holds a reconcile's notifications until its status is written.
// What is told is then what the status records (a failure by
// status.lastError): an agent that stops in between tells nothing rather
// than, once started again, telling twice.
type outbox struct {
	held []heldNotice
}

type heldNotice struct {
	s             *notifier
	ev            v1alpha1.NotifyEvent
	revision, msg string
}

// flush sends what is held. When the status could not be written, a
// failure is not sent: its retry finds no status.lastError and tells it
// then.
func (o *outbox) flush(statusWritten bool) {
	for _, h := range o.held {
		if !statusWritten && h.ev == v1alpha1.NotifySyncFailed {
			continue
		}
		h.s.deliver(h.ev, h.revision, h.msg)
	}
	o.held = nil
}

// send tells ev (with revision and message) to every receiver that wants
// it: now, or when the reconcile's status is written (outbox).
func (s *notifier) send(ev v1alpha1.NotifyEvent, revision, msg string) {
	if s == nil || s.n == nil {
		return
	}
	if s.outbox != nil {
		s.outbox.held = append(s.outbox.held, heldNotice{s: s, ev: ev, revision: revision, msg: msg})
		return
	}
	s.deliver(ev, revision, msg)
}

// deliver queues ev for every receiver that wants it, and returns at once.
func (s *notifier) deliver(ev v1alpha1.NotifyEvent, revision, msg string) {
	event := notify.Event{Type: string(ev), Namespace: s.app.Namespace, Name: s.app.Name, Revision: revision,
		Message: redact.Message(msg), Time: time.Now().UTC()}
	for i, t := range s.app.Spec.Notify {
		if len(t.Events) > 0 && !slices.Contains(t.Events, ev) {
			continue
		}
		recv, err := s.receiver(t)
		recv.Template = s.templates[i]
		if err != nil {
			log.FromContext(s.ctx).Info("notification not sent", "receiver", t.Type, "event", ev, "error", redact.Error(err))
			continue
		}
		s.n.Send(recv, event)
	}
	for _, t := range s.alertTargets(ev) {
		recv, err := s.receiver(t.NotifyTarget)
		if err == nil && t.Template != "" {
			recv.Template, err = notify.ParseTemplate(t.Template)
		}
		if err != nil {
			log.FromContext(s.ctx).Info("notification not sent", "alert", t.alert, "notifier", t.notifier, "event", ev, "error", redact.Error(err))
			continue
		}
		s.n.Send(recv, event)
	}
}

// alertTarget is a Notifier an Alert sends an event to.
type alertTarget struct {
	v1alpha1.NotifyTarget
	alert, notifier string
}

// alertTargets are the Notifiers that the Alerts of the app's namespace
// selecting the app send ev to, each once however many Alerts name it.
func (s *notifier) alertTargets(ev v1alpha1.NotifyEvent) []alertTarget {
	if s.alerts == nil {
		return nil
	}
	var alerts v1alpha1.AlertList
	if err := s.alerts.List(s.ctx, &alerts, client.InNamespace(s.app.Namespace)); err != nil {
		log.FromContext(s.ctx).V(1).Info("reading Alerts", "error", err)
		return nil
	}
	var out []alertTarget
	seen := map[string]bool{}
	for i := range alerts.Items {
		a := &alerts.Items[i]
		ok, err := alertWants(a, s.app, ev)
		if err != nil {
			log.FromContext(s.ctx).Info("Alert not used", "alert", a.Name, "error", err)
		}
		if !ok || seen[a.Spec.NotifierRef.Name] {
			continue
		}
		var n v1alpha1.Notifier
		if err := s.alerts.Get(s.ctx, client.ObjectKey{Namespace: a.Namespace, Name: a.Spec.NotifierRef.Name}, &n); err != nil {
			log.FromContext(s.ctx).Info("notification not sent", "alert", a.Name, "notifier", a.Spec.NotifierRef.Name, "error", err)
			continue
		}
		if n.Spec.Suspend {
			continue
		}
		seen[n.Name] = true
		out = append(out, alertTarget{NotifyTarget: v1alpha1.NotifyTarget{Type: n.Spec.Type, URL: n.Spec.URL, Repository: n.Spec.Repository,
			SecretRef: n.Spec.SecretRef, Template: n.Spec.Template, Email: n.Spec.Email}, alert: a.Name, notifier: n.Name})
	}
	return out
}

// alertWants reports whether a sends app's ev: not suspended, the event
// among its events and at its severity, the app selected.
func alertWants(a *v1alpha1.Alert, app *v1alpha1.Application, ev v1alpha1.NotifyEvent) (bool, error) {
	if a.Spec.Suspend || (len(a.Spec.Events) > 0 && !slices.Contains(a.Spec.Events, ev)) {
		return false, nil
	}
	if imageEvent(ev) && !slices.Contains(a.Spec.Events, ev) {
		// An image automation's events go to the Alerts that ask for them.
		return false, nil
	}
	if a.Spec.Severity == v1alpha1.SeverityError && ev != v1alpha1.NotifySyncFailed && ev != v1alpha1.NotifyHealthDegraded && ev != v1alpha1.NotifyImageUpdateFailed {
		return false, nil
	}
	if len(a.Spec.Names) > 0 && !slices.Contains(a.Spec.Names, app.Name) {
		return false, nil
	}
	if a.Spec.Applications == nil {
		return true, nil
	}
	sel, err := metav1.LabelSelectorAsSelector(a.Spec.Applications)
	if err != nil {
		return false, fmt.Errorf("spec.applications: %w", err)
	}
	return sel.Matches(labels.Set(app.Labels)), nil
}

func imageEvent(ev v1alpha1.NotifyEvent) bool {
	return ev == v1alpha1.NotifyImageUpdated || ev == v1alpha1.NotifyImageUpdateFailed
}

// receiver resolves t: its URL, repository and Secret.
func (s *notifier) receiver(t v1alpha1.NotifyTarget) (notify.Receiver, error) {
	recv := notify.Receiver{Type: t.Type, URL: t.URL, Repository: t.Repository}
	if t.Email != nil {
		recv.From, recv.To = t.Email.From, t.Email.To
	}
	if recv.Repository == "" {
		recv.Repository = repositoryPath(s.app.Spec.Source.RepoURL)
	}
	if t.SecretRef != nil {
		var sec corev1.Secret
		if err := s.secrets.Get(s.ctx, client.ObjectKey{Namespace: s.app.Namespace, Name: t.SecretRef.Name}, &sec); err != nil {
			return recv, err
		}
		recv.Token, recv.HMACKey = string(sec.Data["token"]), sec.Data["hmac"]
		recv.Username, recv.Password, recv.CA = string(sec.Data["username"]), string(sec.Data["password"]), sec.Data["ca.crt"]
		if u := strings.TrimSpace(string(sec.Data["url"])); u != "" {
			recv.URL = u
		}
	}
	if s.allow != nil {
		target := recv.URL
		if target == "" {
			target = notify.DefaultURL(recv.Type)
		}
		if target != "" {
			if err := s.allow(target); err != nil {
				return recv, err
			}
		}
	}
	return recv, nil
}

// repositoryPath is owner/repo from a repository URL (https or scp-like),
// "" when it has none.
func repositoryPath(repoURL string) string {
	path := ""
	if u, err := url.Parse(repoURL); err == nil && u.Host != "" {
		path = u.Path
	} else if _, rest, ok := strings.Cut(repoURL, ":"); ok && !strings.Contains(repoURL, "://") {
		path = rest
	}
	path = strings.Trim(strings.TrimSuffix(strings.TrimSuffix(path, "/"), ".git"), "/")
	if strings.Count(path, "/") < 1 {
		return ""
	}
	return path
}

// notifyEvent maps the engine's sync events to notification events.
func notifyEvent(reason string) (v1alpha1.NotifyEvent, bool) {
	switch reason {
	case engine.EventSyncStarted:
		return v1alpha1.NotifySyncStarted, true
	case engine.EventSynced:
		return v1alpha1.NotifySyncSucceeded, true
	case engine.EventSyncFailed:
		return v1alpha1.NotifySyncFailed, true
	}
	return "", false
}
