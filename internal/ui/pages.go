package ui

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/actions"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/seal"
	"converge.dev/converge/internal/source"
)

// visibleApps is the hub's Applications in the namespaces where the viewer
// may list Applications. In local mode the hub watches as the viewer, so
// all of them.
func (u *Server) visibleApps(ctx context.Context, ss *session) ([]v1alpha1.Application, error) {
	apps, err := u.Hub.Applications(ctx, "")
	if err != nil || u.Local {
		return apps, err
	}
	if ss.can(ctx, "list", "applications", "") {
		return apps, nil
	}
	out := apps[:0:0]
	allowed := map[string]bool{}
	for _, a := range apps {
		ok, seen := allowed[a.Namespace]
		if !seen {
			ok = ss.can(ctx, "list", "applications", a.Namespace)
			allowed[a.Namespace] = ok
		}
		if ok {
			out = append(out, a)
		}
	}
	return out, nil
}

func (u *Server) appsPage(w http.ResponseWriter, r *http.Request, ss *session) {
	apps, err := u.visibleApps(r.Context(), ss)
	if err != nil {
		u.fail(w, ss, err)
		return
	}
	q := r.URL.Query()
	f := filter{Namespace: q.Get("namespace"), Sync: q.Get("sync"), Health: q.Get("health"), Q: strings.TrimSpace(q.Get("q"))}
	now := time.Now()
	v := appsView{Filter: f, Filtered: f != filter{}, SyncStates: syncStates, HealthStates: healthStates}
	rows := make([]appRow, 0, len(apps))
	var last string
	for i := range apps {
		row := rowOf(&apps[i], now)
		rows = append(rows, row)
		v.Rows = append(v.Rows, rowView{appRow: row, Hidden: !f.match(row)})
		if row.Namespace != last {
			v.Namespaces, last = append(v.Namespaces, row.Namespace), row.Namespace
		}
	}
	v.Counts = countRows(rows)
	u.render(w, http.StatusOK, "apps", u.page(ss, "Applications", "apps", v))
}

// appRow is one row of the list, for a live update; 404 when the viewer
// may not see it or it is gone.
func (u *Server) appRow(w http.ResponseWriter, r *http.Request, ss *session) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	if !u.Local && !ss.can(r.Context(), "list", "applications", ns) {
		http.NotFound(w, r)
		return
	}
	app, ok, err := u.Hub.Application(r.Context(), ns, name)
	if err != nil {
		http.Error(w, redact.Error(err), http.StatusInternalServerError)
		return
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	u.renderTemplate(w, http.StatusOK, "apps", "row", rowView{appRow: rowOf(app, time.Now())})
}

// appView is an Application's page.
type appView struct {
	// CSRF is the viewer's token, for the action forms.
	CSRF                     string
	Row                      appRow
	Revision, Path, Ref      string
	Chart, Destination       string
	Policy, Ready, LastError string
	DependsOn                []string
	Tree                     []*treeNode
	TreeNote                 string
	// Graph, when asked for (?view=graph), draws Tree.
	Graph      *graphView
	History    []historyRow
	Actions    []actionRow
	Events     []eventRow
	EventsNote string
	Targets    []rollbackTarget
}

// loadApp reads everything an app's page shows, as the viewer.
func (u *Server) loadApp(ctx context.Context, ss *session, ns, name string) (*appView, error) {
	app := &v1alpha1.Application{}
	if err := ss.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		return nil, err
	}
	now := time.Now()
	v := &appView{CSRF: ss.csrf, Row: rowOf(app, now), Revision: app.Status.Sync.Revision, Path: app.Spec.Source.Path, Destination: appspec.Destination(app)}
	if c := app.Spec.Destination.Cluster; c != "" {
		v.Destination = "Cluster " + c + ", namespace " + v.Destination
	}
	if ref := app.Spec.Source.Ref; ref != nil {
		switch {
		case ref.Commit != "":
			v.Ref = "commit " + source.ShortRevision(ref.Commit)
		case ref.Tag != "":
			v.Ref = "tag " + ref.Tag
		case ref.Semver != "":
			v.Ref = "semver " + ref.Semver
		case ref.Branch != "":
			v.Ref = "branch " + ref.Branch
		}
	}
	if c := app.Status.Sync.Chart; c != nil {
		v.Chart = fmt.Sprintf("%s %s (%s)", c.Name, c.Version, c.Digest)
	}
	v.Policy = policyText(app)
	for _, d := range app.Spec.DependsOn {
		ns := d.Namespace
		if ns == "" {
			ns = app.Namespace
		}
		v.DependsOn = append(v.DependsOn, ns+"/"+d.Name)
	}
	if ready := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionReady); ready != nil {
		v.Ready = ready.Reason + ": " + ready.Message
	}
	v.LastError = app.Status.LastError
	v.Tree, v.TreeNote = u.tree(ctx, ss, app)
	h, err := engine.LoadHistory(ctx, ss.client, engine.App{Name: name, Namespace: ns})
	switch {
	case err == nil:
		v.History, v.Actions, v.Targets = historyRows(app, h, now), actionRows(h, now), rollbackTargets(app, h)
	case apierrors.IsForbidden(err):
		v.TreeNote = strings.TrimPrefix(v.TreeNote+"; your account may not read the history record", "; ")
	default:
		return nil, err
	}
	var events corev1.EventList
	err = ss.client.List(ctx, &events, client.InNamespace(ns), client.MatchingFields{"involvedObject.kind": "Application", "involvedObject.name": name})
	switch {
	case err == nil:
		v.Events = eventRows(events.Items, now, 20)
	case apierrors.IsForbidden(err):
		v.EventsNote = "Your account may not list events in " + ns + "."
	default:
		v.EventsNote = "Events could not be read: " + redact.Error(err)
	}
	return v, nil
}

func policyText(app *v1alpha1.Application) string {
	sp := app.Spec.SyncPolicy
	var parts []string
	if a := sp.Automated; a != nil {
		parts = append(parts, "automated")
		if a.Prune {
			parts = append(parts, "prune")
		}
		if a.SelfHeal {
			parts = append(parts, "self-heal")
		}
	} else {
		parts = append(parts, "manual")
	}
	if app.Spec.ServiceAccountName != "" {
		parts = append(parts, "as ServiceAccount "+app.Spec.ServiceAccountName)
	}
	return strings.Join(parts, ", ")
}

func (u *Server) appPage(w http.ResponseWriter, r *http.Request, ss *session) {
	v, err := u.loadApp(r.Context(), ss, r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		u.fail(w, ss, err)
		return
	}
	v.graph(r)
	u.render(w, http.StatusOK, "app", u.page(ss, v.Row.Namespace+"/"+v.Row.Name, "apps", v))
}

// appSections is the live part of an app's page, for a live update.
func (u *Server) appSections(w http.ResponseWriter, r *http.Request, ss *session) {
	v, err := u.loadApp(r.Context(), ss, r.PathValue("ns"), r.PathValue("name"))
	if err != nil {
		http.Error(w, viewerMessage(err), statusOf(err))
		return
	}
	v.graph(r)
	u.renderTemplate(w, http.StatusOK, "app", "sections", v)
}

// graph draws the tree when the page asks for it.
func (v *appView) graph(r *http.Request) {
	if r.URL.Query().Get("view") == "graph" {
		v.Graph = layoutGraph(v.Tree)
	}
}

func statusOf(err error) int {
	if s, ok := err.(apierrors.APIStatus); ok && s.Status().Code != 0 {
		return int(s.Status().Code)
	}
	return http.StatusInternalServerError
}

// act carries out a button of an app's page as the viewer, then shows the
// page again with what happened.
func (u *Server) act(w http.ResponseWriter, r *http.Request, ss *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	ns, name, action := r.PathValue("ns"), r.PathValue("name"), r.PathValue("action")
	a := ss.actor(u.Records)
	var (
		d   actions.Done
		err error
		msg string
	)
	switch action {
	case "sync":
		var only []engine.ResourceSelector
		_ = r.ParseForm() // the CSRF check parsed it already
		for _, raw := range r.PostForm["resource"] {
			sel, perr := engine.ParseResourceSelector(raw)
			if perr != nil {
				err = perr
				break
			}
			only = append(only, sel)
		}
		if err == nil {
			d, err = a.Sync(ctx, ns, name, only...)
		}
		msg = "Sync requested."
		if len(only) > 0 {
			msg = fmt.Sprintf("Sync of %d selected object(s) requested; no hook runs.", len(only))
		}
	case "suspend":
		d, err = a.Suspend(ctx, ns, name)
		msg = "Suspended: nothing is synced until you resume."
	case "resume":
		d, err = a.Resume(ctx, ns, name)
		msg = "Resumed; a sync was requested."
	case "unpin":
		d, err = a.Unpin(ctx, ns, name)
		msg = "Unpinned: following the branch again."
	case "rollback":
		mode := actions.RollbackGit
		if r.PostFormValue("mode") == "pin" {
			mode = actions.RollbackPin
		}
		d, err = a.Rollback(ctx, ns, name, r.PostFormValue("target"), mode)
		if err == nil {
			msg = "Rollback to " + source.ShortRevision(d.Rollback.Target) + " requested: the agent commits it to Git and syncs it."
			if mode == actions.RollbackPin {
				msg = "Pinning to " + source.ShortRevision(d.Rollback.Target) + " requested."
			}
		}
	default:
		http.NotFound(w, r)
		return
	}
	u.Log.Info("action", "user", ss.user, "action", action, "app", ns+"/"+name, "ok", err == nil)
	ss.flashOutcome(action, msg, d, err)
	http.Redirect(w, r, "/apps/"+ns+"/"+name, http.StatusSeeOther)
}

// flashOutcome tells the viewer's next page how an action went: msg, or
// why it failed, and whether it could not be recorded.
func (ss *session) flashOutcome(action, msg string, d actions.Done, err error) {
	switch {
	case err != nil:
		ss.setFlash("!" + actionError(action, err))
	case d.Warning != "":
		ss.setFlash(msg + " (Not recorded: " + redact.Message(d.Warning) + ")")
	default:
		ss.setFlash(msg)
	}
}

func actionError(action string, err error) string {
	if apierrors.IsForbidden(err) {
		return fmt.Sprintf("%s refused by the cluster: your account is not allowed to do this. %s", upperFirst(action), redact.Error(err))
	}
	if errors.Is(err, actions.ErrNotPinned) {
		return "The Application is not pinned."
	}
	return fmt.Sprintf("%s failed: %s", upperFirst(action), redact.Error(err))
}

func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// listVisible lists into list as the viewer: cluster-wide, or, where that
// is forbidden, namespace by namespace where the viewer may list
// Applications (each through a fresh list from fresh, added with add),
// with a note saying so.
func (u *Server) listVisible(ctx context.Context, ss *session, list client.ObjectList, fresh func() client.ObjectList, add func(client.ObjectList)) (string, error) {
	err := ss.client.List(ctx, list)
	if !apierrors.IsForbidden(err) {
		return "", err
	}
	apps, err := u.visibleApps(ctx, ss)
	if err != nil {
		return "", err
	}
	seen := map[string]bool{}
	for _, a := range apps {
		if seen[a.Namespace] {
			continue
		}
		seen[a.Namespace] = true
		one := fresh()
		if e := ss.client.List(ctx, one, client.InNamespace(a.Namespace)); e == nil {
			add(one)
		}
	}
	return "Shown from the namespaces where your account may list them.", nil
}

// imagesView is the image policies page.
type imagesView struct {
	Items []imageRow
	Note  string
}

type imageRow struct {
	Namespace, Name, Image, Latest, Previous string
	Applied, Commit                          string
	Ready                                    bool
	State, Message                           string
}

func (u *Server) imagesPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ctx := r.Context()
	var list v1alpha1.ImagePolicyList
	note, err := u.listVisible(ctx, ss, &list, func() client.ObjectList { return &v1alpha1.ImagePolicyList{} }, func(one client.ObjectList) {
		list.Items = append(list.Items, one.(*v1alpha1.ImagePolicyList).Items...)
	})
	if err != nil {
		u.fail(w, ss, err)
		return
	}
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	v := imagesView{Note: note}
	for _, p := range list.Items {
		row := imageRow{Namespace: p.Namespace, Name: p.Name, Image: "-", Latest: "-", Previous: "-", Applied: "never", Commit: source.ShortRevision(p.Status.AppliedCommit), State: "Pending"}
		if l := p.Status.LatestRef; l != nil {
			row.Image, row.Latest = l.Name, l.Tag
		}
		if l := p.Status.ObservedPreviousRef; l != nil {
			row.Previous = l.Tag
		}
		if at := p.Status.AppliedAt; at != nil {
			row.Applied = at.UTC().Format(time.RFC3339)
		}
		if c := apimeta.FindStatusCondition(p.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			row.Ready, row.State, row.Message = c.Status == "True", c.Reason, c.Message
		}
		v.Items = append(v.Items, row)
	}
	u.render(w, http.StatusOK, "images", u.page(ss, "Images", "images", v))
}

// sealedView is the SealedSecrets page.
type sealedView struct {
	Items            []sealedRow
	Note             string
	KeyID, SPKI      string
	CertError        string
	DefaultNamespace string
}

type sealedRow struct {
	Namespace, Name, Scope string
	Keys, KeyIDs           []string
	Ready                  bool
	State, Message         string
}

func (u *Server) sealedPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ctx := r.Context()
	v := sealedView{}
	var list v1alpha1.SealedSecretList
	note, err := u.listVisible(ctx, ss, &list, func() client.ObjectList { return &v1alpha1.SealedSecretList{} }, func(one client.ObjectList) {
		list.Items = append(list.Items, one.(*v1alpha1.SealedSecretList).Items...)
	})
	if err != nil {
		u.fail(w, ss, err)
		return
	}
	v.Note = note
	sort.Slice(list.Items, func(i, j int) bool {
		a, b := list.Items[i], list.Items[j]
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	for _, s := range list.Items {
		row := sealedRow{Namespace: s.Namespace, Name: s.Name, Scope: s.Spec.Scope, KeyIDs: s.Status.KeyIDs, State: "Pending"}
		if row.Scope == "" {
			row.Scope = "strict"
		}
		for k := range s.Spec.EncryptedData {
			row.Keys = append(row.Keys, k)
		}
		sort.Strings(row.Keys)
		if c := apimeta.FindStatusCondition(s.Status.Conditions, v1alpha1.ConditionReady); c != nil {
			row.Ready = c.Status == "True"
			row.State = c.Reason
			if !row.Ready {
				row.Message = c.Message
			}
		}
		v.Items = append(v.Items, row)
	}
	if id, spki, err := sealingKey(ctx, ss.client, u.SystemNamespace); err != nil {
		v.CertError = "The sealing certificate could not be read: " + viewerMessage(err)
	} else {
		v.KeyID, v.SPKI = id, spki
	}
	v.DefaultNamespace = serviceAccountNamespace(ss.user)
	u.render(w, http.StatusOK, "sealed", u.page(ss, "Sealed Secrets", "sealed", v))
}

// sealingKey reads the published sealing certificate, as the viewer, and
// returns its key id and public key (DER SubjectPublicKeyInfo, base64) for
// the page to seal with.
func sealingKey(ctx context.Context, c client.Client, ns string) (id, spki string, err error) {
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: seal.CertConfigMap}, &cm); err != nil {
		return "", "", err
	}
	pub, kid, err := seal.ParseCert([]byte(cm.Data[seal.CertKey]))
	if err != nil {
		return "", "", err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", "", err
	}
	return kid.String(), base64.StdEncoding.EncodeToString(der), nil
}

// serviceAccountNamespace is the namespace of a ServiceAccount's user
// name, "" for other users.
func serviceAccountNamespace(user string) string {
	parts := strings.Split(user, ":")
	if len(parts) == 4 && parts[0] == "system" && parts[1] == "serviceaccount" {
		return parts[2]
	}
	return ""
}
