package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/internal/seal"
)

// KeysOptions holds the flags of `converge keys`.
type KeysOptions struct {
	Streams
	Kube                KubeFlags
	ControllerNamespace string
	// FromSealedSecrets imports a sealed-secrets controller's keys;
	// SealedSecretsNamespace is where it keeps them.
	FromSealedSecrets      bool
	SealedSecretsNamespace string
}

// bitnamiKeyLabel marks a sealed-secrets controller's key Secrets, with
// the value "active" for those it uses.
const bitnamiKeyLabel = "sealedsecrets.bitnami.com/sealed-secrets-key"

// NewKeysCommand returns `converge keys export|import`.
func NewKeysCommand(streams Streams) *cobra.Command {
	o := &KeysOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "keys",
		Short: "Back up and restore the cluster's sealing keys (disaster recovery)",
	}
	export := &cobra.Command{
		Use:   "export",
		Short: "Print every sealing key pair (PRIVATE keys) as a YAML list of Secrets",
		Long: `Print the agent's sealing key pairs as a YAML list of Secrets, to keep
somewhere safe (they open every SealedSecret of this cluster). Restore them
with 'converge keys import FILE' into a new cluster, and existing
SealedSecrets open there.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.Export(cmd.Context()) },
	}
	imp := &cobra.Command{
		Use:   "import FILE | --from-sealed-secrets [FILE]",
		Short: "Restore sealing key pairs exported with 'converge keys export', or take over a sealed-secrets controller's keys",
		Long: `Restore sealing key pairs exported with 'converge keys export' (FILE, or - for
stdin).

With --from-sealed-secrets, import the keys of Bitnami's sealed-secrets
controller (its Secrets labelled sealedsecrets.bitnami.com/sealed-secrets-key
in --sealed-secrets-namespace, rotated ones included), or of a backup of
them (FILE, as 'kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key
-o yaml' writes it). The agent then opens the bitnami.com SealedSecrets
sealed with them; stop the sealed-secrets controller first.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := ""
			if len(args) == 1 {
				file = args[0]
			}
			if file == "" && !o.FromSealedSecrets {
				return fmt.Errorf("name the FILE to import (- for stdin), or use --from-sealed-secrets")
			}
			return o.Import(cmd.Context(), file)
		},
	}
	imp.Flags().BoolVar(&o.FromSealedSecrets, "from-sealed-secrets", false, "import Bitnami sealed-secrets keys: from the cluster, or from FILE")
	imp.Flags().StringVar(&o.SealedSecretsNamespace, "sealed-secrets-namespace", "kube-system", "with --from-sealed-secrets and no FILE: where the sealed-secrets controller keeps its keys")
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new sealing key now; new seals use it, every older key still opens",
		Args:  cobra.NoArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return o.Rotate(cmd.Context()) },
	}
	for _, c := range []*cobra.Command{export, imp, rotate} {
		o.Kube.Bind(c.Flags())
		c.Flags().StringVar(&o.ControllerNamespace, "controller-namespace", DefaultSystemNamespace, "the agent's namespace")
	}
	cmd.AddCommand(export, imp, rotate)
	return cmd
}

// Export prints the key Secrets.
func (o *KeysOptions) Export(ctx context.Context) error {
	c, _, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	store := &seal.Store{Client: c, Namespace: o.ControllerNamespace}
	ring, err := store.Load(ctx)
	if err != nil {
		return err
	}
	if ring.Len() == 0 {
		return fmt.Errorf("no sealing keys in namespace %s", o.ControllerNamespace)
	}
	items := []any{}
	for _, k := range ring.All() {
		s, err := seal.KeySecret(k, "")
		if err != nil {
			return err
		}
		s.Namespace = ""
		items = append(items, s)
	}
	data, err := yaml.Marshal(map[string]any{"apiVersion": "v1", "kind": "List", "items": items})
	if err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "Exported %d sealing key(s): this output holds PRIVATE keys; store it like the cluster's root credentials\n", ring.Len())
	_, err = o.Out.Write(data)
	return err
}

// Import creates the key Secrets in the agent's namespace.
func (o *KeysOptions) Import(ctx context.Context, file string) error {
	c, _, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	var secrets []*corev1.Secret
	if file != "" {
		if secrets, err = o.readKeySecrets(file); err != nil {
			return err
		}
	} else {
		var list corev1.SecretList
		if err := c.List(ctx, &list, client.InNamespace(o.SealedSecretsNamespace), client.HasLabels{bitnamiKeyLabel}); err != nil {
			return fmt.Errorf("listing the sealed-secrets controller's keys in %s: %w", o.SealedSecretsNamespace, err)
		}
		for i := range list.Items {
			secrets = append(secrets, &list.Items[i])
		}
		file = "namespace " + o.SealedSecretsNamespace
	}
	if o.FromSealedSecrets {
		if secrets = o.activeBitnamiKeys(secrets); len(secrets) == 0 {
			return fmt.Errorf("%s: no active sealed-secrets key (Secrets labelled %s=active)", file, bitnamiKeyLabel)
		}
	}
	// A fresh cluster may not have the agent's namespace yet.
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.ControllerNamespace}}
	if err := c.Create(ctx, ns); err == nil {
		fmt.Fprintf(o.ErrOut, "created namespace %s\n", o.ControllerNamespace)
	} else if !apierrors.IsAlreadyExists(err) && !apierrors.IsForbidden(err) {
		return err
	}
	created := 0
	for _, s := range secrets {
		k, err := seal.KeyFromSecret(s)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		out, err := seal.KeySecret(k, o.ControllerNamespace)
		if err != nil {
			return err
		}
		if err := c.Create(ctx, out); apierrors.IsAlreadyExists(err) {
			fmt.Fprintf(o.ErrOut, "key %s already present\n", k.ID)
			continue
		} else if err != nil {
			return fmt.Errorf("importing key %s: %w", k.ID, err)
		}
		created++
		fmt.Fprintf(o.ErrOut, "imported key %s (made %s)\n", k.ID, k.Created.Format("2006-01-02"))
	}
	fmt.Fprintf(o.ErrOut, "Imported %d of %d key(s) into %s\n", created, len(secrets), o.ControllerNamespace)
	return nil
}

// readKeySecrets reads key Secrets from file (- for stdin).
func (o *KeysOptions) readKeySecrets(file string) ([]*corev1.Secret, error) {
	data, err := readFileOrStdin(o.In, file, 16<<20)
	if err != nil {
		return nil, err
	}
	secrets, err := keySecrets(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return secrets, nil
}

// activeBitnamiKeys are the sealed-secrets controller's active keys among
// secrets; the others are named on stderr.
func (o *KeysOptions) activeBitnamiKeys(secrets []*corev1.Secret) []*corev1.Secret {
	var out []*corev1.Secret
	for _, s := range secrets {
		switch v := s.Labels[bitnamiKeyLabel]; v {
		case "active":
			out = append(out, s)
		case "":
			fmt.Fprintf(o.ErrOut, "skipped Secret %s: not labelled %s\n", s.Name, bitnamiKeyLabel)
		default:
			fmt.Fprintf(o.ErrOut, "skipped Secret %s: labelled %s=%s, which the sealed-secrets controller does not use either\n", s.Name, bitnamiKeyLabel, v)
		}
	}
	return out
}

// keySecrets reads Secrets from a List or a stream of documents.
func keySecrets(data []byte) ([]*corev1.Secret, error) {
	var out []*corev1.Secret
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for {
		var doc struct {
			metav1.TypeMeta `json:",inline"`
			Items           []corev1.Secret `json:"items"`
			corev1.Secret   `json:",inline"`
		}
		if err := dec.Decode(&doc); err == io.EOF {
			break
		} else if err != nil {
			return nil, fmt.Errorf("not a list of Secrets: %v", err)
		}
		switch doc.TypeMeta.Kind {
		case "List", "SecretList":
			for i := range doc.Items {
				out = append(out, &doc.Items[i])
			}
		case "Secret":
			s := doc.Secret
			out = append(out, &s)
		case "":
			continue
		default:
			return nil, fmt.Errorf("unexpected %s: expected Secrets exported by 'converge keys export'", doc.TypeMeta.Kind)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no Secrets found")
	}
	for _, s := range out {
		if s.Labels[seal.LabelSealingKey] != "true" {
			return nil, fmt.Errorf("Secret %s is not a sealing key (no %s=true label)", s.Name, seal.LabelSealingKey)
		}
	}
	return out, nil
}

// Rotate makes a new key and publishes its certificate, as the agent does
// on schedule.
func (o *KeysOptions) Rotate(ctx context.Context) error {
	c, _, err := appClient(&o.Kube)
	if err != nil {
		return err
	}
	store := &seal.Store{Client: c, Namespace: o.ControllerNamespace}
	fmt.Fprintln(o.ErrOut, "Generating a new sealing key...")
	ring, err := store.Rotate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(o.ErrOut, "New sealing key %s; %d key(s) kept\n", ring.Newest().ID, ring.Len())
	return nil
}
