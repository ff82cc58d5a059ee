package controller

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"text/template"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/seal"
)

// BitnamiSealedSecret is the kind of Bitnami's Sealed Secrets (kubeseal).
var BitnamiSealedSecret = schema.GroupVersionKind{Group: "bitnami.com", Version: "v1alpha1", Kind: "SealedSecret"}

// Bitnami's annotations, on the SealedSecret (scope) and on its template
// or the Secret (takeover, owner references).
const (
	bitnamiClusterWide    = "sealedsecrets.bitnami.com/cluster-wide"
	bitnamiNamespaceWide  = "sealedsecrets.bitnami.com/namespace-wide"
	bitnamiManaged        = "sealedsecrets.bitnami.com/managed"
	bitnamiSkipOwnerRefs  = "sealedsecrets.bitnami.com/skip-set-owner-references"
	maxTemplateOutput     = 1 << 20
	bitnamiConditionType  = "Synced"
	bitnamiReasonUnsealed = "Unsealed"
)

// BitnamiSealedSecretReconciler opens Bitnami's SealedSecrets with the
// sealing keys (those imported from a sealed-secrets controller among
// them) and writes their Secrets, as the SealedSecret controller does for
// converge's: teams moving in keep what they sealed. Scopes, templates
// (labels, annotations, type, immutable, data) and the takeover annotation
// mean what they mean to Bitnami's controller, which must be stopped:
// two controllers would fight over each Secret.
type BitnamiSealedSecretReconciler struct {
	*SealedSecretReconciler
	// Objects caches Bitnami's SealedSecrets (their CRD must be served).
	Objects cache.Cache
}

// SetupWithManager registers the reconciler.
func (r *BitnamiSealedSecretReconciler) SetupWithManager(mgr ctrl.Manager) error {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(BitnamiSealedSecret)
	b := ctrl.NewControllerManagedBy(mgr).Named("bitnami-sealedsecret").
		WatchesRawSource(source.Kind(r.Objects, u, &handler.TypedEnqueueRequestForObject[*unstructured.Unstructured]{},
			predicate.TypedGenerationChangedPredicate[*unstructured.Unstructured]{}))
	if r.Secrets != nil {
		secret := &metav1.PartialObjectMetadata{}
		secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		b = b.WatchesRawSource(source.Kind(r.Secrets, secret,
			handler.TypedEnqueueRequestForOwner[*metav1.PartialObjectMetadata](mgr.GetScheme(), mgr.GetRESTMapper(), u, handler.OnlyControllerOwner())))
	}
	return b.Complete(r)
}

// bitnamiSpec is what converge reads of a Bitnami SealedSecret.
type bitnamiSpec struct {
	EncryptedData map[string]string `json:"encryptedData"`
	Data          []byte            `json:"data,omitempty"`
	Template      struct {
		Metadata struct {
			Labels      map[string]string `json:"labels,omitempty"`
			Annotations map[string]string `json:"annotations,omitempty"`
		} `json:"metadata,omitempty"`
		Type      corev1.SecretType `json:"type,omitempty"`
		Immutable *bool             `json:"immutable,omitempty"`
		Data      map[string]string `json:"data,omitempty"`
	} `json:"template,omitempty"`
}

// Reconcile opens every value or none, as for converge's SealedSecrets.
func (r *BitnamiSealedSecretReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(BitnamiSealedSecret)
	if err := r.Objects.Get(ctx, req.NamespacedName, u); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	u = u.DeepCopy()
	var spec bitnamiSpec
	raw, _ := json.Marshal(u.Object["spec"])
	reason, err := v1alpha1.ReasonMalformed, json.Unmarshal(raw, &spec)
	var data map[string][]byte
	if err == nil {
		data, reason, err = r.unseal(ctx, u, &spec, raw)
	}
	for k := range data {
		clear(data[k])
	}
	if requeue, serr := r.setStatus(ctx, u, reason, err); requeue || serr != nil {
		return ctrl.Result{Requeue: requeue}, serr
	}
	switch {
	case reason == v1alpha1.ReasonWriteFailed:
		return ctrl.Result{}, err
	case reason == v1alpha1.ReasonUnknownKey:
		return ctrl.Result{RequeueAfter: time.Minute}, nil // keys may be imported later
	}
	return ctrl.Result{}, nil
}

// unseal opens u's values (unless its Secret already holds them) and
// writes the Secret. Errors name keys and reasons, never values.
func (r *BitnamiSealedSecretReconciler) unseal(ctx context.Context, u *unstructured.Unstructured, spec *bitnamiSpec, raw []byte) (map[string][]byte, string, error) {
	if len(spec.Data) > 0 {
		return nil, v1alpha1.ReasonMalformed, errors.New("spec.data: the format Bitnami deprecated (one sealed Secret); re-seal it into spec.encryptedData with kubeseal or converge seal --format bitnami")
	}
	if spec.Template.Metadata.Annotations[bitnamiSkipOwnerRefs] == "true" {
		return nil, v1alpha1.ReasonMalformed, fmt.Errorf("spec.template.metadata.annotations[%s]: converge always owns the Secrets it writes, so that deleting the SealedSecret deletes them", bitnamiSkipOwnerRefs)
	}
	out := r.secretOf(u, spec)
	live := &corev1.Secret{}
	if err := r.Reader.Get(ctx, client.ObjectKeyFromObject(u), live); apierrors.IsNotFound(err) {
		live = nil
	} else if err != nil {
		return nil, v1alpha1.ReasonWriteFailed, err
	}
	if live != nil && metav1.IsControlledBy(live, u) && live.Type == out.typ && equality.Semantic.DeepEqual(live.Labels, out.labels) &&
		live.Annotations[annotationSealedDigest] == bitnamiDigest(raw, u.GetAnnotations(), live.Data) {
		return nil, "", nil // holds exactly what this spec opens to
	}
	data, reason, err := r.open(ctx, u, spec)
	if err != nil {
		return data, reason, err
	}
	reason, err = r.write(ctx, out, bitnamiDigest(raw, u.GetAnnotations(), data), data, live)
	return data, reason, err
}

// secretOf is the Secret u's template describes.
func (r *BitnamiSealedSecretReconciler) secretOf(u *unstructured.Unstructured, spec *bitnamiSpec) sealedSecret {
	labels := map[string]string{v1alpha1.LabelSealedSecret: u.GetName()}
	for k, v := range spec.Template.Metadata.Labels {
		labels[k] = v
	}
	typ := spec.Template.Type
	if typ == "" {
		typ = corev1.SecretTypeOpaque
	}
	return sealedSecret{owner: u, labels: labels, annotations: spec.Template.Metadata.Annotations, typ: typ,
		immutable: spec.Template.Immutable, takeover: bitnamiManaged}
}

// bitnamiScope is the scope Bitnami's annotations on the SealedSecret
// give it.
func bitnamiScope(u *unstructured.Unstructured) seal.Scope {
	switch {
	case u.GetAnnotations()[bitnamiClusterWide] == "true":
		return seal.ClusterWide
	case u.GetAnnotations()[bitnamiNamespaceWide] == "true":
		return seal.NamespaceWide
	}
	return seal.Strict
}

// open decrypts every value, then fills the template's data from them.
func (r *BitnamiSealedSecretReconciler) open(ctx context.Context, u *unstructured.Unstructured, spec *bitnamiSpec) (map[string][]byte, string, error) {
	ring, err := r.Keys.Keyring(ctx, 5*time.Minute)
	if err != nil {
		return nil, v1alpha1.ReasonWriteFailed, err
	}
	reloaded := false
	scope := bitnamiScope(u)
	names := make([]string, 0, len(spec.EncryptedData))
	for k := range spec.EncryptedData {
		names = append(names, k)
	}
	sort.Strings(names)
	data := map[string][]byte{}
	for _, key := range names {
		ct, err := base64.StdEncoding.DecodeString(strings.TrimSpace(spec.EncryptedData[key]))
		if err != nil {
			return data, v1alpha1.ReasonMalformed, fmt.Errorf("spec.encryptedData[%s]: not base64", key)
		}
		plain, err := ring.OpenBitnami(ct, scope, u.GetNamespace(), u.GetName())
		if errors.Is(err, seal.ErrUnknownKey) && !reloaded {
			// Perhaps imported since the keys were read.
			if ring, err = r.Keys.Load(ctx); err != nil {
				return data, v1alpha1.ReasonWriteFailed, err
			}
			reloaded = true
			plain, err = ring.OpenBitnami(ct, scope, u.GetNamespace(), u.GetName())
		}
		if err != nil {
			return data, openReason(err), fmt.Errorf("spec.encryptedData[%s]: %w", key, err)
		}
		data[key] = plain
	}
	if err := fillTemplates(spec.Template.Data, data); err != nil {
		return data, v1alpha1.ReasonMalformed, err
	}
	return data, "", nil
}

// fillTemplates executes each of Bitnami's template.data entries with the
// opened values as its data (`{{ index . "password" }}`), into data. Only
// a few pure functions are offered: no sprig, whose env and expandenv
// would read the agent's environment, and a printf without widths. The
// output is bounded.
func fillTemplates(tmpls map[string]string, data map[string][]byte) error {
	if len(tmpls) == 0 {
		return nil
	}
	values := make(map[string]string, len(data))
	for k, v := range data {
		values[k] = string(v)
	}
	keys := make([]string, 0, len(tmpls))
	for k := range tmpls {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	total := 0
	for _, key := range keys {
		t, err := template.New(key).Option("missingkey=error").Funcs(templateFuncs).Parse(tmpls[key])
		if err != nil {
			return fmt.Errorf("spec.template.data[%s]: %s", key, bitnamiTemplateError(err))
		}
		w := &limitedBuffer{max: maxTemplateOutput - total}
		if err := t.Execute(w, values); err != nil {
			return fmt.Errorf("spec.template.data[%s]: %s", key, bitnamiTemplateError(err))
		}
		total += w.Len()
		data[key] = w.Bytes()
	}
	return nil
}

// bitnamiTemplateError is err's first line: it quotes the template, and
// the functions offered quote no value in their errors.
func bitnamiTemplateError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "\n"); i >= 0 {
		msg = msg[:i]
	}
	return msg
}

var templateFuncs = template.FuncMap{
	"printf":  safePrintf,
	"b64enc":  func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"b64dec":  func(s string) (string, error) { b, err := base64.StdEncoding.DecodeString(s); return string(b), err },
	"trim":    strings.TrimSpace,
	"upper":   strings.ToUpper,
	"lower":   strings.ToLower,
	"quote":   func(s string) string { return fmt.Sprintf("%q", s) },
	"replace": func(old, new, s string) string { return strings.ReplaceAll(s, old, new) },
}

// widths are printf widths and precisions: "%9999999d" would allocate
// before any output limit could stop it.
var widths = regexp.MustCompile(`%[-+# 0]*[0-9*.\[]`)

// safePrintf is printf without widths and precisions.
func safePrintf(format string, args ...any) (string, error) {
	if widths.MatchString(strings.ReplaceAll(format, "%%", "")) {
		return "", errors.New("printf: widths and precisions are not allowed")
	}
	return fmt.Sprintf(format, args...), nil
}

// limitedBuffer fails writes past max bytes.
type limitedBuffer struct {
	bytes.Buffer
	max int
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	if b.Len()+len(p) > b.max {
		return 0, fmt.Errorf("the templates write more than %d bytes", maxTemplateOutput)
	}
	return b.Buffer.Write(p)
}

// bitnamiDigest identifies a SealedSecret's spec and scope annotations
// with the SHA-256 of each value its Secret holds (see sealedDigest).
func bitnamiDigest(spec []byte, annotations map[string]string, data map[string][]byte) string {
	h := sha256.New()
	fmt.Fprintf(h, "bitnami-v1\x00%s\x00%s\x00%s\x00", spec, annotations[bitnamiClusterWide], annotations[bitnamiNamespaceWide])
	keys := make([]string, 0, len(data))
	for k := range data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := sha256.Sum256(data[k])
		fmt.Fprintf(h, "%s\x00%x\x00", k, v)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// setStatus writes Bitnami's status (a Synced condition) when it changed,
// and an event for a new outcome, as writeStatus does.
func (r *BitnamiSealedSecretReconciler) setStatus(ctx context.Context, u *unstructured.Unstructured, reason string, err error) (requeue bool, _ error) {
	cond := metav1.Condition{Type: bitnamiConditionType, Status: metav1.ConditionTrue, Reason: bitnamiReasonUnsealed, Message: "Secret unsealed"}
	if err != nil {
		cond = metav1.Condition{Type: bitnamiConditionType, Status: metav1.ConditionFalse, Reason: reason, Message: err.Error()}
	}
	var others []any
	if raw, ok, _ := unstructured.NestedSlice(u.Object, "status", "conditions"); ok {
		for _, c := range raw {
			if m, _ := c.(map[string]any); m["type"] != bitnamiConditionType {
				others = append(others, c)
			}
		}
	}
	old := bitnamiCondition(u)
	if old != nil && old.Status == cond.Status && old.Message == cond.Message && u.GetGeneration() == observedGeneration(u) {
		return false, nil
	}
	typ := corev1.EventTypeNormal
	if err != nil {
		typ = corev1.EventTypeWarning
	}
	r.Recorder.Event(u, typ, cond.Reason, cond.Message)
	// Bitnami's condition: status as a string, times as RFC 3339.
	now := time.Now().UTC().Format(time.RFC3339)
	c := map[string]any{"type": cond.Type, "status": string(cond.Status), "reason": cond.Reason, "message": cond.Message, "lastUpdateTime": now, "lastTransitionTime": now}
	if old != nil && old.Status == cond.Status {
		c["lastTransitionTime"] = old.LastTransitionTime.UTC().Format(time.RFC3339)
	}
	list := append([]any{c}, others...)
	_ = unstructured.SetNestedSlice(u.Object, list, "status", "conditions")
	_ = unstructured.SetNestedField(u.Object, u.GetGeneration(), "status", "observedGeneration")
	return writeStatus(ctx, r.Client, u, nil)
}

func bitnamiCondition(u *unstructured.Unstructured) *metav1.Condition {
	raw, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
	for _, c := range raw {
		m, _ := c.(map[string]any)
		if m["type"] != bitnamiConditionType {
			continue
		}
		out := &metav1.Condition{Type: bitnamiConditionType}
		out.Status, _ = toConditionStatus(m["status"])
		out.Message, _ = m["message"].(string)
		if t, ok := m["lastTransitionTime"].(string); ok {
			if parsed, err := time.Parse(time.RFC3339, t); err == nil {
				out.LastTransitionTime = metav1.NewTime(parsed)
			}
		}
		return out
	}
	return nil
}

func toConditionStatus(v any) (metav1.ConditionStatus, bool) {
	s, ok := v.(string)
	return metav1.ConditionStatus(s), ok
}

func observedGeneration(u *unstructured.Unstructured) int64 {
	g, _, _ := unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	return g
}

// BitnamiServed reports whether the cluster serves Bitnami's SealedSecret.
func BitnamiServed(mapper apimeta.RESTMapper) bool {
	_, err := mapper.RESTMapping(BitnamiSealedSecret.GroupKind(), BitnamiSealedSecret.Version)
	return err == nil
}
