package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/version"
)

// InstallApp is the app that installs converge: `converge install --apply`
// records it, and `converge bootstrap` makes it an Application that the
// agent syncs from Git, itself included.
const InstallApp = "converge-install"

// BootstrapOptions holds the flags of `converge bootstrap git`.
type BootstrapOptions struct {
	Install InstallOptions
	URL     string
	Branch  string
	// Path is the cluster's directory; the agent's manifests go in its
	// converge-system directory.
	Path     string
	Interval time.Duration
	Insecure bool
	// Credentials: HTTPS (username, a password or token file) or SSH (a
	// private key file and known_hosts).
	Username, PasswordFile, SSHKeyFile, KnownHostsFile string
	// Signing: a key, "ssh" (a private key file) or "openpgp" (gpg's key
	// ID).
	SigningKey, SigningFormat string
	Author, AuthorEmail       string
}

// NewBootstrapCommand returns `converge bootstrap`.
func NewBootstrapCommand(streams Streams) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Commit converge's own manifests to Git and let the agent manage itself from there",
	}
	cmd.AddCommand(newBootstrapGitCommand(streams))
	return cmd
}

func newBootstrapGitCommand(streams Streams) *cobra.Command {
	o := &BootstrapOptions{Install: InstallOptions{Streams: streams}}
	cmd := &cobra.Command{
		Use:   "git --url URL --path clusters/NAME",
		Short: "Commit the CRDs, the agent and an Application for them to PATH/converge-system, and install them once",
		Long: `Commits converge's CRDs (crds.yaml), the agent's manifests (agent.yaml) and
the Application that syncs that directory (application.yaml, named
converge-install, in the agent's namespace) to PATH/converge-system on the
branch, signed when a signing key is given. The first time (no
converge-install Application in the cluster yet), it also applies them,
with the Git credentials as a Secret the Application names; from then on
the agent syncs its own manifests from Git. Upgrading is a commit: run
bootstrap again with a newer converge (or --image), or edit the files;
CRDs are applied before the agent's Deployment. A bad upgrade shows on the
converge-install Application, and converge rollback converge-install
brings the previous version back. Prints the commit.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.Run(cmd) },
	}
	f := cmd.Flags()
	f.StringVar(&o.Install.Kube.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file")
	f.StringVar(&o.Install.Kube.Context, "context", "", "kubeconfig context to use")
	f.StringVar(&o.Install.Image, "image", "ghcr.io/converge-dev/converge:"+version.Get().Version, "agent image")
	f.StringVar(&o.Install.Namespace, "agent-namespace", "converge-system", "namespace of the agent")
	f.StringVar(&o.Install.Profile, "profile", ProfileSingleTenant, "single-tenant or multi-tenant (see converge install)")
	f.StringVar(&o.URL, "url", "", "the repository (https://, ssh:// or user@host:path)")
	f.StringVar(&o.Branch, "branch", "main", "the branch")
	f.StringVar(&o.Path, "path", "", "the cluster's directory in the repository, e.g. clusters/prod")
	f.DurationVar(&o.Interval, "interval", time.Minute, "how often the agent looks at the branch")
	f.BoolVar(&o.Insecure, "insecure", false, "allow credentials over plain http://")
	f.StringVar(&o.Username, "username", "", "HTTPS username")
	f.StringVar(&o.PasswordFile, "password-file", "", "file holding the HTTPS password or token")
	f.StringVar(&o.SSHKeyFile, "ssh-key-file", "", "SSH private key file")
	f.StringVar(&o.KnownHostsFile, "known-hosts-file", "", "known_hosts file for SSH (required with SSH)")
	f.StringVar(&o.SigningKey, "signing-key", "", "sign the commit with this key: an SSH private key file, or gpg's key ID")
	f.StringVar(&o.SigningFormat, "signing-format", "ssh", "ssh or openpgp")
	f.StringVar(&o.Author, "author", "converge bootstrap", "the commit's author")
	f.StringVar(&o.AuthorEmail, "author-email", "bootstrap@converge.dev", "the commit author's email")
	return cmd
}

// Run commits the manifests and installs them the first time.
func (o *BootstrapOptions) Run(cmd *cobra.Command) error {
	ctx := cmd.Context()
	errOut := o.Install.ErrOut
	if o.URL == "" || o.Path == "" {
		return errors.New("--url and --path are required")
	}
	dir := path.Join(strings.Trim(path.Clean("/"+o.Path), "/"), "converge-system")
	auth, err := o.auth()
	if err != nil {
		return err
	}
	objs, err := o.Install.Manifests()
	if err != nil {
		return err
	}
	app := o.application(dir, auth != nil)
	files, err := bootstrapFiles(objs, app)
	if err != nil {
		return err
	}
	cacheDir, err := os.MkdirTemp("", "converge-bootstrap-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(cacheDir)
	cache, err := source.NewCache(cacheDir)
	if err != nil {
		return err
	}
	req := source.WriteRequest{URL: o.URL, Auth: auth, Branch: o.Branch, Dir: dir, Files: files, Insecure: o.Insecure,
		Message: fmt.Sprintf("converge bootstrap: converge %s in %s\n\nImage %s, profile %s, agent namespace %s.\n", version.Get().Version, dir, o.Install.Image, o.Install.Profile, o.Install.Namespace),
		Author:  o.Author, AuthorEmail: o.AuthorEmail}
	if o.SigningKey != "" {
		req.Sign = &source.Signing{Format: o.SigningFormat, Key: o.SigningKey, GNUPGHome: os.Getenv("GNUPGHOME")}
	}
	fmt.Fprintf(errOut, "Committing %d files to %s on %s of %s\n", len(files), dir, o.Branch, o.URL)
	written, err := cache.Write(ctx, req)
	switch {
	case errors.Is(err, source.ErrUnchanged):
		fmt.Fprintf(errOut, "%s already holds these manifests (%s)\n", o.Branch, source.ShortRevision(written.Commit))
	case err != nil:
		return err
	default:
		fmt.Fprintf(errOut, "Pushed %s\n", source.ShortRevision(written.Commit))
	}

	cfg, _, err := o.Install.Kube.Config()
	if err != nil {
		return err
	}
	m, err := engine.New(cfg, engine.DefaultOptions())
	if err != nil {
		return err
	}
	c := m.Client()
	existing := &unstructured.Unstructured{}
	existing.SetGroupVersionKind(v1alpha1.GroupVersion.WithKind("Application"))
	err = c.Get(ctx, client.ObjectKey{Namespace: o.Install.Namespace, Name: InstallApp}, existing)
	switch {
	case err == nil:
		fmt.Fprintf(errOut, "Application %s/%s exists: the agent syncs %s from Git\n", o.Install.Namespace, InstallApp, source.ShortRevision(written.Commit))
		fmt.Fprintln(o.Install.Out, written.Commit)
		return nil
	case !apierrors.IsNotFound(err) && !isNoKind(err):
		return err
	}
	// The first time: what the agent would sync, synced once from here.
	all := append(objs, render.Object{Unstructured: app, Source: dir + "/application.yaml"})
	cs, err := m.Sync(ctx, all, engine.SyncOptions{PlanOptions: engine.PlanOptions{
		App: engine.App{Name: InstallApp, Namespace: o.Install.Namespace}, DefaultNamespace: o.Install.Namespace, Prune: true, Revision: written.Commit}})
	if cs != nil {
		printChanges(errOut, cs, "Bootstrap")
	}
	if err != nil {
		return err
	}
	if auth != nil {
		if err := o.applyCredentials(cmd, c, auth); err != nil {
			return err
		}
	}
	fmt.Fprintf(errOut, "Installed; the agent in %s syncs %s from now on\n", o.Install.Namespace, dir)
	fmt.Fprintln(o.Install.Out, written.Commit)
	return nil
}

// credentialsSecret is the Secret the Application reads its Git
// credentials from; it never goes to Git.
const credentialsSecret = "converge-install-git"

func (o *BootstrapOptions) auth() (*source.Auth, error) {
	var a source.Auth
	if o.PasswordFile != "" {
		data, err := os.ReadFile(o.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("--password-file: %w", err)
		}
		a.Username, a.Password = o.Username, strings.TrimSpace(string(data))
		if a.Username == "" {
			a.Username = "git"
		}
	}
	if o.SSHKeyFile != "" {
		data, err := os.ReadFile(o.SSHKeyFile)
		if err != nil {
			return nil, fmt.Errorf("--ssh-key-file: %w", err)
		}
		a.Identity = data
	}
	if o.KnownHostsFile != "" {
		data, err := os.ReadFile(o.KnownHostsFile)
		if err != nil {
			return nil, fmt.Errorf("--known-hosts-file: %w", err)
		}
		a.KnownHosts = data
	}
	if a.Password == "" && len(a.Identity) == 0 && len(a.KnownHosts) == 0 {
		return nil, nil
	}
	return &a, nil
}

// applyCredentials writes the credentials Secret (created or replaced).
func (o *BootstrapOptions) applyCredentials(cmd *cobra.Command, c client.Client, a *source.Auth) error {
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: credentialsSecret, Namespace: o.Install.Namespace}, Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{}}
	for k, v := range map[string][]byte{"username": []byte(a.Username), "password": []byte(a.Password), "identity": a.Identity, "known_hosts": a.KnownHosts} {
		if len(v) > 0 {
			s.Data[k] = v
		}
	}
	err := c.Create(cmd.Context(), s)
	if apierrors.IsAlreadyExists(err) {
		err = c.Update(cmd.Context(), s)
	}
	if err != nil {
		return fmt.Errorf("writing the Git credentials Secret %s/%s: %w", o.Install.Namespace, credentialsSecret, err)
	}
	return nil
}

// application is the Application that syncs dir: the agent's own.
func (o *BootstrapOptions) application(dir string, credentials bool) *unstructured.Unstructured {
	app := &v1alpha1.Application{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Application"},
		ObjectMeta: metav1.ObjectMeta{Name: InstallApp, Namespace: o.Install.Namespace},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: o.URL, Path: dir, Ref: &v1alpha1.GitRef{Branch: o.Branch}, Insecure: o.Insecure},
			SyncPolicy: v1alpha1.SyncPolicy{
				Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true},
				Interval:  &metav1.Duration{Duration: o.Interval},
			},
		},
	}
	if credentials {
		app.Spec.Source.SecretRef = &v1alpha1.LocalObjectReference{Name: credentialsSecret}
	}
	obj, _ := runtime.DefaultUnstructuredConverter.ToUnstructured(app)
	unstructured.RemoveNestedField(obj, "status")
	unstructured.RemoveNestedField(obj, "metadata", "creationTimestamp")
	return &unstructured.Unstructured{Object: obj}
}

// bootstrapFiles are the directory's files: the CRDs, the agent, the
// Application.
func bootstrapFiles(objs []render.Object, app *unstructured.Unstructured) (map[string][]byte, error) {
	var crds, agent bytes.Buffer
	for _, o := range objs {
		buf := &agent
		if o.GetKind() == "CustomResourceDefinition" {
			buf = &crds
		}
		if err := writeDoc(buf, o.Object); err != nil {
			return nil, err
		}
	}
	var application bytes.Buffer
	if err := writeDoc(&application, app.Object); err != nil {
		return nil, err
	}
	header := "# Written by converge bootstrap " + version.Get().Version + "; upgrades are commits (run bootstrap again, or edit).\n"
	return map[string][]byte{
		"crds.yaml":        append([]byte(header), crds.Bytes()...),
		"agent.yaml":       append([]byte(header), agent.Bytes()...),
		"application.yaml": append([]byte(header), application.Bytes()...),
	}, nil
}

func writeDoc(buf *bytes.Buffer, obj map[string]any) error {
	data, err := yaml.Marshal(obj)
	if err != nil {
		return err
	}
	buf.WriteString("---\n")
	buf.Write(data)
	return nil
}

// isNoKind reports an error saying the cluster does not serve a kind (no
// CRDs yet).
func isNoKind(err error) bool {
	return err != nil && (apimeta.IsNoMatchError(err) || strings.Contains(err.Error(), "no matches for"))
}
