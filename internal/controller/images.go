package controller

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/record"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/images"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
)

// Image scanning: an ImageRepository's reconcile scans its registry (as
// its Tenant allows, through the egress policy) and then chooses the
// latest tag of every ImagePolicy that names it. A scan that finds the
// same tags, and policies that choose the same tag, write nothing: an
// idle fleet of policies costs the registry one listing per interval and
// the apiserver no request.

// Reasons of the image kinds' Ready condition.
const (
	ReasonScanned      = "Scanned"
	ReasonScanFailed   = "ScanFailed"
	ReasonChosen       = "Chosen"
	ReasonNoTag        = "NoTagMatches"
	ReasonNotScanned   = "RepositoryNotReady"
	ReasonUpToDate     = "UpToDate"
	ReasonPushed       = "Pushed"
	ReasonUpdateFailed = "UpdateFailed"
)

const (
	defaultImageInterval = 5 * time.Minute
	minImageInterval     = 10 * time.Second
	// maxVerifiedCandidates bounds the tags a signed-images policy checks
	// at a scan, best first, before it says none is signed.
	maxVerifiedCandidates = 10
	maxImagePolicyWorkers = 8
)

// ImageReconciler scans ImageRepositories and chooses their ImagePolicies'
// tags.
type ImageReconciler struct {
	Client client.Client
	// Apps lends its tenancy rules, accounts and Secret readers: an image
	// scan reads as the account an Application of its namespace would.
	Apps     *ApplicationReconciler
	Egress   *egress.Policy
	Recorder record.EventRecorder
	// AllowedHosts are the agent's allowed source hosts (none: any).
	AllowedHosts []string

	mu    sync.Mutex
	scans map[types.NamespacedName]scanned
	// verified remembers the digests whose signatures passed, by the
	// verification's identity.
	verified map[string]bool
	// inflight counts the scans under way by share (see acquire).
	inflight map[string]int
}

// scanned is an ImageRepository's last scan, in memory: its policies are
// chosen again from it when only they change.
type scanned struct {
	generation int64
	at         time.Time
	tags       []string
}

// SetupWithManager registers the reconciler: ImageRepositories, and
// their ImagePolicies' creation and spec changes.
func (r *ImageReconciler) SetupWithManager(mgr ctrl.Manager) error {
	return ctrl.NewControllerManagedBy(mgr).
		For(&v1alpha1.ImageRepository{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&v1alpha1.ImagePolicy{}, handler.EnqueueRequestsFromMapFunc(policyRepository), builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		WithOptions(controller.Options{MaxConcurrentReconciles: maxImagePolicyWorkers}).
		Named("imagerepository").
		Complete(r)
}

func policyRepository(_ context.Context, obj client.Object) []reconcile.Request {
	p, ok := obj.(*v1alpha1.ImagePolicy)
	if !ok {
		return nil
	}
	return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: p.Namespace, Name: p.Spec.ImageRepositoryRef.Name}}}
}

func imageInterval(d *metav1.Duration) time.Duration {
	if d == nil || d.Duration == 0 {
		return defaultImageInterval
	}
	return max(d.Duration, minImageInterval)
}

// Reconcile scans the repository when its last scan is an interval old
// (or its spec changed), then chooses its policies' tags.
func (r *ImageReconciler) Reconcile(ctx context.Context, req reconcile.Request) (reconcile.Result, error) {
	repo := &v1alpha1.ImageRepository{}
	if err := r.Client.Get(ctx, req.NamespacedName, repo); err != nil {
		if apierrors.IsNotFound(err) {
			r.forget(req.NamespacedName)
			// Its policies say so.
			return reconcile.Result{}, r.choosePolicies(ctx, req.NamespacedName, nil, nil)
		}
		return reconcile.Result{}, err
	}
	if repo.Spec.Suspend {
		return reconcile.Result{}, nil
	}
	interval := imageInterval(repo.Spec.Interval)
	last, fresh := r.lastScan(repo, interval)
	var at reach
	if !fresh {
		var tags []string
		var err error
		at, tags, err = r.scan(ctx, repo)
		if errors.Is(err, errScanBusy) {
			return reconcile.Result{RequeueAfter: time.Second + time.Duration(rand.Int64N(int64(time.Second)))}, nil
		}
		if err != nil {
			ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: ReasonScanFailed, Message: truncate(err.Error(), maxHealthMessage)}
			if tenancy.Refused(err) {
				ready.Reason = v1alpha1.ReasonPolicyViolation
			}
			if werr := r.writeRepoStatus(ctx, repo, nil, ready); werr != nil {
				return reconcile.Result{}, werr
			}
			return reconcile.Result{RequeueAfter: interval}, r.choosePolicies(ctx, req.NamespacedName, repo, nil)
		}
		last = scanned{generation: repo.Generation, at: time.Now(), tags: tags}
		r.remember(req.NamespacedName, last)
	} else if a, err := r.reachOf(ctx, repo); err == nil {
		at = a
	}
	ready := metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonScanned, Message: fmt.Sprintf("%d tags", len(last.tags))}
	if err := r.writeRepoStatus(ctx, repo, last.tags, ready); err != nil {
		return reconcile.Result{}, err
	}
	if err := r.choosePoliciesWith(ctx, repo, at, last.tags); err != nil {
		return reconcile.Result{}, err
	}
	return reconcile.Result{RequeueAfter: time.Until(last.at.Add(interval))}, nil
}

func (r *ImageReconciler) lastScan(repo *v1alpha1.ImageRepository, interval time.Duration) (scanned, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	s, ok := r.scans[client.ObjectKeyFromObject(repo)]
	return s, ok && s.generation == repo.Generation && time.Since(s.at) < interval
}

// maxRememberedTags bounds the tags kept in memory across all
// repositories (a tag is at most 128 bytes): past it, a repository's scan
// is not kept, and a change to one of its policies scans it again.
const maxRememberedTags = 200_000

func (r *ImageReconciler) remember(key types.NamespacedName, s scanned) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.scans == nil {
		r.scans = map[types.NamespacedName]scanned{}
	}
	total := len(s.tags)
	for k, v := range r.scans {
		if k != key {
			total += len(v.tags)
		}
	}
	if total > maxRememberedTags {
		delete(r.scans, key)
		return
	}
	r.scans[key] = s
}

func (r *ImageReconciler) forget(key types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.scans, key)
}

// reach is how a repository's registry is reached, and as whom: the
// account its Secrets are read as and the share its scans count against
// (its Tenant's, or its namespace's).
type reach struct {
	images.Scan
	account, share string
}

// reachOf is how repo's registry is reached: checked against the agent's
// hosts and the Tenant's imageRepos before anything is sent, with the
// credentials its Secret holds, read as the Tenant's account. The Tenant
// is found once for all of it.
func (r *ImageReconciler) reachOf(ctx context.Context, repo *v1alpha1.ImageRepository) (at reach, _ error) {
	at.share = "namespace/" + repo.Namespace
	s := &at.Scan
	*s = images.Scan{Image: repo.Spec.Image, Insecure: repo.Spec.Insecure, Egress: r.Egress, TagLimit: repo.Spec.TagLimit, Exclude: repo.Spec.ExclusionList}
	if len(s.Exclude) == 0 {
		s.Exclude = images.DefaultExclusions
	}
	ref, err := s.Repository()
	if err != nil {
		return at, fmt.Errorf("spec.image: %w", err)
	}
	if host := ref.RegistryStr(); !source.HostAllowed(r.AllowedHosts, host) {
		return at, &tenancy.PolicyError{Err: fmt.Errorf("spec.image: registry %s is not among the agent's allowed source hosts", host)}
	}
	var tenants v1alpha1.TenantList
	if err := r.Client.List(ctx, &tenants); err != nil {
		return at, fmt.Errorf("listing Tenants: %w", err)
	}
	t, err := tenancy.Governor(repo.Namespace, tenants.Items, r.Apps.Tenancy)
	if err != nil {
		return at, &tenancy.PolicyError{Err: err}
	}
	at.account = r.Apps.Tenancy.DefaultServiceAccount
	if t != nil {
		full := ref.RegistryStr() + "/" + ref.RepositoryStr()
		if !tenancy.MatchRepo(t.Spec.ImageRepos, full) {
			return at, &tenancy.PolicyError{Err: fmt.Errorf("spec.image %s: Tenant %s allows imageRepos %v only", full, t.Name, t.Spec.ImageRepos)}
		}
		at.account, at.share = t.Spec.ServiceAccountName, "tenant/"+t.Name
	}
	if repo.Spec.SecretRef == nil {
		return at, nil
	}
	eng, err := r.Apps.engineFor(repo.Namespace, at.account)
	if err != nil {
		return at, err
	}
	var secret corev1.Secret
	if err := r.Apps.secretsReader(repo.Namespace, eng, at.account).Get(ctx, client.ObjectKey{Namespace: repo.Namespace, Name: repo.Spec.SecretRef.Name}, &secret); err != nil {
		return at, fmt.Errorf("spec.secretRef: reading Secret %s: %w", repo.Spec.SecretRef.Name, err)
	}
	s.Auth = &charts.Auth{Username: string(secret.Data["username"]), Password: string(secret.Data["password"])}
	if cfg, ok := secret.Data[corev1.DockerConfigJsonKey]; ok {
		a, err := charts.DockerConfigAuth(cfg, ref.RegistryStr())
		if err != nil {
			return at, fmt.Errorf("spec.secretRef: Secret %s: %w", repo.Spec.SecretRef.Name, err)
		}
		if a != nil {
			s.Auth = a
		}
	}
	return at, nil
}

func (r *ImageReconciler) scan(ctx context.Context, repo *v1alpha1.ImageRepository) (reach, []string, error) {
	at, err := r.reachOf(ctx, repo)
	if err != nil {
		return at, nil, err
	}
	if !r.acquire(at.share) {
		return at, nil, errScanBusy
	}
	defer r.release(at.share)
	tags, err := at.Tags(ctx)
	return at, tags, err
}

// Scans are shared fairly: one Tenant (or one namespace no Tenant
// governs) scans at most maxScansPerShare repositories at once, so a
// tenant whose registries answer slowly, or whose repositories are many,
// holds that many workers and not all of them. A scan over its share
// waits its turn (errScanBusy: requeued shortly, nothing written).
const maxScansPerShare = 2

var errScanBusy = errors.New("this tenant's scans are all under way")

func (r *ImageReconciler) acquire(share string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight == nil {
		r.inflight = map[string]int{}
	}
	if r.inflight[share] >= maxScansPerShare {
		return false
	}
	r.inflight[share]++
	return true
}

func (r *ImageReconciler) release(share string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.inflight[share]--; r.inflight[share] <= 0 {
		delete(r.inflight, share)
	}
}

// writeRepoStatus writes repo's status when it differs: a scan that
// found the same tags writes nothing.
func (r *ImageReconciler) writeRepoStatus(ctx context.Context, repo *v1alpha1.ImageRepository, tags []string, ready metav1.Condition) error {
	next := repo.Status.DeepCopy()
	next.ObservedGeneration = repo.Generation
	if tags != nil {
		digest := images.ListDigest(tags)
		if prev := next.LastScanResult; prev == nil || prev.Digest != digest {
			latest := slices.Clone(tags)
			slices.Reverse(latest)
			next.LastScanResult = &v1alpha1.ImageScanResult{TagCount: len(tags), LatestTags: latest[:min(10, len(latest))], Digest: digest, ChangedAt: metav1.Now()}
		}
	}
	apimeta.SetStatusCondition(&next.Conditions, ready)
	if equality.Semantic.DeepEqual(&repo.Status, next) {
		return nil
	}
	patch := client.MergeFrom(repo.DeepCopy())
	repo.Status = *next
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, repo, patch))
}

// choosePolicies chooses the tags of repo's policies without a scan
// (repo nil: it is gone).
func (r *ImageReconciler) choosePolicies(ctx context.Context, key types.NamespacedName, repo *v1alpha1.ImageRepository, tags []string) error {
	if repo == nil {
		repo = &v1alpha1.ImageRepository{ObjectMeta: metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name}}
	}
	return r.choosePoliciesWith(ctx, repo, reach{}, tags)
}

// choosePoliciesWith chooses, from tags, the latest tag of every policy
// naming repo, and writes the policies whose choice changed.
func (r *ImageReconciler) choosePoliciesWith(ctx context.Context, repo *v1alpha1.ImageRepository, at reach, tags []string) error {
	var policies v1alpha1.ImagePolicyList
	if err := r.Client.List(ctx, &policies, client.InNamespace(repo.Namespace)); err != nil {
		return err
	}
	// The keys signatures are checked with: read once for every policy.
	var tr trust
	if repo.Spec.Verify != nil && at.Image != "" {
		tr.keys, tr.keyless, tr.err = r.cosign(ctx, repo, at.account)
	}
	var errs []error
	for i := range policies.Items {
		p := &policies.Items[i]
		if p.Spec.ImageRepositoryRef.Name != repo.Name {
			continue
		}
		latest, ready := r.choose(ctx, repo, at.Scan, tr, tags, p)
		if err := r.writePolicyStatus(ctx, p, latest, ready); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// choose is p's latest tag from tags, or why there is none. A policy
// whose repository verifies signatures takes the best tag whose image is
// signed, checking at most maxVerifiedCandidates.
// trust is what a repository's signatures are checked with, or why it
// could not be read.
type trust struct {
	keys    charts.CosignKeys
	keyless *charts.CosignKeyless
	err     error
}

func (r *ImageReconciler) choose(ctx context.Context, repo *v1alpha1.ImageRepository, scan images.Scan, tr trust, tags []string, p *v1alpha1.ImagePolicy) (*v1alpha1.ImageRef, metav1.Condition) {
	notReady := func(reason, msg string) (*v1alpha1.ImageRef, metav1.Condition) {
		return p.Status.LatestRef, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionFalse, Reason: reason, Message: truncate(msg, maxHealthMessage)}
	}
	if repo.UID == "" || scan.Image == "" {
		if c := apimeta.FindStatusCondition(repo.Status.Conditions, v1alpha1.ConditionReady); c != nil && c.Status == metav1.ConditionFalse {
			return notReady(ReasonNotScanned, fmt.Sprintf("ImageRepository %s: %s", repo.Name, c.Message))
		}
		return notReady(ReasonNotScanned, fmt.Sprintf("ImageRepository %s is not found or not scanned", repo.Name))
	}
	ranked, err := images.Rank(p.Spec, tags)
	if err != nil {
		return notReady(ReasonNoTag, err.Error())
	}
	ref, err := scan.Repository()
	if err != nil {
		return notReady(ReasonNotScanned, err.Error())
	}
	opts := scan.Options(ctx)
	if repo.Spec.Verify != nil {
		if tr.err != nil {
			return notReady(ReasonNoTag, tr.err.Error())
		}
		ranked = ranked[:min(len(ranked), maxVerifiedCandidates)]
	} else {
		ranked = ranked[:1]
	}
	verify, reflect := repo.Spec.Verify != nil, p.Spec.DigestReflectionPolicy == "Always"
	var reasons []string
	for _, tag := range ranked {
		out := &v1alpha1.ImageRef{Name: repo.Spec.Image, Tag: tag}
		if !verify && !reflect {
			return out, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonChosen, Message: "latest tag " + tag}
		}
		// The digest is asked every scan: a tag pushed again is another
		// image, to verify again.
		digest, err := images.Digest(ref, tag, opts)
		if err != nil {
			return notReady(ReasonScanFailed, err.Error())
		}
		if verify {
			if err := r.verify(ctx, ref, digest, opts, tr.keys, tr.keyless); err != nil {
				reasons = append(reasons, tag+": "+err.Error())
				continue
			}
		}
		if reflect {
			out.Digest = digest
		}
		return out, metav1.Condition{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: ReasonChosen, Message: "latest tag " + tag}
	}
	return notReady(ReasonNoTag, fmt.Sprintf("none of the %d best tags is signed as spec.verify asks: %v", len(ranked), reasons))
}

// cosign reads the trust of repo's spec.verify as account.
func (r *ImageReconciler) cosign(ctx context.Context, repo *v1alpha1.ImageRepository, sa string) (charts.CosignKeys, *charts.CosignKeyless, error) {
	eng, err := r.Apps.engineFor(repo.Namespace, sa)
	if err != nil {
		return nil, nil, err
	}
	return appspec.Cosign(ctx, r.Apps.secretsReader(repo.Namespace, eng, sa), repo.Namespace, "spec.verify", repo.Spec.Verify)
}

// verify checks digest's signatures once per digest and trust.
func (r *ImageReconciler) verify(ctx context.Context, ref name.Repository, digest string, opts []remote.Option, keys charts.CosignKeys, keyless *charts.CosignKeyless) error {
	key := ref.String() + "@" + digest + "\x00" + charts.VerificationIdentity(keys, keyless)
	r.mu.Lock()
	ok := r.verified[key]
	r.mu.Unlock()
	if ok {
		return nil
	}
	if err := charts.VerifySignature(ctx, ref, digest, opts, keys, keyless); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.verified == nil || len(r.verified) > 10000 {
		r.verified = map[string]bool{}
	}
	r.verified[key] = true
	return nil
}

// writePolicyStatus writes p's status when it differs.
func (r *ImageReconciler) writePolicyStatus(ctx context.Context, p *v1alpha1.ImagePolicy, latest *v1alpha1.ImageRef, ready metav1.Condition) error {
	next := p.Status.DeepCopy()
	next.ObservedGeneration = p.Generation
	if latest != nil && (next.LatestRef == nil || *next.LatestRef != *latest) {
		next.ObservedPreviousRef, next.LatestRef = next.LatestRef, latest
		if r.Recorder != nil && next.ObservedPreviousRef != nil {
			r.Recorder.Eventf(p, corev1.EventTypeNormal, "NewTag", "%s: %s → %s", latest.Name, next.ObservedPreviousRef.Tag, latest.Tag)
		}
	}
	apimeta.SetStatusCondition(&next.Conditions, ready)
	if equality.Semantic.DeepEqual(&p.Status, next) {
		return nil
	}
	patch := client.MergeFrom(p.DeepCopy())
	p.Status = *next
	return client.IgnoreNotFound(r.Client.Status().Patch(ctx, p, patch))
}
