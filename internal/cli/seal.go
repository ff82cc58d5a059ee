package cli

import (
	"bytes"
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/seal"
	"converge.dev/converge/internal/server"
)

// SealOptions holds the flags of `converge seal`.
type SealOptions struct {
	Streams
	Kube                KubeFlags
	Scope               string
	CertFile            string
	FetchCert           bool
	MergeInto           string
	Raw                 bool
	Name                string
	ReEncrypt           bool
	ControllerNamespace string
	ControllerURL       string
	// Format is converge's SealedSecret or Bitnami's (kubeseal's).
	Format string
	Output OutputFormat
}

// NewSealCommand returns `converge seal`.
func NewSealCommand(streams Streams) *cobra.Command {
	o := &SealOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "seal [FILE]",
		Short: "Encrypt a Secret into a SealedSecret that only the cluster can open",
		Long: `Read a Secret manifest (FILE or stdin; YAML or JSON) and write a SealedSecret
to stdout: each value sealed with the cluster's public certificate
(RSA-OAEP-4096 wrapping an AES-256-GCM key), bound to --scope:

  strict     (default) only this namespace and name can open it
  namespace  any name in this namespace
  cluster    any namespace and name

The certificate comes from --cert FILE (offline), --controller-url, or the
cluster (ConfigMap converge-sealing-cert in --controller-namespace).

  converge seal --fetch-cert > cert.pem              save the certificate
  converge seal --cert cert.pem < secret.yaml > sealed.yaml
  converge seal --merge-into sealed.yaml < one-key.yaml  add or replace keys in place
  echo -n s3cret | converge seal --raw --name db --namespace shop   one value
  converge seal --re-encrypt < sealed.yaml > new.yaml    move to the newest key,
                                                         in the cluster

The plaintext is never written anywhere.`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			file := "-"
			if len(args) == 1 {
				file = args[0]
			}
			return o.Run(cmd.Context(), file)
		},
	}
	o.Kube.Bind(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.Scope, "scope", "", "strict (default), namespace or cluster")
	f.StringVar(&o.CertFile, "cert", "", "seal with this certificate (PEM) instead of fetching it")
	f.BoolVar(&o.FetchCert, "fetch-cert", false, "print the cluster's current sealing certificate and exit")
	f.StringVar(&o.MergeInto, "merge-into", "", "add or replace the input's keys in this SealedSecret file, in place")
	f.BoolVar(&o.Raw, "raw", false, "seal one value read from the input; needs --name (strict) and --namespace (strict, namespace)")
	f.StringVar(&o.Name, "name", "", "with --raw: the Secret's name")
	f.BoolVar(&o.ReEncrypt, "re-encrypt", false, "read a SealedSecret and have the agent seal its values with the newest key")
	f.StringVar(&o.ControllerNamespace, "controller-namespace", DefaultSystemNamespace, "the agent's namespace")
	f.StringVar(&o.ControllerURL, "controller-url", "", "the agent's HTTP address (default: through the apiserver's service proxy)")
	f.StringVar(&o.Format, "format", "converge", "converge (a converge.dev SealedSecret), or bitnami (a bitnami.com SealedSecret, which a sealed-secrets controller holding the key opens too; pair with --cert of its certificate)")
	bindOutput(cmd, &o.Output)
	return cmd
}

// Run seals.
func (o *SealOptions) Run(ctx context.Context, file string) error {
	if err := o.Output.validate(); err != nil {
		return err
	}
	switch {
	case o.Format != "converge" && o.Format != "bitnami":
		return fmt.Errorf("--format %q: use converge or bitnami", o.Format)
	case o.Format == "bitnami" && (o.Raw || o.MergeInto != "" || o.ReEncrypt):
		return fmt.Errorf("--format bitnami seals a whole Secret; --raw, --merge-into and --re-encrypt write converge's format only")
	}
	if o.FetchCert {
		pemData, err := o.fetchCert(ctx)
		if err != nil {
			return err
		}
		_, err = o.Out.Write(pemData)
		return err
	}
	input, err := o.readInput(file)
	if err != nil {
		return err
	}
	if o.ReEncrypt {
		return o.reEncrypt(ctx, input)
	}
	pub, err := o.publicKey(ctx)
	if err != nil {
		return err
	}
	if o.Raw {
		return o.sealRaw(pub, input)
	}
	secret, err := parseSecret(input)
	if err != nil {
		return fmt.Errorf("%s: %w", inputName(file), err)
	}
	values := secretValues(secret)
	defer func() {
		for _, v := range values {
			clear(v)
		}
	}()
	if o.MergeInto != "" {
		return o.merge(pub, secret, values)
	}
	scope, err := seal.ParseScope(o.Scope)
	if err != nil {
		return err
	}
	ns := secret.Namespace
	if ns == "" {
		ns = o.Kube.Namespace
	}
	if ns == "" && scope != seal.ClusterWide {
		// As kubectl would place it: the kubeconfig context's namespace.
		if _, ctxNS, err := o.Kube.Config(); err == nil {
			ns = ctxNS
			fmt.Fprintf(o.ErrOut, "The Secret names no namespace: sealing for namespace %s (the context's)\n", ns)
		}
	}
	if ns == "" && scope != seal.ClusterWide {
		return fmt.Errorf("%s: the Secret names no namespace; give --namespace (a %s-scope seal is bound to it)", inputName(file), scope)
	}
	ss := &v1alpha1.SealedSecret{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "SealedSecret"},
		ObjectMeta: metav1.ObjectMeta{Name: secret.Name, Namespace: ns},
		Spec: v1alpha1.SealedSecretSpec{
			Scope:         string(scope),
			EncryptedData: map[string]string{},
			Template: v1alpha1.SecretTemplate{Type: string(secret.Type),
				Metadata: v1alpha1.TemplateMetadata{Labels: secret.Labels, Annotations: templateAnnotations(secret.Annotations)}},
		},
	}
	if o.Format == "bitnami" {
		return o.printBitnami(pub, ss, values)
	}
	if err := sealInto(pub, ss, values); err != nil {
		return err
	}
	return o.print(ss)
}

// printBitnami writes ss as Bitnami's SealedSecret, as kubeseal does: the
// values in its format, the scope as its annotations, the template as
// the Secret's metadata and type.
func (o *SealOptions) printBitnami(pub *rsa.PublicKey, ss *v1alpha1.SealedSecret, values map[string][]byte) error {
	scope := seal.Scope(ss.Spec.Scope)
	encrypted := map[string]any{}
	for k, v := range values {
		env, err := seal.SealBitnami(nil, pub, scope, ss.Namespace, ss.Name, v)
		if err != nil {
			return fmt.Errorf("sealing %s: %w", k, err)
		}
		encrypted[k] = base64.StdEncoding.EncodeToString(env)
	}
	annotations := map[string]any{}
	switch scope {
	case seal.NamespaceWide:
		annotations["sealedsecrets.bitnami.com/namespace-wide"] = "true"
	case seal.ClusterWide:
		annotations["sealedsecrets.bitnami.com/cluster-wide"] = "true"
	}
	meta := map[string]any{"name": ss.Name}
	if ss.Namespace != "" {
		meta["namespace"] = ss.Namespace
	}
	if len(annotations) > 0 {
		meta["annotations"] = annotations
	}
	tmplMeta := map[string]any{"name": ss.Name}
	if ss.Namespace != "" {
		tmplMeta["namespace"] = ss.Namespace
	}
	if l := ss.Spec.Template.Metadata.Labels; len(l) > 0 {
		tmplMeta["labels"] = l
	}
	if a := ss.Spec.Template.Metadata.Annotations; len(a) > 0 {
		tmplMeta["annotations"] = a
	}
	tmpl := map[string]any{"metadata": tmplMeta}
	if t := ss.Spec.Template.Type; t != "" {
		tmpl["type"] = t
	}
	obj := map[string]any{"apiVersion": "bitnami.com/v1alpha1", "kind": "SealedSecret", "metadata": meta,
		"spec": map[string]any{"encryptedData": encrypted, "template": tmpl}}
	format := OutputYAML
	if o.Output == OutputJSON {
		format = OutputJSON
	}
	return printObject(o.Out, format, obj)
}

// readFileOrStdin reads file ("-": in), at most limit bytes.
func readFileOrStdin(in io.Reader, file string, limit int64) ([]byte, error) {
	r := in
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	return io.ReadAll(io.LimitReader(r, limit))
}

func inputName(file string) string {
	if file == "-" {
		return "stdin"
	}
	return file
}

func (o *SealOptions) readInput(file string) ([]byte, error) {
	data, err := readFileOrStdin(o.In, file, 4<<20)
	if err != nil {
		return nil, err
	}
	if len(bytes.TrimSpace(data)) == 0 && !o.Raw {
		return nil, fmt.Errorf("%s is empty: expected a Secret manifest", inputName(file))
	}
	return data, nil
}

func parseSecret(data []byte) (*corev1.Secret, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(data, &tm); err != nil {
		return nil, fmt.Errorf("not YAML or JSON: %v", err)
	}
	if tm.Kind != "Secret" || tm.APIVersion != "v1" {
		return nil, fmt.Errorf("expected a v1 Secret, got %s %s", orDash(tm.APIVersion), orDash(tm.Kind))
	}
	var s corev1.Secret
	if err := yaml.UnmarshalStrict(data, &s); err != nil {
		// Errors from decoding may quote values: say only where.
		return nil, fmt.Errorf("invalid Secret (check data values are base64 and fields are known): %s", redactDecodeError(err))
	}
	if s.Name == "" {
		return nil, fmt.Errorf("the Secret has no metadata.name")
	}
	return &s, nil
}

// redactDecodeError keeps the field path of a decoding error, not the value.
func redactDecodeError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "illegal base64"); i >= 0 {
		return "a data value is not valid base64"
	}
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if strings.Contains(msg, "unknown field") {
		return msg
	}
	return "malformed manifest"
}

func secretValues(s *corev1.Secret) map[string][]byte {
	values := map[string][]byte{}
	for k, v := range s.Data {
		values[k] = v
	}
	for k, v := range s.StringData {
		values[k] = []byte(v)
	}
	return values
}

func templateAnnotations(a map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range a {
		if k == corev1.LastAppliedConfigAnnotation {
			continue
		}
		out[k] = v
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func sealInto(pub *rsa.PublicKey, ss *v1alpha1.SealedSecret, values map[string][]byte) error {
	scope, err := seal.ParseScope(ss.Spec.Scope)
	if err != nil {
		return err
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		env, err := seal.Seal(nil, pub, scope, ss.Namespace, ss.Name, values[k])
		if err != nil {
			return fmt.Errorf("sealing %s: %w", k, err)
		}
		ss.Spec.EncryptedData[k] = base64.StdEncoding.EncodeToString(env)
	}
	return nil
}

func (o *SealOptions) sealRaw(pub *rsa.PublicKey, value []byte) error {
	defer clear(value)
	scope, err := seal.ParseScope(o.Scope)
	if err != nil {
		return err
	}
	ns := o.Kube.Namespace
	if scope != seal.ClusterWide && ns == "" {
		return fmt.Errorf("--raw with %s scope needs --namespace", scope)
	}
	if scope == seal.Strict && o.Name == "" {
		return fmt.Errorf("--raw with strict scope needs --name")
	}
	env, err := seal.Seal(nil, pub, scope, ns, o.Name, value)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(o.Out, base64.StdEncoding.EncodeToString(env))
	return err
}

// merge seals values for the SealedSecret in o.MergeInto and writes it back.
func (o *SealOptions) merge(pub *rsa.PublicKey, secret *corev1.Secret, values map[string][]byte) error {
	data, err := os.ReadFile(o.MergeInto)
	if err != nil {
		return err
	}
	ss, err := parseSealedSecret(data)
	if err != nil {
		return fmt.Errorf("%s: %w", o.MergeInto, err)
	}
	if o.Scope != "" && o.Scope != ss.Spec.Scope && !(o.Scope == "strict" && ss.Spec.Scope == "") {
		return fmt.Errorf("--scope %s, but %s is sealed with scope %s", o.Scope, o.MergeInto, orDash(ss.Spec.Scope))
	}
	if ss.Spec.EncryptedData == nil {
		ss.Spec.EncryptedData = map[string]string{}
	}
	if err := sealInto(pub, ss, values); err != nil {
		return err
	}
	out, err := encodeLike(data, ss)
	if err != nil {
		return err
	}
	if err := os.WriteFile(o.MergeInto, out, 0o644); err != nil {
		return err
	}
	keys := make([]string, 0, len(values))
	for k := range values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(o.ErrOut, "Sealed %s into %s\n", strings.Join(keys, ", "), o.MergeInto)
	return nil
}

func parseSealedSecret(data []byte) (*v1alpha1.SealedSecret, error) {
	var ss v1alpha1.SealedSecret
	if err := yaml.Unmarshal(data, &ss); err != nil {
		return nil, fmt.Errorf("not a SealedSecret: %v", err)
	}
	if ss.Kind != "SealedSecret" || ss.APIVersion != v1alpha1.GroupVersion.String() {
		return nil, fmt.Errorf("expected a %s SealedSecret, got %s %s", v1alpha1.GroupVersion, orDash(ss.APIVersion), orDash(ss.Kind))
	}
	return &ss, nil
}

// encodeLike writes ss as JSON if the original was JSON, else YAML.
func encodeLike(original []byte, ss *v1alpha1.SealedSecret) ([]byte, error) {
	obj := sealedSecretObject(ss)
	if bytes.HasPrefix(bytes.TrimSpace(original), []byte("{")) {
		out, err := json.MarshalIndent(obj, "", "  ")
		return append(out, '\n'), err
	}
	return yaml.Marshal(obj)
}

// sealedSecretObject drops status and server fields for printing.
func sealedSecretObject(ss *v1alpha1.SealedSecret) map[string]any {
	meta := map[string]any{"name": ss.Name}
	if ss.Namespace != "" {
		meta["namespace"] = ss.Namespace
	}
	if len(ss.Labels) > 0 {
		meta["labels"] = ss.Labels
	}
	if len(ss.Annotations) > 0 {
		meta["annotations"] = ss.Annotations
	}
	return map[string]any{"apiVersion": v1alpha1.GroupVersion.String(), "kind": "SealedSecret", "metadata": meta, "spec": ss.Spec}
}

func (o *SealOptions) print(ss *v1alpha1.SealedSecret) error {
	obj := sealedSecretObject(ss)
	if o.Output == OutputJSON {
		return printObject(o.Out, OutputJSON, obj)
	}
	return printObject(o.Out, OutputYAML, obj)
}

// publicKey reads the sealing certificate: --cert, or the agent.
func (o *SealOptions) publicKey(ctx context.Context) (*rsa.PublicKey, error) {
	var data []byte
	var err error
	if o.CertFile != "" {
		data, err = os.ReadFile(o.CertFile)
	} else {
		data, err = o.fetchCert(ctx)
	}
	if err != nil {
		return nil, err
	}
	pub, _, err := seal.ParseCert(data)
	if err != nil {
		return nil, fmt.Errorf("sealing certificate: %w", err)
	}
	return pub, nil
}

// fetchCert asks the agent's HTTP endpoint (--controller-url) or reads
// the ConfigMap the agent publishes.
func (o *SealOptions) fetchCert(ctx context.Context) ([]byte, error) {
	if o.ControllerURL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(o.ControllerURL, "/")+"/v1/cert.pem", nil)
		if err != nil {
			return nil, err
		}
		return doHTTP(req)
	}
	c, _, err := appClient(&o.Kube)
	if err != nil {
		return nil, err
	}
	var cm corev1.ConfigMap
	if err := c.Get(ctx, client.ObjectKey{Namespace: o.ControllerNamespace, Name: seal.CertConfigMap}, &cm); err != nil {
		return nil, fmt.Errorf("reading the sealing certificate (ConfigMap %s/%s; is the agent running?): %w", o.ControllerNamespace, seal.CertConfigMap, err)
	}
	if cm.Data[seal.CertKey] == "" {
		return nil, fmt.Errorf("ConfigMap %s/%s holds no %s", o.ControllerNamespace, seal.CertConfigMap, seal.CertKey)
	}
	return []byte(cm.Data[seal.CertKey]), nil
}

func doHTTP(req *http.Request) ([]byte, error) {
	hc := &http.Client{Timeout: 30 * time.Second}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL.Path, resp.Status, strings.TrimSpace(string(body)))
	}
	return body, nil
}

// reEncrypt sends a SealedSecret's values to the agent, which seals them
// with the newest key; only ciphertext crosses the wire.
func (o *SealOptions) reEncrypt(ctx context.Context, input []byte) error {
	ss, err := parseSealedSecret(input)
	if err != nil {
		return err
	}
	body, err := json.Marshal(server.ResealRequest{Scope: ss.Spec.Scope, Namespace: ss.Namespace, Name: ss.Name, EncryptedData: ss.Spec.EncryptedData})
	if err != nil {
		return err
	}
	var raw []byte
	if o.ControllerURL != "" {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(o.ControllerURL, "/")+"/v1/reseal", bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		raw, err = doHTTP(req)
		if err != nil {
			return err
		}
	} else {
		cfg, _, err := o.Kube.Config()
		if err != nil {
			return err
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			return err
		}
		raw, err = cs.CoreV1().RESTClient().Post().Namespace(o.ControllerNamespace).Resource("services").
			Name("converge-sealing:sealing").SubResource("proxy").Suffix("v1/reseal").
			SetHeader("Content-Type", "application/json").Body(body).DoRaw(ctx)
		if err != nil {
			return fmt.Errorf("asking the agent (service %s/converge-sealing) to re-encrypt: %w", o.ControllerNamespace, err)
		}
	}
	var resp server.ResealResponse
	if err := json.Unmarshal(raw, &resp); err != nil {
		return fmt.Errorf("the agent's answer: %w", err)
	}
	ss.Spec.EncryptedData = resp.EncryptedData
	fmt.Fprintf(o.ErrOut, "Re-encrypted %d value(s) with key %s\n", len(resp.EncryptedData), resp.KeyID)
	return o.print(ss)
}
