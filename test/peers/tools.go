package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
)

// convergeTool is converge's agent, one process.
type convergeTool struct {
	p    *peers
	cmds []*exec.Cmd
}

func (c *convergeTool) name() string { return "converge" }
func (c *convergeTool) pids() []int  { return pidsOf(c.cmds) }
func (c *convergeTool) stop()        { stopAll(c.cmds); c.cmds = nil }

func (c *convergeTool) start(ctx context.Context, p *peers, ns string) error {
	c.p = p
	cmd, err := p.process("converge-"+ns, nil, *converge, "agent", "--kubeconfig", p.kubeconfig(ns),
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--webhook-bind-address", "", "--sealing-bind-address", "",
		"--cache-dir", filepath.Join(p.dir, ns+"-cache"), "--system-namespace", ns, "--key-bits", "2048",
		"--watch-label-selector", "converge.dev/peers="+ns)
	if err != nil {
		return err
	}
	c.cmds = []*exec.Cmd{cmd}
	return nil
}

func (c *convergeTool) create(ctx context.Context, ns, url string) error {
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "peers", Namespace: ns, Labels: map[string]string{"converge.dev/peers": ns}},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: url, Path: "deploy"},
			SyncPolicy: v1alpha1.SyncPolicy{
				Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true},
				Interval:  &metav1.Duration{Duration: *interval},
			},
		},
	}
	return c.p.env.Client.Create(ctx, app)
}

func (c *convergeTool) app(ctx context.Context, ns string) (*v1alpha1.Application, error) {
	app := &v1alpha1.Application{}
	err := c.p.env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "peers"}, app)
	return app, err
}

func (c *convergeTool) applied(ctx context.Context, ns, rev string) (bool, error) {
	app, err := c.app(ctx, ns)
	if err != nil {
		return false, err
	}
	return app.Status.Sync.Revision == rev && app.Status.Sync.Status == v1alpha1.SyncStatusSynced, fmt.Errorf("at %q (%s)", app.Status.Sync.Revision, app.Status.LastError)
}

func (c *convergeTool) request(ctx context.Context, ns string, _ bool) (func(context.Context) (bool, error), error) {
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	app, err := c.app(ctx, ns)
	if err != nil {
		return nil, err
	}
	patch := client.MergeFrom(app.DeepCopy())
	if app.Annotations == nil {
		app.Annotations = map[string]string{}
	}
	app.Annotations[v1alpha1.AnnotationRequestedAt] = stamp
	app.Annotations[v1alpha1.AnnotationRequestedBy] = "peers"
	if err := c.p.env.Client.Patch(ctx, app, patch); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (bool, error) {
		app, err := c.app(ctx, ns)
		return err == nil && app.Status.LastHandledRequest == stamp, err
	}, nil
}

// fluxTool is Flux's source-controller and kustomize-controller.
type fluxTool struct {
	p    *peers
	cmds []*exec.Cmd
}

func (f *fluxTool) name() string { return "flux" }
func (f *fluxTool) pids() []int  { return pidsOf(f.cmds) }
func (f *fluxTool) stop()        { stopAll(f.cmds); f.cmds = nil }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (f *fluxTool) start(ctx context.Context, p *peers, ns string) error {
	f.p = p
	storage, err := freeAddr()
	if err != nil {
		return err
	}
	env := []string{"KUBECONFIG=" + p.kubeconfig(ns), "RUNTIME_NAMESPACE=" + ns}
	store := filepath.Join(p.dir, ns+"-storage")
	if err := os.MkdirAll(store, 0o755); err != nil {
		return err
	}
	src, err := p.process("source-controller-"+ns, env, *sourceBin,
		"--storage-path", store, "--storage-addr", storage, "--storage-adv-addr", storage,
		"--enable-leader-election=false", "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--log-level", "error")
	if err != nil {
		return err
	}
	f.cmds = append(f.cmds, src)
	kust, err := p.process("kustomize-controller-"+ns, env, *kustBin,
		"--enable-leader-election=false", "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--log-level", "error")
	if err != nil {
		return err
	}
	f.cmds = append(f.cmds, kust)
	return nil
}

func (f *fluxTool) create(ctx context.Context, ns, url string) error {
	repo := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": "peers", "namespace": ns},
		"spec":     map[string]any{"url": url, "interval": interval.String(), "ref": map[string]any{"branch": "main"}},
	}}
	if err := f.p.env.Client.Create(ctx, repo); err != nil {
		return err
	}
	ks := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": "peers", "namespace": ns},
		"spec": map[string]any{"interval": interval.String(), "path": "./deploy", "prune": true,
			"sourceRef": map[string]any{"kind": "GitRepository", "name": "peers"}},
	}}
	return f.p.env.Client.Create(ctx, ks)
}

func (f *fluxTool) get(ctx context.Context, ns, apiVersion, kind string) (*unstructured.Unstructured, error) {
	u := &unstructured.Unstructured{}
	u.SetAPIVersion(apiVersion)
	u.SetKind(kind)
	err := f.p.env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: "peers"}, u)
	return u, err
}

func (f *fluxTool) applied(ctx context.Context, ns, rev string) (bool, error) {
	ks, err := f.get(ctx, ns, "kustomize.toolkit.fluxcd.io/v1", "Kustomization")
	if err != nil {
		return false, err
	}
	got, _, _ := unstructured.NestedString(ks.Object, "status", "lastAppliedRevision")
	return strings.HasSuffix(got, rev), fmt.Errorf("at %q", got)
}

// request annotates the GitRepository (a new revision to fetch) or the
// Kustomization (a reconcile of what it has) with reconcile.fluxcd.io/requestedAt.
func (f *fluxTool) request(ctx context.Context, ns string, newRevision bool) (func(context.Context) (bool, error), error) {
	stamp := time.Now().UTC().Format(time.RFC3339Nano)
	apiVersion, kind := "kustomize.toolkit.fluxcd.io/v1", "Kustomization"
	if newRevision {
		apiVersion, kind = "source.toolkit.fluxcd.io/v1", "GitRepository"
	}
	u, err := f.get(ctx, ns, apiVersion, kind)
	if err != nil {
		return nil, err
	}
	patch := client.MergeFrom(u.DeepCopy())
	ann := u.GetAnnotations()
	if ann == nil {
		ann = map[string]string{}
	}
	ann["reconcile.fluxcd.io/requestedAt"] = stamp
	u.SetAnnotations(ann)
	if err := f.p.env.Client.Patch(ctx, u, patch); err != nil {
		return nil, err
	}
	return func(ctx context.Context) (bool, error) {
		u, err := f.get(ctx, ns, apiVersion, kind)
		if err != nil {
			return false, err
		}
		got, _, _ := unstructured.NestedString(u.Object, "status", "lastHandledReconcileAt")
		return got == stamp, nil
	}, nil
}
