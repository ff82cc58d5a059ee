package controller

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/seal"
)

// SealedSecretReconciler opens SealedSecrets and writes the Secrets they
// describe. Plaintext lives only in memory, for the length of a reconcile:
// it is never logged, put in events or status, or returned in errors.
type SealedSecretReconciler struct {
	Client client.Client
	// Reader reads Secrets uncached (an existing Secret may lack our label).
	Reader   client.Reader
	Keys     *seal.Store
	Recorder record.EventRecorder
	// Secrets is a cache of the metadata of the Secrets SealedSecrets
	// produced (never their values), so an edit or deletion of one is
	// repaired at once.
	Secrets cache.Cache
}

// SetupWithManager registers the reconciler.
func (r *SealedSecretReconciler) SetupWithManager(mgr ctrl.Manager) error {
	b := ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.SealedSecret{}, builder.WithPredicates(predicate.GenerationChangedPredicate{}))
	if r.Secrets != nil {
		// Metadata only: the cache must not hold the Secrets' values.
		secret := &metav1.PartialObjectMetadata{}
		secret.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
		b = b.WatchesRawSource(source.Kind(r.Secrets, secret,
			handler.TypedEnqueueRequestForOwner[*metav1.PartialObjectMetadata](mgr.GetScheme(), mgr.GetRESTMapper(), &v1alpha1.SealedSecret{}, handler.OnlyControllerOwner())))
	}
	return b.Complete(r)
}

// Reconcile opens every value or none: a SealedSecret that cannot be fully
// opened changes no Secret.
func (r *SealedSecretReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	ss := &v1alpha1.SealedSecret{}
	if err := r.Client.Get(ctx, req.NamespacedName, ss); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	before := ss.Status.DeepCopy()
	var data map[string][]byte
	var keyIDs []string
	var reason string
	var err error
	// The Secret as it is, read once (uncached: it may not carry our label).
	live := &corev1.Secret{}
	if err = r.Reader.Get(ctx, client.ObjectKeyFromObject(ss), live); apierrors.IsNotFound(err) {
		live, err = nil, nil
	}
	switch {
	case err != nil:
		reason = v1alpha1.ReasonWriteFailed
	case upToDate(ss, live):
		// Nothing to open: the Secret already holds this exact
		// SealedSecret's values (no RSA, no write).
		keyIDs = ss.Status.KeyIDs
	default:
		data, keyIDs, reason, err = r.open(ctx, ss)
		if err == nil {
			reason, err = r.write(ctx, ownSpec(ss), sealedDigest(ss, data), data, live)
		}
	}
	for k := range data {
		clear(data[k])
	}
	ss.Status.ObservedGeneration = ss.Generation
	if err != nil {
		msg := err.Error()
		setSSCondition(ss, v1alpha1.ConditionReady, metav1.ConditionFalse, reason, msg)
		if reason != v1alpha1.ReasonWriteFailed {
			setSSCondition(ss, v1alpha1.ConditionStalled, metav1.ConditionTrue, reason, msg)
		}
		if old := apimeta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady); old == nil || old.Message != msg {
			r.Recorder.Event(ss, corev1.EventTypeWarning, reason, msg)
		}
	} else {
		ss.Status.KeyIDs = keyIDs
		msg := fmt.Sprintf("Secret %s/%s holds %d key(s)", ss.Namespace, ss.Name, len(ss.Spec.EncryptedData))
		apimeta.RemoveStatusCondition(&ss.Status.Conditions, v1alpha1.ConditionStalled)
		if old := apimeta.FindStatusCondition(before.Conditions, v1alpha1.ConditionReady); old == nil || old.Status != metav1.ConditionTrue {
			r.Recorder.Event(ss, corev1.EventTypeNormal, v1alpha1.ReasonUnsealed, msg)
		}
		setSSCondition(ss, v1alpha1.ConditionReady, metav1.ConditionTrue, v1alpha1.ReasonUnsealed, msg)
	}
	if !equality.Semantic.DeepEqual(before, &ss.Status) {
		if requeue, uerr := writeStatus(ctx, r.Client, ss, nil); requeue || uerr != nil {
			return ctrl.Result{Requeue: requeue}, uerr
		}
	}
	if reason == v1alpha1.ReasonWriteFailed {
		return ctrl.Result{}, err
	}
	// Keys may be imported later (UnknownKey): look again now and then.
	if reason == v1alpha1.ReasonUnknownKey {
		return ctrl.Result{RequeueAfter: time.Minute}, nil
	}
	return ctrl.Result{}, nil
}

// open decrypts every value. The error names the key and the reason,
// never a value.
func (r *SealedSecretReconciler) open(ctx context.Context, ss *v1alpha1.SealedSecret) (map[string][]byte, []string, string, error) {
	scope, err := seal.ParseScope(ss.Spec.Scope)
	if err != nil {
		return nil, nil, v1alpha1.ReasonMalformed, err
	}
	ring, err := r.Keys.Keyring(ctx, 5*time.Minute)
	if err != nil {
		return nil, nil, v1alpha1.ReasonWriteFailed, err
	}
	names := make([]string, 0, len(ss.Spec.EncryptedData))
	for k := range ss.Spec.EncryptedData {
		names = append(names, k)
	}
	sort.Strings(names)
	data := map[string][]byte{}
	ids := map[string]bool{}
	for _, key := range names {
		raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(ss.Spec.EncryptedData[key]))
		if err != nil {
			return data, nil, v1alpha1.ReasonMalformed, fmt.Errorf("encryptedData[%s]: not base64", key)
		}
		p, err := seal.Parse(raw)
		if err != nil {
			return data, nil, v1alpha1.ReasonMalformed, fmt.Errorf("encryptedData[%s]: %w", key, err)
		}
		if !ring.Has(p.KeyID) {
			// Perhaps imported or rotated since the keys were read.
			if ring, err = r.Keys.Load(ctx); err != nil {
				return data, nil, v1alpha1.ReasonWriteFailed, err
			}
		}
		plain, err := ring.Open(raw, scope, ss.Namespace, ss.Name)
		if err != nil {
			return data, nil, openReason(err), fmt.Errorf("encryptedData[%s]: %w", key, err)
		}
		data[key] = plain
		ids[p.KeyID.String()] = true
	}
	keyIDs := make([]string, 0, len(ids))
	for id := range ids {
		keyIDs = append(keyIDs, id)
	}
	sort.Strings(keyIDs)
	return data, keyIDs, "", nil
}

func openReason(err error) string {
	switch {
	case errors.Is(err, seal.ErrUnknownKey):
		return v1alpha1.ReasonUnknownKey
	case errors.Is(err, seal.ErrWrongScope), errors.Is(err, seal.ErrWrongSecret):
		return v1alpha1.ReasonWrongScope
	case errors.Is(err, seal.ErrTampered):
		return v1alpha1.ReasonTampered
	}
	return v1alpha1.ReasonMalformed
}

// sealedSecret is what a sealed object (converge's SealedSecret or
// Bitnami's) says of the Secret it makes: its owner and its template.
type sealedSecret struct {
	owner       client.Object
	labels      map[string]string
	annotations map[string]string
	typ         corev1.SecretType
	immutable   *bool
	// takeover is the annotation that lets the owner take over an
	// existing Secret it does not control.
	takeover string
}

// ownSpec is the Secret ss makes.
func ownSpec(ss *v1alpha1.SealedSecret) sealedSecret {
	return sealedSecret{owner: ss, labels: secretLabels(ss), annotations: ss.Spec.Template.Metadata.Annotations, typ: secretType(ss),
		takeover: v1alpha1.AnnotationSealedSecretManaged}
}

// write creates or updates the Secret, refusing one it does not own.
// live is the existing Secret, nil when there is none; digest identifies
// the spec and data (see sealedDigest).
func (r *SealedSecretReconciler) write(ctx context.Context, spec sealedSecret, digest string, data map[string][]byte, live *corev1.Secret) (string, error) {
	if forbiddenSecretTypes[spec.typ] {
		return v1alpha1.ReasonMalformed, fmt.Errorf("spec.template.type %s mints cluster credentials and cannot be sealed", spec.typ)
	}
	owner := spec.owner
	want := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: owner.GetName(), Namespace: owner.GetNamespace()}}
	want.Labels = spec.labels
	want.Annotations = map[string]string{}
	for k, v := range spec.annotations {
		want.Annotations[k] = v
	}
	want.Annotations[annotationSealedDigest] = digest
	want.Type, want.Immutable = spec.typ, spec.immutable
	want.Data = data
	if err := controllerutil.SetControllerReference(owner, want, r.Client.Scheme()); err != nil {
		return v1alpha1.ReasonWriteFailed, err
	}

	if live == nil {
		if err := r.Client.Create(ctx, want); err != nil {
			return v1alpha1.ReasonWriteFailed, fmt.Errorf("creating Secret %s/%s: %w", want.Namespace, want.Name, redactAPIError(err))
		}
		return "", nil
	}
	if !metav1.IsControlledBy(live, owner) && live.Annotations[spec.takeover] != "true" {
		return v1alpha1.ReasonSecretNotOwned, fmt.Errorf("Secret %s/%s exists and is not managed by this SealedSecret; annotate it %s=true to let the SealedSecret take it over",
			live.Namespace, live.Name, spec.takeover)
	}
	if live.Type != want.Type || (live.Immutable != nil && *live.Immutable) {
		// The type is immutable, and so is an immutable Secret's data:
		// replace the Secret.
		if err := r.Client.Delete(ctx, live, client.Preconditions{UID: &live.UID}); err != nil && !apierrors.IsNotFound(err) {
			return v1alpha1.ReasonWriteFailed, err
		}
		if err := r.Client.Create(ctx, want); err != nil {
			return v1alpha1.ReasonWriteFailed, fmt.Errorf("recreating Secret %s/%s: %w", want.Namespace, want.Name, redactAPIError(err))
		}
		return "", nil
	}
	if equality.Semantic.DeepEqual(live.Data, want.Data) && equality.Semantic.DeepEqual(live.Labels, want.Labels) &&
		equality.Semantic.DeepEqual(live.Annotations, want.Annotations) && metav1.IsControlledBy(live, owner) {
		return "", nil
	}
	live.Labels, live.Data, live.StringData = want.Labels, want.Data, nil
	live.Annotations, live.Immutable = want.Annotations, want.Immutable
	live.OwnerReferences = want.OwnerReferences
	if err := r.Client.Update(ctx, live); err != nil {
		return v1alpha1.ReasonWriteFailed, fmt.Errorf("updating Secret %s/%s: %w", live.Namespace, live.Name, redactAPIError(err))
	}
	return "", nil
}

// annotationSealedDigest on a produced Secret identifies the SealedSecret
// spec and the data it was written from; see sealedDigest.
const annotationSealedDigest = "converge.dev/sealed-digest"

// sealedDigest hashes a SealedSecret's spec (scope, template, every
// ciphertext) together with the SHA-256 of each value the Secret holds. A
// Secret whose annotation matches the digest computed from its own data was
// written from this very spec and not changed since, so the values need not
// be opened again. The digest reveals nothing a reader of the Secret could
// not read directly.
func sealedDigest(ss *v1alpha1.SealedSecret, data map[string][]byte) string {
	h := sha256.New()
	tmpl, _ := json.Marshal(ss.Spec.Template)
	fmt.Fprintf(h, "v1\x00%s\x00%s\x00", ss.Spec.Scope, tmpl)
	keys := make([]string, 0, len(ss.Spec.EncryptedData))
	for k := range ss.Spec.EncryptedData {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := sha256.Sum256(data[k])
		fmt.Fprintf(h, "%s\x00%s\x00%x\x00", k, ss.Spec.EncryptedData[k], v)
	}
	fmt.Fprintf(h, "%d", len(data))
	return hex.EncodeToString(h.Sum(nil))
}

// upToDate reports whether live (nil: none) is ours, unchanged, and written
// from the current spec.
func upToDate(ss *v1alpha1.SealedSecret, live *corev1.Secret) bool {
	if live == nil {
		return false
	}
	ready := apimeta.FindStatusCondition(ss.Status.Conditions, v1alpha1.ConditionReady)
	return metav1.IsControlledBy(live, ss) && ready != nil && ready.Status == metav1.ConditionTrue &&
		live.Type == secretType(ss) && equality.Semantic.DeepEqual(live.Labels, secretLabels(ss)) &&
		live.Annotations[annotationSealedDigest] == sealedDigest(ss, live.Data)
}

// secretLabels are the produced Secret's labels: the template's and ours.
func secretLabels(ss *v1alpha1.SealedSecret) map[string]string {
	labels := map[string]string{v1alpha1.LabelSealedSecret: ss.Name}
	for k, v := range ss.Spec.Template.Metadata.Labels {
		labels[k] = v
	}
	return labels
}

// forbiddenSecretTypes make the cluster act on the Secret's content as
// credentials: a tenant who may commit a SealedSecret must not mint them.
var forbiddenSecretTypes = map[corev1.SecretType]bool{
	corev1.SecretTypeServiceAccountToken: true,
	corev1.SecretTypeBootstrapToken:      true,
}

func secretType(ss *v1alpha1.SealedSecret) corev1.SecretType {
	if ss.Spec.Template.Type == "" {
		return corev1.SecretTypeOpaque
	}
	return corev1.SecretType(ss.Spec.Template.Type)
}

// redactAPIError keeps the reason of an API error and drops its details,
// which for an invalid Secret may quote the data.
func redactAPIError(err error) error {
	var status apierrors.APIStatus
	if errors.As(err, &status) {
		return fmt.Errorf("%s (HTTP %d)", status.Status().Reason, status.Status().Code)
	}
	return err
}

func setSSCondition(ss *v1alpha1.SealedSecret, typ string, status metav1.ConditionStatus, reason, msg string) {
	apimeta.SetStatusCondition(&ss.Status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: msg, ObservedGeneration: ss.Generation,
	})
}
