package cli

import (
	"bytes"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/config"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/version"
)

// InstallOptions holds the flags of `converge install`.
type InstallOptions struct {
	Streams
	Kube      KubeFlags
	Apply     bool
	CRDsOnly  bool
	Image     string
	Namespace string
	Profile   string
}

// NewInstallCommand returns `converge install`.
func NewInstallCommand(streams Streams) *cobra.Command {
	o := &InstallOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Print (or --apply) the CRDs, namespace, RBAC and agent Deployment",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Kube.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file")
	f.StringVar(&o.Kube.Context, "context", "", "kubeconfig context to use")
	f.BoolVar(&o.Apply, "apply", false, "apply to the cluster instead of printing")
	f.BoolVar(&o.CRDsOnly, "crds-only", false, "only the CRDs")
	f.StringVar(&o.Image, "image", "ghcr.io/converge-dev/converge:"+version.Get().Version, "agent image")
	f.StringVar(&o.Namespace, "agent-namespace", "converge-system", "namespace of the agent")
	f.StringVar(&o.Profile, "profile", ProfileSingleTenant, "single-tenant (the agent may apply anything) or multi-tenant (--require-tenant, a narrow agent role, admission policies for records; see docs/security.md)")
	return cmd
}

// Manifests returns the install objects.
func (o *InstallOptions) Manifests() ([]render.Object, error) {
	var objs []render.Object
	entries, err := fs.ReadDir(config.CRDs, "crd")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		data, err := fs.ReadFile(config.CRDs, "crd/"+e.Name())
		if err != nil {
			return nil, err
		}
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &u.Object); err != nil {
			return nil, fmt.Errorf("embedded %s: %w", e.Name(), err)
		}
		objs = append(objs, render.Object{Unstructured: u, Source: "crd/" + e.Name()})
	}
	if o.CRDsOnly {
		return objs, nil
	}
	if o.Profile == "" {
		o.Profile = ProfileSingleTenant
	}
	if o.Profile != ProfileSingleTenant && o.Profile != ProfileMultiTenant {
		return nil, fmt.Errorf("--profile %q: want %s or %s", o.Profile, ProfileSingleTenant, ProfileMultiTenant)
	}
	ns := o.Namespace
	args := []any{"agent", "--leader-elect", "--shards=auto", "--cache-dir=/var/cache/converge", "--webhook-secret-file=/etc/converge/webhook/secret", "--ui-bind-address=:9494"}
	if o.Profile == ProfileMultiTenant {
		args = append(args, "--require-tenant")
	}
	labels := map[string]any{"app.kubernetes.io/name": "converge-agent"}
	for _, m := range []map[string]any{
		{"apiVersion": "v1", "kind": "Namespace", "metadata": map[string]any{"name": ns}},
		{"apiVersion": "v1", "kind": "ServiceAccount", "metadata": map[string]any{"name": "converge-agent", "namespace": ns}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": "converge-agent"},
			"rules": agentRules(o.Profile)},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": map[string]any{"name": "converge-agent"},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "converge-agent"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "converge-agent", "namespace": ns}}},
		agentDeployment(ns, o.Image, args, labels),
		// Anyone signed in may read the sealing certificate: sealing needs
		// nothing else.
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "converge-sealing-cert-reader", "namespace": ns},
			"rules": []any{map[string]any{"apiGroups": []any{""}, "resources": []any{"configmaps"}, "resourceNames": []any{"converge-sealing-cert"}, "verbs": []any{"get"}}}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "converge-sealing-cert-reader", "namespace": ns},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "converge-sealing-cert-reader"},
			"subjects": []any{map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}}},
		{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "converge-webhook", "namespace": ns},
			"spec": map[string]any{"selector": labels, "ports": []any{map[string]any{"name": "webhook", "port": int64(80), "targetPort": "webhook"}}}},
		// Sealing has a Service of its own: expose the webhook to your
		// forge without exposing re-encryption.
		{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "converge-sealing", "namespace": ns},
			"spec": map[string]any{"selector": labels, "ports": []any{map[string]any{"name": "sealing", "port": int64(80), "targetPort": "sealing"}}}},
		// The web UI: viewers sign in with their own Kubernetes token
		// (docs/ui.md); reach it with kubectl port-forward or an Ingress
		// that terminates TLS. Sessions live in the replica that made
		// them, so a viewer stays with one.
		{"apiVersion": "v1", "kind": "Service", "metadata": map[string]any{"name": "converge-ui", "namespace": ns},
			"spec": map[string]any{"selector": labels, "sessionAffinity": "ClientIP",
				"ports": []any{map[string]any{"name": "ui", "port": int64(80), "targetPort": "ui"}}}},
	} {
		objs = append(objs, render.Object{Unstructured: &unstructured.Unstructured{Object: m}, Source: "install"})
	}
	for _, m := range profileObjects(o.Profile, ns, labels) {
		objs = append(objs, render.Object{Unstructured: &unstructured.Unstructured{Object: m}, Source: "install"})
	}
	return objs, nil
}

// agentDeployment is the agent's Deployment: two replicas sharding the
// apps, non-root, read-only root filesystem, no capabilities.
func agentDeployment(ns, image string, args []any, labels map[string]any) map[string]any {
	return map[string]any{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": map[string]any{"name": "converge-agent", "namespace": ns, "labels": labels},
		"spec": map[string]any{
			"replicas": int64(2),
			"selector": map[string]any{"matchLabels": labels},
			"template": map[string]any{
				"metadata": map[string]any{"labels": labels},
				"spec": map[string]any{
					"serviceAccountName": "converge-agent",
					"securityContext":    map[string]any{"runAsNonRoot": true, "seccompProfile": map[string]any{"type": "RuntimeDefault"}},
					"containers": []any{map[string]any{
						"name": "agent", "image": image,
						"args": args,
						"env": []any{
							map[string]any{"name": "POD_NAMESPACE", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.namespace"}}},
							map[string]any{"name": "POD_NAME", "valueFrom": map[string]any{"fieldRef": map[string]any{"fieldPath": "metadata.name"}}},
						},
						"ports": []any{
							map[string]any{"name": "metrics", "containerPort": int64(8080)},
							map[string]any{"name": "probes", "containerPort": int64(8081)},
							map[string]any{"name": "webhook", "containerPort": int64(9292)},
							map[string]any{"name": "sealing", "containerPort": int64(9393)},
							map[string]any{"name": "ui", "containerPort": int64(9494)},
						},
						"livenessProbe":  map[string]any{"httpGet": map[string]any{"path": "/healthz", "port": "probes"}},
						"readinessProbe": map[string]any{"httpGet": map[string]any{"path": "/readyz", "port": "probes"}},
						// The agent itself stays under 512Mi for a few
						// hundred apps; renders run in child processes,
						// at most 2 at once, 1Gi each (render.Limits).
						"resources": map[string]any{"requests": map[string]any{"cpu": "100m", "memory": "256Mi"},
							"limits": map[string]any{"memory": "3Gi"}},
						"securityContext": map[string]any{"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": map[string]any{"drop": []any{"ALL"}}},
						"volumeMounts": []any{
							map[string]any{"name": "cache", "mountPath": "/var/cache/converge"},
							map[string]any{"name": "tmp", "mountPath": "/tmp"},
							map[string]any{"name": "webhook", "mountPath": "/etc/converge/webhook", "readOnly": true},
						},
					}},
					"volumes": []any{
						map[string]any{"name": "cache", "emptyDir": map[string]any{}},
						map[string]any{"name": "tmp", "emptyDir": map[string]any{}},
						map[string]any{"name": "webhook", "secret": map[string]any{"secretName": "converge-webhook", "optional": true}},
					},
				},
			},
		}}
}

// Run prints or applies the manifests.
func (o *InstallOptions) Run(cmd *cobra.Command) error {
	objs, err := o.Manifests()
	if err != nil {
		return err
	}
	if !o.Apply {
		var buf bytes.Buffer
		for i, obj := range objs {
			data, err := yaml.Marshal(obj.Object)
			if err != nil {
				return err
			}
			if i > 0 {
				buf.WriteString("---\n")
			}
			buf.Write(data)
		}
		_, err := o.Out.Write(buf.Bytes())
		return err
	}
	cfg, _, err := o.Kube.Config()
	if err != nil {
		return err
	}
	m, err := engine.New(cfg, engine.DefaultOptions())
	if err != nil {
		return err
	}
	// The install is an app of its own, recorded in the agent's namespace
	// (made in the sync's first stage), out of every tenant's reach; a
	// later install prunes what it dropped. The CRDs alone make no
	// namespace, so their record stays in "default".
	app := engine.App{Name: "converge-install", Namespace: o.Namespace}
	if o.CRDsOnly {
		app = engine.App{Name: "converge-crds", Namespace: "default"}
	}
	cs, err := m.Sync(cmd.Context(), objs, engine.SyncOptions{PlanOptions: engine.PlanOptions{App: app, DefaultNamespace: o.Namespace, Prune: true}, Wait: o.CRDsOnly})
	if cs != nil {
		printChanges(o.ErrOut, cs, "Install")
	}
	return err
}
