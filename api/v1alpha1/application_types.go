package v1alpha1

import (
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationRequestedAt, set to a new value (a timestamp), asks the agent to
// fetch and sync at once: `converge sync APP` and the webhook set it.
const AnnotationRequestedAt = "converge.dev/requested-at"

// AnnotationRequestedBy names who asked for the sync requested with
// AnnotationRequestedAt: a Kubernetes user (as `converge sync APP` saw it)
// or "webhook". It is recorded in the sync history.
const AnnotationRequestedBy = "converge.dev/requested-by"

// AnnotationSyncResources makes the sync requested with
// AnnotationRequestedAt selective (`converge sync APP --resource ...`):
// JSON {"at": <the request's stamp>, "resources": ["GROUP:KIND:NAME" or
// "GROUP:KIND:NAMESPACE/NAME", ...]}. It applies to that request only.
const AnnotationSyncResources = "converge.dev/sync-resources"

// SyncResources is the value of AnnotationSyncResources.
type SyncResources struct {
	At        string   `json:"at"`
	Resources []string `json:"resources"`
}

// RequestedByWebhook is the AnnotationRequestedBy of a webhook delivery.
const RequestedByWebhook = "webhook"

// AnnotationRollback, set by `converge rollback`, asks the agent for a
// Git-native rollback: a JSON RollbackRequest. The agent writes a commit on
// the tracked branch restoring the app's path to the target revision,
// pushes it and syncs it; status.rollback reports the outcome.
const AnnotationRollback = "converge.dev/rollback"

// RollbackRequest is the value of AnnotationRollback.
type RollbackRequest struct {
	// ID identifies the request (a timestamp); status.rollback.request
	// echoes it once handled.
	ID string `json:"id"`
	// Target is the full commit SHA to restore.
	Target string `json:"target"`
	// By is the Kubernetes user who asked.
	By string `json:"by,omitempty"`
	// Pin, instead of writing a commit, pins the Application to Target
	// (spec.pin) once the agent has checked that Target renders.
	Pin bool `json:"pin,omitempty"`
}

// ApplicationFinalizer lets the agent prune an Application's objects before
// the Application goes away.
const ApplicationFinalizer = "converge.dev/finalizer"

// Application says what converge keeps in sync: a path in a Git repository,
// rendered as plain YAML, Kustomize or Helm, applied to the cluster.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=app;apps,categories=converge
// +kubebuilder:printcolumn:name="Sync",type=string,JSONPath=`.status.sync.status`
// +kubebuilder:printcolumn:name="Health",type=string,JSONPath=`.status.health.status`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.sync.revision`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`,priority=1
// +kubebuilder:printcolumn:name="Message",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].message`,priority=1
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Application struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ApplicationSpec   `json:"spec,omitempty"`
	Status ApplicationStatus `json:"status,omitempty"`
}

// ApplicationList is a list of Applications.
//
// +kubebuilder:object:root=true
type ApplicationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Application `json:"items"`
}

// ApplicationSpec is the desired state of an Application.
type ApplicationSpec struct {
	// Source is where the desired state comes from.
	Source ApplicationSource `json:"source"`

	// Destination is where it goes.
	// +optional
	Destination ApplicationDestination `json:"destination,omitempty"`

	// SyncPolicy says when and how to sync. Without automated sync, the
	// Application only reports whether the cluster is in sync.
	// +optional
	SyncPolicy SyncPolicy `json:"syncPolicy,omitempty"`

	// Suspend stops all syncing (and drift correction) until cleared.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// DeletionPolicy says what happens to the Application's objects when it
	// is deleted: Delete prunes them (the default), Orphan leaves them.
	// +kubebuilder:validation:Enum=Delete;Orphan
	// +kubebuilder:default=Delete
	// +optional
	DeletionPolicy DeletionPolicy `json:"deletionPolicy,omitempty"`

	// ServiceAccountName, when set, is a ServiceAccount in the
	// Application's namespace that the agent impersonates to plan, apply
	// and prune: the app may touch only what that account may. Empty
	// applies with the agent's own permissions.
	// +optional
	ServiceAccountName string `json:"serviceAccountName,omitempty"`

	// Pin holds the Application at one revision, whatever its ref says,
	// until removed (`converge rollback APP --pin` / `--unpin`).
	// +optional
	Pin *Pin `json:"pin,omitempty"`

	// DependsOn names Applications that must be Synced and Healthy, at
	// the revision they last fetched, before this one syncs: its sync
	// waits, and its Ready condition says for which. A dependency in
	// another namespace names it. A cycle is refused, naming it.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	DependsOn []ApplicationReference `json:"dependsOn,omitempty"`

	// IgnoreDifferences leaves fields to the live objects, as Argo CD's
	// ignoreDifferences does with RespectIgnoreDifferences: an HPA's
	// replicas, an injected caBundle. The fields they select count in no
	// diff, drift or self-heal, and a sync never overwrites them on an
	// existing object (a new one is created with Git's values).
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	IgnoreDifferences []ResourceIgnoreDifferences `json:"ignoreDifferences,omitempty"`

	// Decryption opens SOPS-encrypted files in the source (manifests,
	// Kustomize inputs such as secretGenerator files, Helm values files),
	// as Flux's Kustomization spec.decryption does. Files are decrypted in
	// the render worker as they are read, and their MAC is checked. A
	// file encrypted for keys converge does not hold fails the render,
	// naming it.
	// +optional
	Decryption *Decryption `json:"decryption,omitempty"`

	// Notify sends the Application's sync events (started, succeeded,
	// failed, health degraded, drift healed) to receivers: a JSON webhook,
	// a Slack-compatible incoming webhook, or a commit status on the
	// synced commit. Delivery never holds a sync.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	Notify []NotifyTarget `json:"notify,omitempty"`

	// HistoryLimit is how many syncs (and, separately, actions) the
	// history record keeps.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=500
	// +kubebuilder:default=20
	// +optional
	HistoryLimit *int32 `json:"historyLimit,omitempty"`
}

// NotifyTarget is one receiver of an Application's events.
type NotifyTarget struct {
	// Type is webhook (JSON, signed with HMAC-SHA256 when the Secret has
	// an "hmac" key), slack (a Slack-compatible incoming webhook), msteams
	// (a Microsoft Teams incoming webhook's MessageCard), discord (a
	// Discord webhook), smtp (an email; see Email), alertmanager (alerts
	// posted to Alertmanager's
	// /api/v2/alerts: SyncFailed and HealthDegraded fire, the next
	// SyncSucceeded resolves; a "token" is sent as a bearer token), or
	// github, gitlab, gitea, bitbucket (a commit status on the synced
	// commit, with the Secret's "token"; Bitbucket Cloud's is
	// "username:app-password", or an access token).
	// +kubebuilder:validation:Enum=webhook;slack;msteams;discord;alertmanager;github;gitlab;gitea;bitbucket;smtp
	Type string `json:"type"`
	// URL is the webhook's address or, for commit statuses, the forge's
	// base URL (default https://api.github.com for github,
	// https://api.bitbucket.org for bitbucket). A Secret's
	// "url" key, when present, replaces it (Slack URLs are secrets).
	// +optional
	URL string `json:"url,omitempty"`
	// Repository is the forge's owner/repo (GitLab: the project path) for
	// commit statuses; default: from spec.source.repoURL.
	// +optional
	Repository string `json:"repository,omitempty"`
	// SecretRef names a Secret in the Application's namespace, read as
	// the app's account: "token", "hmac", "url".
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Events are the events sent; default all: SyncStarted,
	// SyncSucceeded, SyncFailed, HealthDegraded, DriftHealed.
	// +optional
	Events []NotifyEvent `json:"events,omitempty"`
	// Template writes the message of slack, msteams and discord receivers
	// (Go's text/template) from {{.Event}}, {{.Namespace}}, {{.Name}},
	// {{.Revision}}, {{.ShortRevision}}, {{.Message}} and {{.Time}}, with
	// if, with and the built-in functions (printf, len, eq, ...); range
	// and define are refused, and a message is at most 16 KiB.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	Template string `json:"template,omitempty"`
	// Email is an smtp receiver's sender and recipients.
	// +optional
	Email *EmailSettings `json:"email,omitempty"`
}

// EmailSettings are the addresses of an smtp receiver, whose URL is
// smtp://host:port (STARTTLS, required) or smtps://host:port (TLS from
// the start), and whose Secret may hold "username", "password" and
// "ca.crt" (PEM: the CAs the server's certificate is checked against).
type EmailSettings struct {
	// From is the sender's address.
	// +kubebuilder:validation:MinLength=3
	// +kubebuilder:validation:MaxLength=254
	From string `json:"from"`
	// To are the recipients' addresses.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=20
	// +kubebuilder:validation:items:MaxLength=254
	To []string `json:"to"`
}

// NotifyEvent is an event a NotifyTarget can receive.
// +kubebuilder:validation:Enum=SyncStarted;SyncSucceeded;SyncFailed;HealthDegraded;DriftHealed;ImageUpdated;ImageUpdateFailed
type NotifyEvent string

// Notification events.
const (
	NotifySyncStarted    NotifyEvent = "SyncStarted"
	NotifySyncSucceeded  NotifyEvent = "SyncSucceeded"
	NotifySyncFailed     NotifyEvent = "SyncFailed"
	NotifyHealthDegraded NotifyEvent = "HealthDegraded"
	NotifyDriftHealed    NotifyEvent = "DriftHealed"
	// NotifyImageUpdated and NotifyImageUpdateFailed are an
	// ImageUpdateAutomation's: a commit of new tags pushed, or a run that
	// failed. Only Alerts that list them get them (docs/images.md).
	NotifyImageUpdated      NotifyEvent = "ImageUpdated"
	NotifyImageUpdateFailed NotifyEvent = "ImageUpdateFailed"
)

// ApplicationReference names an Application.
type ApplicationReference struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Namespace defaults to the referring Application's.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// SameRevision waits, in addition, until the Application is Synced
	// at the commit this one is about to sync: a progressive rollout of
	// one repository (ApplicationSet strategy steps set it).
	// +optional
	SameRevision bool `json:"sameRevision,omitempty"`
}

// Pin holds an Application at a revision.
type Pin struct {
	// Revision is the full commit SHA.
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{40}([0-9a-f]{24})?$`
	Revision string `json:"revision"`
	// Reason says why, for people reading the status.
	// +optional
	Reason string `json:"reason,omitempty"`
}

// DeletionPolicy is Delete or Orphan.
type DeletionPolicy string

// Deletion policies.
const (
	DeletionPolicyDelete DeletionPolicy = "Delete"
	DeletionPolicyOrphan DeletionPolicy = "Orphan"
)

// ApplicationSource is a path in a Git repository, a chart from a Helm
// repository or OCI registry, or both: the chart with values files from
// Git.
//
// +kubebuilder:validation:XValidation:rule="!has(self.ref) || [has(self.ref.branch), has(self.ref.tag), has(self.ref.semver), has(self.ref.commit)].filter(x, x).size() <= 1",message="ref: set at most one of branch, tag, semver and commit"
// +kubebuilder:validation:XValidation:rule="has(self.repoURL) || has(self.chart) || has(self.oci)",message="set repoURL (a Git repository), chart, or both; or oci (an OCI artifact)"
// +kubebuilder:validation:XValidation:rule="!has(self.oci) || !(has(self.repoURL) || has(self.chart))",message="oci: an OCI artifact is the whole source; set neither repoURL nor chart with it"
type ApplicationSource struct {
	// RepoURL is the Git repository: https://, http:// or ssh:// (or
	// user@host:path). Credentials never go here; use SecretRef.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:Pattern=`^(https?://|ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:|file://)`
	// +optional
	RepoURL string `json:"repoURL,omitempty"`

	// Chart, when set, is rendered instead of what Path holds: a chart
	// from a Helm repository or an OCI registry. Helm's values files are
	// then read from Path in the Git repository, when RepoURL is set.
	// +optional
	Chart *ChartSource `json:"chart,omitempty"`

	// OCI, when set, is the source instead of Git: manifests shipped as an
	// OCI artifact, rendered from Path within it.
	// +optional
	OCI *OCISource `json:"oci,omitempty"`

	// Ref selects the revision. Empty means the branch "main".
	// +optional
	Ref *GitRef `json:"ref,omitempty"`

	// Path is the directory (or file) to render, relative to the
	// repository root. Empty means the root.
	// +optional
	Path string `json:"path,omitempty"`

	// Helm options, used when Path holds a chart.
	// +optional
	Helm *HelmSource `json:"helm,omitempty"`

	// Jsonnet options, used for the .jsonnet files at Path.
	// +optional
	Jsonnet *JsonnetSource `json:"jsonnet,omitempty"`

	// Kustomize overrides what Path builds, as Argo CD's source.kustomize
	// and Flux's Kustomization (patches, images, components, namePrefix,
	// nameSuffix, commonMetadata) do: over a Kustomize root, as an overlay
	// would; over a directory of manifests or Jsonnet, as an overlay of
	// what they render (Flux builds every path with Kustomize), where
	// components are refused by name. A chart is refused.
	// +optional
	Kustomize *KustomizeOverrides `json:"kustomize,omitempty"`

	// PostBuild substitutes variables in what the source renders, as
	// Flux's Kustomization postBuild does.
	// +optional
	PostBuild *PostBuild `json:"postBuild,omitempty"`

	// SecretRef names a Secret in the Application's namespace with the
	// repository's credentials: "username" and "password" (or a token as
	// password) for HTTPS; "identity" (a private key) and "known_hosts"
	// for SSH.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`

	// Verify requires revisions to be signed by a trusted key. An unsigned
	// or untrusted revision is never rendered or applied.
	// +optional
	Verify *SourceVerification `json:"verify,omitempty"`

	// Insecure allows sending the SecretRef's username and password over
	// plain http://. Without it, credentials are only ever sent over
	// https:// or ssh.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// SourceVerification says which signature to check and which keys to trust.
type SourceVerification struct {
	// Mode is "head" (the commit's own signature) or "tag" (the annotated
	// tag's signature; the app must follow a tag or semver range).
	// +kubebuilder:validation:Enum=head;tag
	// +kubebuilder:default=head
	// +optional
	Mode string `json:"mode,omitempty"`
	// SecretRef names a Secret in the Application's namespace holding the
	// trusted keys: OpenPGP public keys in entries ending in .asc or .gpg
	// (armored or binary), and/or an SSH allowed-signers file in the entry
	// "allowed_signers".
	SecretRef LocalObjectReference `json:"secretRef"`
}

// GitRef selects a revision: at most one field may be set.
type GitRef struct {
	// Branch follows the tip of a branch.
	// +optional
	Branch string `json:"branch,omitempty"`
	// Tag pins a tag.
	// +optional
	Tag string `json:"tag,omitempty"`
	// Semver follows the highest tag matching a semantic-version range,
	// e.g. ">=1.2.0 <2.0.0" or "~1.4".
	// +optional
	Semver string `json:"semver,omitempty"`
	// Commit pins a full commit SHA.
	// +kubebuilder:validation:Pattern=`^[0-9a-f]{40}([0-9a-f]{24})?$`
	// +optional
	Commit string `json:"commit,omitempty"`
}

// HelmSource configures rendering a chart.
type HelmSource struct {
	// ReleaseName is .Release.Name; default: the Application's name.
	// +optional
	ReleaseName string `json:"releaseName,omitempty"`
	// ValuesFiles are merged in order over the chart's values.yaml; paths
	// are relative to the chart and must stay inside the repository.
	// +optional
	ValuesFiles []string `json:"valuesFiles,omitempty"`
	// ValuesFrom are merged in order after the values files and before
	// Values: values from ConfigMaps and Secrets in the Application's
	// namespace, read as the app's account. A change to one syncs the
	// app as a new revision would.
	// +optional
	ValuesFrom []ValuesReference `json:"valuesFrom,omitempty"`
	// Values are merged last.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +optional
	Values *apiextensionsv1.JSON `json:"values,omitempty"`
	// IgnoreMissingValueFiles skips values files that do not exist
	// instead of failing the render (Argo CD's option).
	// +optional
	IgnoreMissingValueFiles bool `json:"ignoreMissingValueFiles,omitempty"`
	// SkipCRDs leaves the chart's crds/ directory out.
	// +optional
	SkipCRDs bool `json:"skipCrds,omitempty"`
	// KubeVersion and APIVersions replace what the chart sees of the
	// cluster (.Capabilities), which is otherwise the destination's own.
	// +optional
	KubeVersion string `json:"kubeVersion,omitempty"`
	// +kubebuilder:validation:MaxItems=1024
	// +optional
	APIVersions []string `json:"apiVersions,omitempty"`
	// PostRenderers change what the chart renders, in order: Kustomize
	// overrides applied as an overlay over its objects (Flux's
	// postRenderers.kustomize; components are refused).
	// +kubebuilder:validation:MaxItems=16
	// +optional
	PostRenderers []HelmPostRenderer `json:"postRenderers,omitempty"`
}

// HelmPostRenderer is one post-renderer.
type HelmPostRenderer struct {
	Kustomize *KustomizeOverrides `json:"kustomize"`
}

// ResourceIgnoreDifferences selects objects by kind (and optionally name
// and namespace) and fields of them by JSON pointer ("/spec/replicas") or
// jq path expression (".webhooks[]?.clientConfig.caBundle").
type ResourceIgnoreDifferences struct {
	// Group is the kind's API group; empty for the core group.
	// +optional
	Group string `json:"group,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +kubebuilder:validation:MaxItems=64
	// +optional
	JSONPointers []string `json:"jsonPointers,omitempty"`
	// +kubebuilder:validation:MaxItems=16
	// +optional
	JQPathExpressions []string `json:"jqPathExpressions,omitempty"`
	// ManagedFieldsManagers leave the fields these field managers own
	// (by the live object's managedFields) to them, as Argo CD does: an
	// HPA's replicas ("kube-controller-manager"), an operator's defaults.
	// converge's own managers cannot be named.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	ManagedFieldsManagers []string `json:"managedFieldsManagers,omitempty"`
}

// KustomizeOverrides change what a path builds, without a commit: Argo
// CD's source.kustomize, Flux's Kustomization overrides.
type KustomizeOverrides struct {
	// Images set image names, tags or digests, as `kustomize edit set
	// image` takes them: "nginx=registry.example.com/nginx:1.27",
	// "nginx:1.27", "nginx@sha256:...".
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Images []string `json:"images,omitempty"`
	// +optional
	NamePrefix string `json:"namePrefix,omitempty"`
	// +optional
	NameSuffix string `json:"nameSuffix,omitempty"`
	// Namespace sets every namespaced object's namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// CommonLabels are added to every object and, unless
	// LabelWithoutSelector, to selectors and templates.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	CommonLabels map[string]string `json:"commonLabels,omitempty"`
	// LabelWithoutSelector adds CommonLabels to objects only, not to
	// selectors (which are immutable in Deployments) nor, unless
	// LabelIncludeTemplates, to pod templates (Argo CD's options).
	// +optional
	LabelWithoutSelector bool `json:"labelWithoutSelector,omitempty"`
	// +optional
	LabelIncludeTemplates bool `json:"labelIncludeTemplates,omitempty"`
	// CommonMetadata sets labels and annotations on every object's own
	// metadata after the build, replacing values of the same keys, and
	// touches nothing else: no selector, no template (Flux's
	// Kustomization commonMetadata).
	// +optional
	CommonMetadata *CommonMetadata `json:"commonMetadata,omitempty"`
	// CommonAnnotations are added to every object.
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	CommonAnnotations map[string]string `json:"commonAnnotations,omitempty"`
	// Replicas set workloads' replica counts by name.
	// +kubebuilder:validation:MaxItems=256
	// +optional
	Replicas []KustomizeReplica `json:"replicas,omitempty"`
	// Patches are inline patches (strategic merge or JSON 6902), with an
	// optional target.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Patches []KustomizePatch `json:"patches,omitempty"`
	// Components are Kustomize components, by path relative to Path.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Components []string `json:"components,omitempty"`
}

// CommonMetadata is metadata set on every object of a build.
type CommonMetadata struct {
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +kubebuilder:validation:MaxProperties=64
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// KustomizeReplica sets the replicas of the workloads named Name.
type KustomizeReplica struct {
	// +kubebuilder:validation:MinLength=1
	Name  string `json:"name"`
	Count int64  `json:"count"`
}

// KustomizePatch is an inline patch and what it applies to.
type KustomizePatch struct {
	// +kubebuilder:validation:MinLength=1
	Patch string `json:"patch"`
	// +optional
	Target *KustomizeTarget `json:"target,omitempty"`
}

// KustomizeTarget selects objects for a patch.
type KustomizeTarget struct {
	// +optional
	Group string `json:"group,omitempty"`
	// +optional
	Version string `json:"version,omitempty"`
	// +optional
	Kind string `json:"kind,omitempty"`
	// +optional
	Name string `json:"name,omitempty"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	LabelSelector string `json:"labelSelector,omitempty"`
	// +optional
	AnnotationSelector string `json:"annotationSelector,omitempty"`
}

// Decryption says how to open encrypted files in an app's source.
type Decryption struct {
	// Provider is the encryption format: sops.
	// +kubebuilder:validation:Enum=sops
	Provider string `json:"provider"`
	// SecretRef names a Secret in the Application's namespace, read as
	// the app's account, holding the private keys: each key ending in
	// .agekey holds age identities (as age-keygen writes them), each
	// ending in .asc an armored OpenPGP private key. Other keys (Flux's
	// sops.vault-token and cloud KMS credentials) are refused by name.
	SecretRef LocalObjectReference `json:"secretRef"`
}

// PostBuild replaces ${var} references (Flux's syntax: ${var:=default},
// ${var:-default}, $${var} for a literal) in every rendered object, as
// Flux's Kustomization postBuild does: the variables of SubstituteFrom in
// order, then Substitute, each overriding the ones before. An object
// labelled or annotated kustomize.toolkit.fluxcd.io/substitute: disabled
// is left as it is. A change to a variable syncs the app as a new
// revision would.
type PostBuild struct {
	// Substitute are variables by name ([_a-zA-Z][_a-zA-Z0-9]*).
	// +kubebuilder:validation:MaxProperties=256
	// +optional
	Substitute map[string]string `json:"substitute,omitempty"`
	// SubstituteFrom are ConfigMaps and Secrets in the Application's
	// namespace whose every key is a variable, read as the app's account.
	// +kubebuilder:validation:MaxItems=16
	// +optional
	SubstituteFrom []SubstituteReference `json:"substituteFrom,omitempty"`
	// Strict makes a reference to a variable that is not defined (and
	// has no default) an error naming it, instead of the empty string.
	// +optional
	Strict bool `json:"strict,omitempty"`
}

// SubstituteReference names a ConfigMap or Secret of variables.
type SubstituteReference struct {
	// +kubebuilder:validation:Enum=ConfigMap;Secret
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Optional lets the object be missing.
	// +optional
	Optional bool `json:"optional,omitempty"`
}

// ValuesReference names Helm values in a ConfigMap or Secret.
type ValuesReference struct {
	// +kubebuilder:validation:Enum=ConfigMap;Secret
	Kind string `json:"kind"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Key holds the values as YAML; default "values.yaml".
	// +optional
	Key string `json:"key,omitempty"`
	// Optional lets the object or key be missing.
	// +optional
	Optional bool `json:"optional,omitempty"`
}

// OCISource is manifests shipped as an OCI artifact (`flux push
// artifact`, `converge push artifact`, or an image whose layer is a
// gzipped tar of them): Flux's OCIRepository.
// +kubebuilder:validation:XValidation:rule="[has(self.tag), has(self.semver), has(self.digest)].filter(x, x).size() <= 1",message="set at most one of tag, semver and digest"
type OCISource struct {
	// URL is the artifact's repository: oci://registry.example.com/org/app.
	// +kubebuilder:validation:Pattern=`^oci://[^/@\s]+/[^@\s]+$`
	URL string `json:"url"`
	// Tag, Semver (the highest tag in the range) or Digest; none: latest.
	// +optional
	Tag string `json:"tag,omitempty"`
	// +optional
	Semver string `json:"semver,omitempty"`
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	// +optional
	Digest string `json:"digest,omitempty"`
	// SecretRef names a Secret in the Application's namespace with
	// "username" and "password", or "token", and/or "ca.crt".
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Insecure allows plain http to the registry.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// Verify, when set, refuses an artifact that is not signed by cosign
	// with one of the keys of its Secret, before anything of it is
	// extracted or rendered (Flux's OCIRepository verify).
	// +optional
	Verify *OCIVerification `json:"verify,omitempty"`
	// LayerSelector picks the layer that holds the content by its media
	// type (Flux's layerSelector); it must be a gzipped tar, extracted.
	// Default: the first layer of Flux's content type or a plain image
	// layer.
	// +optional
	LayerSelector *OCILayerSelector `json:"layerSelector,omitempty"`
}

// OCILayerSelector picks an artifact's content layer.
type OCILayerSelector struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=255
	MediaType string `json:"mediaType"`
	// Operation is extract (the only one: the layer is a gzipped tar).
	// Flux's copy (the layer kept as one file) is refused by name.
	// +kubebuilder:validation:Enum=extract;copy
	// +optional
	Operation string `json:"operation,omitempty"`
}

// OCIVerification says which cosign signatures an artifact needs.
type OCIVerification struct {
	// Provider is cosign.
	// +kubebuilder:validation:Enum=cosign
	Provider string `json:"provider"`
	// SecretRef names a Secret in the Application's namespace. With keys:
	// its keys ending in .pub hold cosign public keys (PEM). Keyless
	// (MatchOIDCIdentity): it holds the Sigstore trust material,
	// fulcio.crt.pem (the Fulcio root and intermediate certificates),
	// rekor.pub (the Rekor log's public key: a signature's Rekor bundle is
	// required and checked offline) and, optionally, ctfe.pub (the
	// certificate transparency log's key: the certificate's SCT is then
	// required). Sigstore's public-good instance publishes these; nothing
	// is fetched at verification time.
	SecretRef LocalObjectReference `json:"secretRef"`
	// MatchOIDCIdentity makes the verification keyless, as Flux's: the
	// signature's certificate, issued by the Fulcio roots of SecretRef,
	// must name an OIDC issuer and subject that one entry matches (regular
	// expressions, anchored).
	// +kubebuilder:validation:MaxItems=16
	// +optional
	MatchOIDCIdentity []OIDCIdentityMatch `json:"matchOIDCIdentity,omitempty"`
}

// OIDCIdentityMatch is a keyless signer's identity: regular expressions
// over the certificate's OIDC issuer and subject (an email, a workflow's
// URL).
type OIDCIdentityMatch struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Issuer string `json:"issuer"`
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=1024
	Subject string `json:"subject"`
}

// ChartSource is a chart in a Helm repository or an OCI registry.
type ChartSource struct {
	// RepoURL is a Helm repository (https://, or http://) or an OCI
	// registry path (oci://registry.example.com/charts).
	// +kubebuilder:validation:Pattern=`^(https?|oci)://`
	RepoURL string `json:"repoURL"`
	// Name is the chart's name (in an OCI registry, the last element of
	// its repository).
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// Version is an exact version or a semver range ("4.x", ">=1.2 <2");
	// empty follows the newest version that is not a pre-release.
	// +optional
	Version string `json:"version,omitempty"`
	// Digest, when set, must be the chart's ("sha256:<hex>"): the
	// archive's for a Helm repository, the manifest's for a registry.
	// +kubebuilder:validation:Pattern=`^sha256:[0-9a-f]{64}$`
	// +optional
	Digest string `json:"digest,omitempty"`
	// SecretRef names a Secret in the Application's namespace with
	// "username" and "password", or "token" (a bearer token, or an OCI
	// registry token), and/or "ca.crt": a PEM bundle the repository's TLS
	// is checked with.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Insecure allows sending credentials over plain http.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
}

// JsonnetSource configures evaluating Jsonnet. Imports resolve next to the
// importing file, then in LibPaths, and never outside the repository.
type JsonnetSource struct {
	// ExtVars are external variables (std.extVar), as strings.
	// +optional
	ExtVars map[string]string `json:"extVars,omitempty"`
	// TLAs are top-level arguments, as strings.
	// +optional
	TLAs map[string]string `json:"tlas,omitempty"`
	// LibPaths are directories, relative to the repository root, searched
	// for imports.
	// +optional
	LibPaths []string `json:"libPaths,omitempty"`
}

// LocalObjectReference names an object in the same namespace.
type LocalObjectReference struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// ApplicationDestination is where objects go.
type ApplicationDestination struct {
	// Cluster names the Cluster the objects go to; default: the cluster
	// the Application is in. The Application, its history and inventory
	// stay here.
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
	// +kubebuilder:validation:MaxLength=253
	// +optional
	Cluster string `json:"cluster,omitempty"`
	// Namespace is given to namespaced objects that name none. Default:
	// the Application's namespace.
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// SyncPolicy says when and how an Application syncs.
type SyncPolicy struct {
	// Automated, when set, syncs every new revision and, with selfHeal,
	// every drift.
	// +optional
	Automated *AutomatedSync `json:"automated,omitempty"`
	// Interval between checks of the repository (and full resyncs).
	// +kubebuilder:default="3m"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// Retry governs failed syncs.
	// +optional
	Retry *RetryPolicy `json:"retry,omitempty"`
	// CreateNamespace creates the destination namespace when it does not
	// exist. The app then owns it: it carries NamespaceMetadata, and is
	// deleted with the app's other objects when pruned. A namespace that
	// exists already is never taken over.
	// +optional
	CreateNamespace bool `json:"createNamespace,omitempty"`
	// PruneLast prunes only once everything the sync applied is healthy
	// (Argo CD's PruneLast=true); an object carrying
	// argocd.argoproj.io/sync-options: PruneLast=true asks the same of
	// the sync that prunes it.
	// +optional
	PruneLast bool `json:"pruneLast,omitempty"`
	// NamespaceMetadata are labels and annotations for a namespace
	// created by CreateNamespace.
	// +optional
	NamespaceMetadata *NamespaceMetadata `json:"namespaceMetadata,omitempty"`
	// Timeout bounds one sync, health wait included.
	// +kubebuilder:default="5m"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// NamespaceMetadata are labels and annotations for a created namespace.
type NamespaceMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// AutomatedSync turns on automatic sync.
type AutomatedSync struct {
	// Prune deletes objects that left Git.
	// +optional
	Prune bool `json:"prune,omitempty"`
	// SelfHeal reverts live changes to owned objects as soon as they happen.
	// +optional
	SelfHeal bool `json:"selfHeal,omitempty"`
}

// RetryPolicy retries failed syncs with exponential backoff.
type RetryPolicy struct {
	// Limit is the number of retries of one revision; 0 retries forever.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Limit int32 `json:"limit,omitempty"`
	// Backoff shapes the delays.
	// +optional
	Backoff *Backoff `json:"backoff,omitempty"`
}

// Backoff is an exponential backoff: Duration, then ×Factor each time, at
// most MaxDuration.
type Backoff struct {
	// +kubebuilder:default="5s"
	// +optional
	Duration *metav1.Duration `json:"duration,omitempty"`
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:default=2
	// +optional
	Factor *int32 `json:"factor,omitempty"`
	// +kubebuilder:default="3m"
	// +optional
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`
}

// ApplicationStatus is what the agent last observed and did.
type ApplicationStatus struct {
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Shard names the agent replica that reconciles the Application, when
	// the agent runs sharded (--shards=auto).
	// +optional
	Shard string `json:"shard,omitempty"`
	// Conditions: Ready always; Reconciling and Stalled while True.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Sync is whether the cluster matches the revision.
	// +optional
	Sync SyncStatus `json:"sync,omitempty"`
	// Health is the aggregated kstatus of the Application's objects.
	// +optional
	Health HealthStatus `json:"health,omitempty"`
	// Resources is the per-object summary.
	// +optional
	Resources []ResourceStatus `json:"resources,omitempty"`
	// LastError is the last failure, naming the object; empty after a
	// successful sync.
	// +optional
	LastError string `json:"lastError,omitempty"`
	// Attempts counts consecutive failed syncs of the current revision.
	// +optional
	Attempts int32 `json:"attempts,omitempty"`
	// LastSyncTime is when the last sync that changed something finished.
	// +optional
	LastSyncTime *metav1.Time `json:"lastSyncTime,omitempty"`
	// LastHandledRequest is the value of the converge.dev/requested-at
	// annotation the agent last acted on.
	// +optional
	LastHandledRequest string `json:"lastHandledRequest,omitempty"`
	// Pin describes a pinned Application: the revision it is held at and
	// how far its branch has moved on.
	// +optional
	Pin *PinStatus `json:"pin,omitempty"`
	// Rollback is the outcome of the last rollback request.
	// +optional
	Rollback *RollbackStatus `json:"rollback,omitempty"`
}

// PinStatus says how far a pinned Application is behind its branch.
type PinStatus struct {
	Revision string `json:"revision"`
	// Branch is the branch the Application follows when not pinned.
	// +optional
	Branch string `json:"branch,omitempty"`
	// BranchRevision is the branch's tip when last checked.
	// +optional
	BranchRevision string `json:"branchRevision,omitempty"`
	// Behind counts the commits on the branch after the pinned revision;
	// -1 when unknown (more than 200, or not an ancestor).
	// +optional
	Behind int32 `json:"behind"`
}

// RollbackStatus is the outcome of a Git-native rollback.
type RollbackStatus struct {
	// Request is the id of the handled request.
	Request string `json:"request"`
	// Target is the revision whose content was restored.
	Target string `json:"target"`
	// Commit is the rollback commit pushed to the branch.
	// +optional
	Commit string `json:"commit,omitempty"`
	// Error says why the rollback was refused or failed.
	// +optional
	Error string `json:"error,omitempty"`
}

// SyncStatusCode is Synced, OutOfSync or Unknown.
type SyncStatusCode string

// Sync status codes.
const (
	SyncStatusSynced    SyncStatusCode = "Synced"
	SyncStatusOutOfSync SyncStatusCode = "OutOfSync"
	SyncStatusUnknown   SyncStatusCode = "Unknown"
)

// SyncStatus says whether the cluster matches a revision.
type SyncStatus struct {
	// +kubebuilder:validation:Enum=Synced;OutOfSync;Unknown
	// +optional
	Status SyncStatusCode `json:"status,omitempty"`
	// Revision is the commit last synced (or compared against).
	// +optional
	Revision string `json:"revision,omitempty"`
	// Commit describes that revision.
	// +optional
	Commit *CommitInfo `json:"commit,omitempty"`
	// Chart is the chart version synced, for a chart source.
	// +optional
	Chart *ChartStatus `json:"chart,omitempty"`
}

// ChartStatus names the chart version a sync used.
type ChartStatus struct {
	Name    string `json:"name"`
	Version string `json:"version"`
	Digest  string `json:"digest"`
}

// CommitInfo describes a commit.
type CommitInfo struct {
	// +optional
	Author string `json:"author,omitempty"`
	// +optional
	Subject string `json:"subject,omitempty"`
	// +optional
	Date *metav1.Time `json:"date,omitempty"`
	// Signer is the verified signature's key ("openpgp:<fingerprint>" or
	// "ssh:SHA256:..."), when spec.source.verify is set.
	// +optional
	Signer string `json:"signer,omitempty"`
}

// HealthStatusCode summarises kstatus over the Application's objects.
type HealthStatusCode string

// Health status codes.
const (
	HealthHealthy     HealthStatusCode = "Healthy"
	HealthProgressing HealthStatusCode = "Progressing"
	HealthDegraded    HealthStatusCode = "Degraded"
	HealthMissing     HealthStatusCode = "Missing"
	HealthUnknown     HealthStatusCode = "Unknown"
)

// HealthStatus is the Application's health.
type HealthStatus struct {
	// +kubebuilder:validation:Enum=Healthy;Progressing;Degraded;Missing;Unknown
	// +optional
	Status HealthStatusCode `json:"status,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

// ResourceStatus is one object of the Application.
type ResourceStatus struct {
	// +optional
	Group   string `json:"group,omitempty"`
	Version string `json:"version"`
	Kind    string `json:"kind"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	// +optional
	Status SyncStatusCode `json:"status,omitempty"`
	// +optional
	Health HealthStatusCode `json:"health,omitempty"`
	// +optional
	Message string `json:"message,omitempty"`
}

func init() {
	SchemeBuilder.Register(&Application{}, &ApplicationList{})
}
