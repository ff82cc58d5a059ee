package main

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/poll"
)

// convergeTool is converge's agent, one process.
type convergeTool struct {
	p    *peers
	cmds []*exec.Cmd
	// webhook is where the agent serves /hooks/git.
	webhook string
}

// webhookSecret signs the pushes the benchmark announces to converge.
const webhookSecret = "peers-benchmark"

func (c *convergeTool) name() string { return "converge" }
func (c *convergeTool) pids() []int  { return pidsOf(c.cmds) }
func (c *convergeTool) stop()        { stopAll(c.cmds); c.cmds = nil }

func (c *convergeTool) start(ctx context.Context, p *peers, ns string) error {
	c.p = p
	var err error
	if c.webhook, err = freeAddr(); err != nil {
		return err
	}
	cmd, err := p.process("converge-"+ns, []string{"CONVERGE_WEBHOOK_SECRET=" + webhookSecret}, *converge, "agent", "--kubeconfig", p.kubeconfig(ns),
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--webhook-bind-address", c.webhook, "--sealing-bind-address", "",
		"--cache-dir", filepath.Join(p.dir, ns+"-cache"), "--system-namespace", ns, "--key-bits", "2048",
		"--watch-label-selector", "converge.dev/peers="+ns)
	if err != nil {
		return err
	}
	c.cmds = []*exec.Cmd{cmd}
	return nil
}

func (c *convergeTool) create(ctx context.Context, ns, url string) error {
	return c.application(ctx, ns, "peers", url, "deploy")
}

// application creates an app of path in the repository at url, automated
// with prune and self-heal.
func (c *convergeTool) application(ctx context.Context, ns, name, url, path string) error {
	return c.p.env.Client.Create(ctx, &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"converge.dev/peers": ns}},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: url, Path: path},
			SyncPolicy: v1alpha1.SyncPolicy{
				Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true},
				Interval:  &metav1.Duration{Duration: *interval},
			},
		},
	})
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
		"--enable-leader-election=false", fmt.Sprintf("--concurrent=%d", *fluxConcurrent), "--metrics-addr", "127.0.0.1:0", "--health-addr", "127.0.0.1:0", "--log-level", "error")
	if err != nil {
		return err
	}
	f.cmds = append(f.cmds, kust)
	return nil
}

func (f *fluxTool) create(ctx context.Context, ns, url string) error {
	if err := f.gitRepository(ctx, ns, url); err != nil {
		return err
	}
	return f.kustomization(ctx, ns, "peers", "./deploy")
}

// gitRepository creates the GitRepository "peers" for url.
func (f *fluxTool) gitRepository(ctx context.Context, ns, url string) error {
	return f.p.env.Client.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": "peers", "namespace": ns},
		"spec":     map[string]any{"url": url, "interval": interval.String(), "ref": map[string]any{"branch": "main"}},
	}})
}

// kustomization creates a Kustomization of path in the GitRepository,
// pruning.
func (f *fluxTool) kustomization(ctx context.Context, ns, name, path string) error {
	return f.p.env.Client.Create(ctx, &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": name, "namespace": ns},
		"spec": map[string]any{"interval": interval.String(), "path": path, "prune": true,
			"sourceRef": map[string]any{"kind": "GitRepository", "name": "peers"}},
	}})
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

func (c *convergeTool) createFleet(ctx context.Context, ns, url string, n int) error {
	for i := range n {
		if err := c.application(ctx, ns, fleetApp(i), url, "apps/"+fleetApp(i)); err != nil {
			return err
		}
	}
	return nil
}

func (c *convergeTool) fleetAt(ctx context.Context, ns, rev string) (map[string]bool, error) {
	var list v1alpha1.ApplicationList
	if err := c.p.env.Client.List(ctx, &list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	at := map[string]bool{}
	for _, a := range list.Items {
		if a.Status.Sync.Revision == rev && a.Status.Sync.Status == v1alpha1.SyncStatusSynced {
			at[a.Name] = true
		}
	}
	return at, nil
}

// pushed posts a GitHub push event for url to the agent's webhook, signed
// with its secret.
func (c *convergeTool) pushed(ctx context.Context, ns, url string) error {
	body, err := json.Marshal(map[string]any{"ref": "refs/heads/main", "repository": map[string]any{"clone_url": url}})
	if err != nil {
		return err
	}
	mac := hmac.New(sha256.New, []byte(webhookSecret))
	mac.Write(body)
	signature := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	// The agent may still be starting its webhook server: try for a while.
	return poll.Until(ctx, 200*time.Millisecond, 30*time.Second, func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+c.webhook+"/hooks/git", bytes.NewReader(body))
		if err != nil {
			return false, err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-GitHub-Event", "push")
		req.Header.Set("X-Hub-Signature-256", signature)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusAccepted, fmt.Errorf("webhook: %s", resp.Status)
	})
}

func (f *fluxTool) createFleet(ctx context.Context, ns, url string, n int) error {
	if err := f.gitRepository(ctx, ns, url); err != nil {
		return err
	}
	for i := range n {
		if err := f.kustomization(ctx, ns, fleetApp(i), "./apps/"+fleetApp(i)); err != nil {
			return err
		}
	}
	return nil
}

func (f *fluxTool) fleetAt(ctx context.Context, ns, rev string) (map[string]bool, error) {
	list := &unstructured.UnstructuredList{}
	list.SetAPIVersion("kustomize.toolkit.fluxcd.io/v1")
	list.SetKind("KustomizationList")
	if err := f.p.env.Client.List(ctx, list, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	at := map[string]bool{}
	for _, ks := range list.Items {
		got, _, _ := unstructured.NestedString(ks.Object, "status", "lastAppliedRevision")
		if strings.HasSuffix(got, rev) {
			at[ks.GetName()] = true
		}
	}
	return at, nil
}

// pushed asks the GitRepository to fetch now, as Flux's Receiver does on
// a push event.
func (f *fluxTool) pushed(ctx context.Context, ns, _ string) error {
	_, err := f.request(ctx, ns, true)
	return err
}
