package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"helm.sh/helm/v4/pkg/strvals"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/poll"
)

// appClient connects to the cluster with the Application API registered and
// returns the namespace Applications are looked up in.
func appClient(k *KubeFlags) (client.Client, string, error) {
	cfg, ns, err := k.Config()
	if err != nil {
		return nil, "", err
	}
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return nil, "", err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	return c, ns, err
}

// NewAppCommand returns `converge app` with create and delete.
func NewAppCommand(streams Streams) *cobra.Command {
	cmd := &cobra.Command{Use: "app", Short: "Create and delete Applications (pull mode)"}
	cmd.AddCommand(newAppCreateCommand(streams), newAppDeleteCommand(streams))
	return cmd
}

// AppCreateOptions holds the flags of `converge app create`.
type AppCreateOptions struct {
	Streams
	Kube                                KubeFlags
	Repo, Path, Branch, Tag, Semver     string
	Revision, DestNamespace, SecretName string
	AutoSync, Prune, SelfHeal           bool
	Interval                            time.Duration
	// Helm and chart sources.
	ChartRepo, Chart, ChartVersion, ReleaseName string
	Values, Set, SetString                      []string
	CreateNamespace                             bool
	DependsOn                                   []string
	Cluster                                     string
}

func newAppCreateCommand(streams Streams) *cobra.Command {
	o := &AppCreateOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "create NAME --repo URL --path P",
		Short: "Create an Application",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd.Context(), args[0])
		},
	}
	o.Kube.Bind(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.Repo, "repo", "", "Git repository URL (required unless --chart-repo)")
	f.StringVar(&o.Path, "path", "", "path in the repository")
	f.StringVar(&o.Branch, "branch", "", "follow a branch (default main)")
	f.StringVar(&o.Tag, "tag", "", "pin a tag")
	f.StringVar(&o.Semver, "semver", "", "follow the highest tag in a semver range")
	f.StringVar(&o.Revision, "revision", "", "pin a commit SHA")
	f.StringVar(&o.DestNamespace, "dest-namespace", "", "namespace for objects that name none (default: the Application's)")
	f.StringVar(&o.SecretName, "secret", "", "Secret with the repository's credentials")
	f.BoolVar(&o.AutoSync, "auto-sync", false, "sync new revisions automatically")
	f.BoolVar(&o.Prune, "prune", false, "with --auto-sync, delete what leaves Git")
	f.BoolVar(&o.SelfHeal, "self-heal", false, "with --auto-sync, revert live changes at once")
	f.DurationVar(&o.Interval, "interval", v1alpha1.DefaultInterval, "how often to check the repository")
	f.StringVar(&o.ChartRepo, "chart-repo", "", "a Helm repository (https://) or OCI registry (oci://) to take --chart from")
	f.StringVar(&o.Chart, "chart", "", "with --chart-repo: the chart's name")
	f.StringVar(&o.ChartVersion, "chart-version", "", "with --chart-repo: an exact version or a semver range (default: the newest)")
	f.StringVar(&o.ReleaseName, "release-name", "", "Helm release name (default: the Application's name)")
	f.StringArrayVar(&o.Values, "values", nil, "Helm values file, relative to the chart (or, with --chart-repo, to --path in --repo) (repeatable)")
	f.StringArrayVar(&o.Set, "set", nil, "Helm value as key=value (repeatable)")
	f.StringArrayVar(&o.SetString, "set-string", nil, "Helm value as key=value, always a string (repeatable)")
	f.BoolVar(&o.CreateNamespace, "create-namespace", false, "create --dest-namespace if it does not exist; the app then owns it")
	f.StringVar(&o.Cluster, "cluster", "", "deploy to this Cluster (see converge cluster list; default: this cluster)")
	f.StringArrayVar(&o.DependsOn, "depends-on", nil, "sync only once this Application (NAME or NAMESPACE/NAME) is Synced and Healthy (repeatable)")
	return cmd
}

// Run creates the Application.
func (o *AppCreateOptions) Run(ctx context.Context, name string) error {
	set := 0
	for _, v := range []string{o.Branch, o.Tag, o.Semver, o.Revision} {
		if v != "" {
			set++
		}
	}
	if set > 1 {
		return fmt.Errorf("give at most one of --branch, --tag, --semver and --revision")
	}
	if (o.Prune || o.SelfHeal) && !o.AutoSync {
		return fmt.Errorf("--prune and --self-heal need --auto-sync")
	}
	if o.Repo == "" && o.ChartRepo == "" {
		return fmt.Errorf("give --repo (a Git repository), --chart-repo with --chart, or both")
	}
	if (o.ChartRepo == "") != (o.Chart == "") {
		return fmt.Errorf("--chart-repo and --chart go together")
	}
	values := map[string]any{}
	for _, kv := range o.Set {
		if err := strvals.ParseInto(kv, values); err != nil {
			return fmt.Errorf("--set %s: %w", kv, err)
		}
	}
	for _, kv := range o.SetString {
		if err := strvals.ParseIntoString(kv, values); err != nil {
			return fmt.Errorf("--set-string %s: %w", kv, err)
		}
	}
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:      v1alpha1.ApplicationSource{RepoURL: o.Repo, Path: o.Path},
			Destination: v1alpha1.ApplicationDestination{Namespace: o.DestNamespace, Cluster: o.Cluster},
			SyncPolicy:  v1alpha1.SyncPolicy{Interval: &metav1.Duration{Duration: o.Interval}},
		},
	}
	if set == 1 {
		app.Spec.Source.Ref = &v1alpha1.GitRef{Branch: o.Branch, Tag: o.Tag, Semver: o.Semver, Commit: o.Revision}
	}
	if o.SecretName != "" {
		app.Spec.Source.SecretRef = &v1alpha1.LocalObjectReference{Name: o.SecretName}
	}
	if o.AutoSync {
		app.Spec.SyncPolicy.Automated = &v1alpha1.AutomatedSync{Prune: o.Prune, SelfHeal: o.SelfHeal}
	}
	app.Spec.SyncPolicy.CreateNamespace = o.CreateNamespace
	for _, d := range o.DependsOn {
		ref := v1alpha1.ApplicationReference{Name: d}
		if ns, name, ok := strings.Cut(d, "/"); ok {
			ref = v1alpha1.ApplicationReference{Namespace: ns, Name: name}
		}
		if ref.Name == "" || strings.Contains(ref.Name, "/") {
			return fmt.Errorf("--depends-on %q: give NAME or NAMESPACE/NAME", d)
		}
		app.Spec.DependsOn = append(app.Spec.DependsOn, ref)
	}
	if o.ChartRepo != "" {
		app.Spec.Source.Chart = &v1alpha1.ChartSource{RepoURL: o.ChartRepo, Name: o.Chart, Version: o.ChartVersion}
	}
	if o.ReleaseName != "" || len(o.Values) > 0 || len(values) > 0 {
		h := &v1alpha1.HelmSource{ReleaseName: o.ReleaseName, ValuesFiles: o.Values}
		if len(values) > 0 {
			raw, err := json.Marshal(values)
			if err != nil {
				return err
			}
			h.Values = &apiextensionsv1.JSON{Raw: raw}
		}
		app.Spec.Source.Helm = h
	}
	what := fmt.Sprintf("repo %s, path %s", orDash(o.Repo), orDash(o.Path))
	if o.ChartRepo != "" {
		what += fmt.Sprintf(", chart %s %s from %s", o.Chart, orDash(o.ChartVersion), o.ChartRepo)
	}
	// The first sync is this user's request.
	d, err := newActor(ctx, c).Create(ctx, app, what)
	if err != nil {
		return err
	}
	warnRecord(o.Streams, d)
	fmt.Fprintf(o.ErrOut, "Application %s/%s created\n", ns, name)
	return nil
}

// AppDeleteOptions holds the flags of `converge app delete`.
type AppDeleteOptions struct {
	Streams
	Kube    KubeFlags
	Cascade bool
	Wait    bool
}

func newAppDeleteCommand(streams Streams) *cobra.Command {
	o := &AppDeleteOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete an Application; its objects too unless --cascade=false",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd.Context(), args[0])
		},
	}
	o.Kube.Bind(cmd.Flags())
	cmd.Flags().BoolVar(&o.Cascade, "cascade", true, "prune the Application's objects (false: leave them running)")
	cmd.Flags().BoolVar(&o.Wait, "wait", true, "wait until the Application is gone")
	return cmd
}

// Run deletes the Application, setting its deletion policy first.
func (o *AppDeleteOptions) Run(ctx context.Context, name string) error {
	policy := v1alpha1.DeletionPolicyDelete
	if !o.Cascade {
		policy = v1alpha1.DeletionPolicyOrphan
	}
	c, ns, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	d, err := newActor(ctx, c).Delete(ctx, ns, name, policy)
	if err != nil {
		return err
	}
	warnRecord(o.Streams, d)
	if o.Wait {
		err := poll.Until(ctx, 250*time.Millisecond, 5*time.Minute, func(ctx context.Context) (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &v1alpha1.Application{})
			return client.IgnoreNotFound(err) == nil && err != nil, client.IgnoreNotFound(err)
		})
		if err != nil {
			return err
		}
	}
	fmt.Fprintf(o.ErrOut, "Application %s/%s deleted (%s)\n", ns, name, policy)
	return nil
}
