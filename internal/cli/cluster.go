package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/agent"
	"converge.dev/converge/internal/poll"
)

// NewClusterCommand returns `converge cluster` with add, list and remove.
func NewClusterCommand(streams Streams) *cobra.Command {
	cmd := &cobra.Command{Use: "cluster", Short: "Register the clusters Applications deploy to (spec.destination.cluster)"}
	cmd.AddCommand(newClusterAddCommand(streams), newClusterListCommand(streams), newClusterRemoveCommand(streams))
	return cmd
}

// remoteAccount is what `converge cluster add` makes in the added cluster:
// the ServiceAccount the agent acts as there, its namespace and its token
// Secret.
const (
	remoteNamespace = "converge-system"
	remoteAccount   = "converge-remote"
)

// ClusterAddOptions holds the flags of `converge cluster add`.
type ClusterAddOptions struct {
	Streams
	// Kubeconfig and Context reach the cluster being added.
	Kubeconfig, Context string
	// Management reaches the cluster the agent runs in, where the
	// Cluster and its Secret go.
	Management          KubeFlags
	ControllerNamespace string
	ClusterRole         string
	Server              string
	Labels              []string
	Timeout             time.Duration
}

func newClusterAddCommand(streams Streams) *cobra.Command {
	o := &ClusterAddOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "add NAME --kubeconfig FILE [--context C]",
		Short: "Register a cluster: make converge's ServiceAccount there and a Cluster with its token here",
		Long: `add connects to the cluster a kubeconfig context reaches, makes there the
namespace converge-system, the ServiceAccount converge-remote bound to
--cluster-role and a token for it, and writes, in the cluster the agent runs
in (--management-kubeconfig, --management-context), the Cluster NAME and a
Secret with that token in the agent's namespace. The kubeconfig's own
credentials are used only here, never stored: the agent uses the token.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd.Context(), args[0])
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig reaching the cluster to add (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.Context, "context", "", "its context (default: the current one)")
	f.StringVar(&o.Management.Kubeconfig, "management-kubeconfig", "", "kubeconfig reaching the agent's cluster (default: $KUBECONFIG or ~/.kube/config)")
	f.StringVar(&o.Management.Context, "management-context", "", "its context (default: the current one)")
	f.StringVar(&o.ControllerNamespace, "controller-namespace", agent.DefaultSystemNamespace, "the agent's namespace, where the credentials Secret goes")
	f.StringVar(&o.ClusterRole, "cluster-role", "cluster-admin", "the ClusterRole converge's ServiceAccount gets in the added cluster")
	f.StringVar(&o.Server, "server", "", "the apiserver URL as the agent reaches it (default: the kubeconfig's)")
	f.StringArrayVar(&o.Labels, "label", nil, "label for the Cluster, key=value (repeatable; generators select clusters by them)")
	f.DurationVar(&o.Timeout, "timeout", time.Minute, "how long to wait for the token")
	return cmd
}

// Run registers the cluster.
func (o *ClusterAddOptions) Run(ctx context.Context, name string) error {
	if errs := validation.IsDNS1123Subdomain(name); len(errs) > 0 {
		return fmt.Errorf("cluster name %q: %s", name, strings.Join(errs, "; "))
	}
	labels, err := parseLabels(o.Labels)
	if err != nil {
		return err
	}
	remote, _, err := (&KubeFlags{Kubeconfig: o.Kubeconfig, Context: o.Context}).Config()
	if err != nil {
		return fmt.Errorf("the cluster to add: %w", err)
	}
	server := remote.Host
	if o.Server != "" {
		server = o.Server
	}
	if !strings.HasPrefix(server, "https://") {
		return fmt.Errorf("server %s: converge talks to apiservers over https only", server)
	}
	mgmt, _, err := appClient(&o.Management)
	if err != nil {
		return fmt.Errorf("the agent's cluster: %w", err)
	}
	fmt.Fprintf(o.ErrOut, "Making ServiceAccount %s/%s (ClusterRole %s) in %s\n", remoteNamespace, remoteAccount, o.ClusterRole, server)
	token, ca, err := o.remoteAccount(ctx, remote)
	if err != nil {
		return fmt.Errorf("the cluster to add (%s): %w", server, err)
	}
	if len(ca) == 0 {
		ca, err = caData(remote)
		if err != nil {
			return err
		}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "cluster-" + name, Namespace: o.ControllerNamespace}}
	if _, err := controllerutil.CreateOrUpdate(ctx, mgmt, secret, func() error {
		secret.Labels = map[string]string{"converge.dev/cluster": name}
		secret.Type = corev1.SecretTypeOpaque
		secret.Data = map[string][]byte{"token": token}
		if len(ca) > 0 {
			secret.Data["ca.crt"] = ca
		}
		return nil
	}); err != nil {
		return fmt.Errorf("writing Secret %s/%s: %w", secret.Namespace, secret.Name, err)
	}
	cl := &v1alpha1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}}
	if _, err := controllerutil.CreateOrUpdate(ctx, mgmt, cl, func() error {
		if cl.Labels == nil {
			cl.Labels = map[string]string{}
		}
		for k, v := range labels {
			cl.Labels[k] = v
		}
		cl.Spec = v1alpha1.ClusterSpec{Server: server, CAData: ca, SecretRef: v1alpha1.LocalObjectReference{Name: secret.Name}}
		return nil
	}); err != nil {
		return fmt.Errorf("writing Cluster %s: %w", name, err)
	}
	fmt.Fprintf(o.ErrOut, "Cluster %s added (%s); Applications reach it with spec.destination.cluster: %s\n", name, server, name)
	return nil
}

// remoteAccount makes converge's namespace, ServiceAccount, binding and
// token Secret in the cluster cfg reaches, and returns the token and the
// cluster's CA as the token controller wrote them.
func (o *ClusterAddOptions) remoteAccount(ctx context.Context, cfg *rest.Config) (token, ca []byte, err error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, nil, err
	}
	create := func(what string, err error) error {
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("creating %s: %w", what, err)
		}
		return nil
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: remoteNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); create("namespace "+remoteNamespace, err) != nil {
		return nil, nil, create("namespace "+remoteNamespace, err)
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: remoteAccount, Namespace: remoteNamespace}}
	if _, err := cs.CoreV1().ServiceAccounts(remoteNamespace).Create(ctx, sa, metav1.CreateOptions{}); create("ServiceAccount", err) != nil {
		return nil, nil, create("ServiceAccount", err)
	}
	crb := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: remoteAccount},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: o.ClusterRole},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: remoteAccount, Namespace: remoteNamespace}},
	}
	if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
		if !apierrors.IsAlreadyExists(err) {
			return nil, nil, fmt.Errorf("creating ClusterRoleBinding %s: %w", remoteAccount, err)
		}
		// The role is fixed once bound; a different one is a new binding.
		live, err := cs.RbacV1().ClusterRoleBindings().Get(ctx, remoteAccount, metav1.GetOptions{})
		if err != nil {
			return nil, nil, err
		}
		if live.RoleRef.Name != o.ClusterRole {
			if err := cs.RbacV1().ClusterRoleBindings().Delete(ctx, remoteAccount, metav1.DeleteOptions{}); err != nil {
				return nil, nil, err
			}
			if _, err := cs.RbacV1().ClusterRoleBindings().Create(ctx, crb, metav1.CreateOptions{}); err != nil {
				return nil, nil, err
			}
		}
	}
	tokenSecret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: remoteAccount + "-token", Namespace: remoteNamespace,
			Annotations: map[string]string{corev1.ServiceAccountNameKey: remoteAccount}},
		Type: corev1.SecretTypeServiceAccountToken,
	}
	if _, err := cs.CoreV1().Secrets(remoteNamespace).Create(ctx, tokenSecret, metav1.CreateOptions{}); create("token Secret", err) != nil {
		return nil, nil, create("token Secret", err)
	}
	// The cluster's token controller fills the Secret in.
	err = poll.Until(ctx, 200*time.Millisecond, o.Timeout, func(ctx context.Context) (bool, error) {
		s, err := cs.CoreV1().Secrets(remoteNamespace).Get(ctx, tokenSecret.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		token, ca = s.Data[corev1.ServiceAccountTokenKey], s.Data[corev1.ServiceAccountRootCAKey]
		return len(token) > 0, nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("waiting for the token of ServiceAccount %s/%s (does the cluster run the token controller?): %w", remoteNamespace, remoteAccount, err)
	}
	return token, ca, nil
}

// caData is the CA the kubeconfig trusts for cfg's server, if any.
func caData(cfg *rest.Config) ([]byte, error) {
	if len(cfg.CAData) > 0 {
		return cfg.CAData, nil
	}
	if cfg.CAFile != "" {
		return os.ReadFile(cfg.CAFile)
	}
	return nil, nil
}

func parseLabels(kvs []string) (map[string]string, error) {
	out := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("--label %q: want key=value", kv)
		}
		if errs := validation.IsQualifiedName(k); len(errs) > 0 {
			return nil, fmt.Errorf("--label %q: %s", kv, strings.Join(errs, "; "))
		}
		if errs := validation.IsValidLabelValue(v); len(errs) > 0 {
			return nil, fmt.Errorf("--label %q: %s", kv, strings.Join(errs, "; "))
		}
		out[k] = v
	}
	return out, nil
}

// ClusterListOptions holds the flags of `converge cluster list`.
type ClusterListOptions struct {
	Streams
	Kube   KubeFlags
	Output OutputFormat
}

func newClusterListCommand(streams Streams) *cobra.Command {
	o := &ClusterListOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List Clusters: reachability, version and Applications, as the agent last saw them",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd.Context())
		},
	}
	o.Kube.Bind(cmd.Flags())
	bindOutput(cmd, &o.Output)
	return cmd
}

// ClusterSummary is one row of `converge cluster list`.
type ClusterSummary struct {
	Name         string            `json:"name"`
	Server       string            `json:"server"`
	Labels       map[string]string `json:"labels,omitempty"`
	Reachable    string            `json:"reachable"`
	Reason       string            `json:"reason,omitempty"`
	Message      string            `json:"message,omitempty"`
	Version      string            `json:"version,omitempty"`
	Applications int32             `json:"applications"`
	Age          string            `json:"age"`
}

// Run lists the Clusters.
func (o *ClusterListOptions) Run(ctx context.Context) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	c, _, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	var list v1alpha1.ClusterList
	if err := c.List(ctx, &list); err != nil {
		if apimeta.IsNoMatchError(err) {
			return errors.New("this cluster has no Cluster CRD: run converge install --crds-only (or converge install)")
		}
		return err
	}
	sort.Slice(list.Items, func(i, j int) bool { return list.Items[i].Name < list.Items[j].Name })
	rows := make([]ClusterSummary, 0, len(list.Items))
	for _, cl := range list.Items {
		row := ClusterSummary{Name: cl.Name, Server: cl.Spec.Server, Labels: cl.Labels, Reachable: "Unknown", Version: cl.Status.Version,
			Applications: cl.Status.Applications, Age: time.Since(cl.CreationTimestamp.Time).Round(time.Second).String()}
		if ready := apimeta.FindStatusCondition(cl.Status.Conditions, v1alpha1.ConditionReady); ready != nil {
			row.Reachable, row.Reason, row.Message = string(ready.Status), ready.Reason, ready.Message
		}
		rows = append(rows, row)
	}
	if o.Output != OutputText {
		return printObject(o.Out, o.Output, rows)
	}
	if len(rows) == 0 {
		fmt.Fprintln(o.ErrOut, "No Clusters: add one with converge cluster add NAME --kubeconfig FILE")
		return nil
	}
	tw := tabwriter.NewWriter(o.Out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSERVER\tREACHABLE\tVERSION\tAPPS\tAGE\tMESSAGE")
	for _, r := range rows {
		msg := ""
		if r.Reachable != "True" {
			msg = r.Message
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\t%s\n", r.Name, r.Server, r.Reachable, orDash(r.Version), r.Applications, r.Age, msg)
	}
	return tw.Flush()
}

// ClusterRemoveOptions holds the flags of `converge cluster remove`.
type ClusterRemoveOptions struct {
	Streams
	Kube                KubeFlags
	ControllerNamespace string
	Force               bool
}

func newClusterRemoveCommand(streams Streams) *cobra.Command {
	o := &ClusterRemoveOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a Cluster and its credentials Secret (refused while Applications go to it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return o.Run(cmd.Context(), args[0])
		},
	}
	o.Kube.Bind(cmd.Flags())
	cmd.Flags().StringVar(&o.ControllerNamespace, "controller-namespace", agent.DefaultSystemNamespace, "the agent's namespace, where the credentials Secret is")
	cmd.Flags().BoolVar(&o.Force, "force", false, "remove it even though Applications go to it (their objects there are left)")
	return cmd
}

// Run removes the Cluster.
func (o *ClusterRemoveOptions) Run(ctx context.Context, name string) error {
	c, _, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	cl := &v1alpha1.Cluster{}
	if err := c.Get(ctx, client.ObjectKey{Name: name}, cl); err != nil {
		return err
	}
	if !o.Force {
		var apps v1alpha1.ApplicationList
		if err := c.List(ctx, &apps); err != nil {
			return err
		}
		var users []string
		for _, a := range apps.Items {
			if a.Spec.Destination.Cluster == name {
				users = append(users, a.Namespace+"/"+a.Name)
			}
		}
		if len(users) > 0 {
			return fmt.Errorf("Applications deploy to Cluster %s: %s; delete them first (their objects are pruned there) or pass --force", name, strings.Join(users, ", "))
		}
	}
	if err := c.Delete(ctx, cl); err != nil {
		return err
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: cl.Spec.SecretRef.Name, Namespace: o.ControllerNamespace}}
	if err := client.IgnoreNotFound(c.Delete(ctx, secret)); err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "Cluster %s removed; its ServiceAccount %s/%s there is left (delete it with the cluster's own credentials)\n", name, remoteNamespace, remoteAccount)
	return nil
}
