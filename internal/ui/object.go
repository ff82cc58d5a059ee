package ui

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/actions"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/redact"
)

// Bounds of what an object's page reads.
const (
	logTailLines = 500
	logMaxBytes  = 256 << 10
	objectEvents = 50
)

// objectLink is the page of one object of app's tree.
func objectLink(app *v1alpha1.Application, group, kind, ns, name string) string {
	q := url.Values{"group": {group}, "kind": {kind}, "namespace": {ns}, "name": {name}}
	return "/apps/" + url.PathEscape(app.Namespace) + "/" + url.PathEscape(app.Name) + "/object?" + q.Encode()
}

// objectView is one object's page: its live manifest (Secret values
// hidden), its events, a Pod's logs, and the actions its kind has. All of
// it read and done with the viewer's credentials.
type objectView struct {
	AppNamespace, AppName  string
	Res                    actions.Resource
	Link                   string
	Health, HealthMessage  string
	Manifest, ManifestNote string
	Events                 []eventRow
	EventsNote             string
	// A Pod's containers, the one shown, and its logs.
	Containers      []string
	Container       string
	Previous        bool
	Logs, LogsNote  string
	Restart, Delete bool
	Scale, Retry    bool
	Replicas        int64
}

func resourceOf(v url.Values) actions.Resource {
	return actions.Resource{Group: v.Get("group"), Kind: v.Get("kind"), Namespace: v.Get("namespace"), Name: v.Get("name")}
}

var errNotInTree = errors.New("this object is not one of the app's")

func (u *Server) objectPage(w http.ResponseWriter, r *http.Request, ss *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	ns, name := r.PathValue("ns"), r.PathValue("name")
	res := resourceOf(r.URL.Query())
	app := &v1alpha1.Application{}
	if err := ss.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		u.fail(w, ss, err)
		return
	}
	if !actions.InTree(app, res) {
		u.fail(w, ss, apierrors.NewNotFound(schema.GroupResource{Group: res.Group, Resource: res.Kind}, res.Name))
		return
	}
	v := &objectView{AppNamespace: ns, AppName: name, Res: res,
		Restart: actions.CanRestart(res), Delete: actions.CanDelete(res), Scale: actions.CanScale(res), Retry: actions.CanRetry(res)}
	live, err := u.liveObject(ctx, ss, res)
	switch {
	case apierrors.IsNotFound(err):
		v.ManifestNote = "Not in the cluster."
	case err != nil:
		v.ManifestNote = viewerMessage(err)
	default:
		v.Manifest = manifestYAML(live)
		h := engine.HealthOf(live)
		v.Health, v.HealthMessage = string(h.Health()), h.Message
		v.Replicas, _, _ = unstructured.NestedInt64(live.Object, "spec", "replicas")
	}
	if res.Namespace != "" {
		var events corev1.EventList
		err := ss.client.List(ctx, &events, client.InNamespace(res.Namespace),
			client.MatchingFields{"involvedObject.kind": res.Kind, "involvedObject.name": res.Name})
		switch {
		case apierrors.IsForbidden(err):
			v.EventsNote = "Your account may not list events in " + res.Namespace + "."
		case err != nil:
			v.EventsNote = "Events could not be read: " + redact.Error(err)
		default:
			v.Events = eventRows(events.Items, time.Now(), objectEvents)
		}
	}
	if live != nil && res.Group == "" && res.Kind == "Pod" {
		u.podLogs(ctx, ss, v, live, r.URL.Query())
	}
	u.render(w, http.StatusOK, "object", u.page(ss, res.Kind+" "+res.Name, "apps", v))
}

// liveObject reads res as the viewer.
func (u *Server) liveObject(ctx context.Context, ss *session, res actions.Resource) (*unstructured.Unstructured, error) {
	m, err := u.Mapper.RESTMapping(schema.GroupKind{Group: res.Group, Kind: res.Kind})
	if err != nil {
		return nil, err
	}
	live := &unstructured.Unstructured{}
	live.SetGroupVersionKind(m.GroupVersionKind)
	if err := ss.client.Get(ctx, client.ObjectKey{Namespace: res.Namespace, Name: res.Name}, live); err != nil {
		return nil, err
	}
	return live, nil
}

// manifestYAML is live as YAML, without managed fields or the last
// applied configuration, and with a Secret's values replaced by their
// sizes.
func manifestYAML(live *unstructured.Unstructured) string {
	obj := live.DeepCopy()
	obj.SetManagedFields(nil)
	if ann := obj.GetAnnotations(); ann != nil {
		delete(ann, corev1.LastAppliedConfigAnnotation)
		obj.SetAnnotations(ann)
	}
	if obj.GetAPIVersion() == "v1" && obj.GetKind() == "Secret" {
		for _, field := range []string{"data", "stringData"} {
			values, ok := obj.Object[field].(map[string]any)
			if !ok {
				continue
			}
			for k, val := range values {
				s, _ := val.(string)
				values[k] = fmt.Sprintf("(hidden: %d characters)", len(s))
			}
		}
	}
	out, err := yaml.Marshal(obj.Object)
	if err != nil {
		return "the manifest could not be shown: " + err.Error()
	}
	return string(out)
}

// podLogs reads the last lines of one container's log, as the viewer.
func (u *Server) podLogs(ctx context.Context, ss *session, v *objectView, live *unstructured.Unstructured, q url.Values) {
	pod := &corev1.Pod{}
	if err := ss.client.Scheme().Convert(live, pod, nil); err != nil {
		v.LogsNote = "The pod could not be read: " + err.Error()
		return
	}
	for _, c := range append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...) {
		v.Containers = append(v.Containers, c.Name)
	}
	if len(v.Containers) == 0 {
		return
	}
	v.Container = v.Containers[len(pod.Spec.InitContainers)%len(v.Containers)]
	if c := q.Get("container"); slices.Contains(v.Containers, c) {
		v.Container = c
	}
	v.Previous = q.Get("previous") == "1"
	cs, err := ss.clientset()
	if err != nil {
		v.LogsNote = redact.Error(err)
		return
	}
	tail, limit := int64(logTailLines), int64(logMaxBytes)
	raw, err := cs.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{
		Container: v.Container, Previous: v.Previous, TailLines: &tail, LimitBytes: &limit, Timestamps: true,
	}).DoRaw(ctx)
	switch {
	case apierrors.IsForbidden(err):
		v.LogsNote = "Your account may not read this pod's logs (pods/log in " + pod.Namespace + ")."
	case err != nil:
		v.LogsNote = "The log could not be read: " + redact.Error(err)
	case len(raw) == 0:
		v.LogsNote = "The log is empty."
	default:
		v.Logs = string(raw)
	}
}

// objectAct carries out an action on one object of the app's tree, with
// the viewer's credentials, recorded in the app's history as the viewer.
func (u *Server) objectAct(w http.ResponseWriter, r *http.Request, ss *session) {
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	ns, name, action := r.PathValue("ns"), r.PathValue("name"), r.PathValue("action")
	_ = r.ParseForm() // the CSRF check may have read a header instead
	res := resourceOf(r.PostForm)
	app := &v1alpha1.Application{}
	if err := ss.client.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		u.fail(w, ss, err)
		return
	}
	a := ss.actor(u.Records)
	back := objectLink(app, res.Group, res.Kind, res.Namespace, res.Name)
	var (
		d   actions.Done
		err error
		msg string
	)
	switch action {
	case "restart":
		d, err = a.Restart(ctx, app, res)
		msg = "Restarted: its pods are replaced one by one."
	case "scale":
		n, perr := strconv.ParseInt(r.PostFormValue("replicas"), 10, 32)
		if perr != nil {
			err = fmt.Errorf("replicas %q: want a whole number", r.PostFormValue("replicas"))
			break
		}
		d, err = a.Scale(ctx, app, res, int32(n))
		msg = fmt.Sprintf("Scaled to %d. A sync puts back the count in Git, if the manifest names one.", n)
	case "delete":
		d, err = a.DeletePod(ctx, app, res)
		msg = "Pod deleted: its controller makes another."
		back = "/apps/" + url.PathEscape(ns) + "/" + url.PathEscape(name)
	case "retry":
		d, err = a.RetryJob(ctx, app, res)
		msg = "Job deleted and a sync requested: it runs again."
	default:
		http.NotFound(w, r)
		return
	}
	u.Log.Info("action", "user", ss.user, "action", action, "app", ns+"/"+name, "object", res.String(), "ok", err == nil)
	ss.flashOutcome(action, msg, d, err)
	http.Redirect(w, r, back, http.StatusSeeOther)
}

// Bounds of a followed log: how long one stream lasts, how much it
// carries, and how many are open at once per session and in all (each
// holds a connection to the apiserver and through it to a kubelet).
const (
	followFor        = 30 * time.Minute
	followMaxBytes   = 16 << 20
	followPerSession = 4
)

var followSlots = make(chan struct{}, 64)

// followLogs streams a Pod container's log as it grows (text/plain), as
// the viewer: the last lines first, then what the container prints.
func (u *Server) followLogs(w http.ResponseWriter, r *http.Request, ss *session) {
	ns, name := r.PathValue("ns"), r.PathValue("name")
	q := r.URL.Query()
	res := resourceOf(q)
	app := &v1alpha1.Application{}
	if err := ss.client.Get(r.Context(), client.ObjectKey{Namespace: ns, Name: name}, app); err != nil {
		http.Error(w, viewerMessage(err), statusOf(err))
		return
	}
	if res.Group != "" || res.Kind != "Pod" || !actions.InTree(app, res) {
		http.Error(w, errNotInTree.Error(), http.StatusNotFound)
		return
	}
	if !ss.startFollow() {
		http.Error(w, fmt.Sprintf("at most %d logs followed at once in a session: stop one first", followPerSession), http.StatusTooManyRequests)
		return
	}
	defer ss.endFollow()
	select {
	case followSlots <- struct{}{}:
		defer func() { <-followSlots }()
	default:
		http.Error(w, "too many logs are followed on this server: try again later", http.StatusServiceUnavailable)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), followFor)
	defer cancel()
	cs, err := ss.clientset()
	if err != nil {
		http.Error(w, redact.Error(err), http.StatusInternalServerError)
		return
	}
	tail, limit := int64(logTailLines), int64(followMaxBytes)
	stream, err := cs.CoreV1().Pods(res.Namespace).GetLogs(res.Name, &corev1.PodLogOptions{
		Container: q.Get("container"), Follow: true, TailLines: &tail, LimitBytes: &limit, Timestamps: true,
	}).Stream(ctx)
	if err != nil {
		http.Error(w, "The log could not be read: "+viewerMessage(err), statusOf(err))
		return
	}
	defer stream.Close()
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Now().Add(followFor + 10*time.Second))
	buf := make([]byte, 32<<10)
	for {
		n, err := stream.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			_ = rc.Flush()
		}
		if err != nil {
			return
		}
	}
}
