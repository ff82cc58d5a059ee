package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ImageRepository scans a container registry for an image's tags, as
// Flux's ImageRepository does. The registry is reached as the
// namespace's Tenant allows (its imageRepos), through the agent's address
// policy, with credentials read as the Tenant's account. A scan is
// bounded in tags, bytes and time; it writes the status only when the
// tags it found changed.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=converge
// +kubebuilder:printcolumn:name="Image",type=string,JSONPath=`.spec.image`
// +kubebuilder:printcolumn:name="Tags",type=integer,JSONPath=`.status.lastScanResult.tagCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImageRepository struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ImageRepositorySpec `json:"spec"`
	// +optional
	Status ImageRepositoryStatus `json:"status,omitempty"`
}

// ImageRepositoryList is a list of ImageRepositories.
//
// +kubebuilder:object:root=true
type ImageRepositoryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageRepository `json:"items"`
}

// ImageRepositorySpec says which image to scan and how.
type ImageRepositorySpec struct {
	// Image is the repository without a tag: "registry.example.com/team/app"
	// (a name without a registry is Docker Hub's).
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	// +kubebuilder:validation:Pattern=`^[^:@\s]+(:[0-9]+)?(/[^:@\s]+)*$`
	Image string `json:"image"`
	// Interval between scans; default 5m, at least 10s.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// SecretRef names a Secret in the namespace with the registry's
	// credentials: a Docker config (".dockerconfigjson", the type
	// kubernetes.io/dockerconfigjson) or "username" and "password". It is
	// read as the Tenant's account.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Insecure reaches the registry over plain http.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// ExclusionList are regular expressions; a tag matching one is left
	// out. Default: cosign's signature, attestation and SBOM tags
	// ("^sha256-[0-9a-f]+\.(sig|att|sbom)$").
	// +kubebuilder:validation:MaxItems=32
	// +optional
	ExclusionList []string `json:"exclusionList,omitempty"`
	// TagLimit is the most tags a scan reads; a registry listing more is
	// an error naming this field, not a silent cut. Default 1000.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000
	// +optional
	TagLimit int `json:"tagLimit,omitempty"`
	// Verify, when set, counts only tags whose image is signed by cosign
	// as it says (the same check as an OCI source's).
	// +optional
	Verify *OCIVerification `json:"verify,omitempty"`
	// Suspend stops scanning.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// ImageRepositoryStatus is what the last scan found.
type ImageRepositoryStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// +optional
	LastScanResult *ImageScanResult `json:"lastScanResult,omitempty"`
}

// ImageScanResult summarises a scan.
type ImageScanResult struct {
	// TagCount is how many tags the scan kept (after exclusions).
	TagCount int `json:"tagCount"`
	// LatestTags are up to 10 of them, highest first in alphabetical
	// order, as Flux shows them.
	// +optional
	LatestTags []string `json:"latestTags,omitempty"`
	// Digest is a digest of the whole tag list: it changes when a tag
	// appears or goes.
	Digest string `json:"digest"`
	// ChangedAt is when a scan first found this tag list.
	ChangedAt metav1.Time `json:"changedAt"`
}

// ImagePolicy picks the latest tag of an ImageRepository, as Flux's
// ImagePolicy does: by semantic version, number or alphabet, over the
// tags a filter keeps.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=converge
// +kubebuilder:printcolumn:name="Repository",type=string,JSONPath=`.spec.imageRepositoryRef.name`
// +kubebuilder:printcolumn:name="Latest",type=string,JSONPath=`.status.latestRef.tag`
// +kubebuilder:printcolumn:name="Applied",type=date,JSONPath=`.status.appliedAt`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImagePolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ImagePolicySpec `json:"spec"`
	// +optional
	Status ImagePolicyStatus `json:"status,omitempty"`
}

// ImagePolicyList is a list of ImagePolicies.
//
// +kubebuilder:object:root=true
type ImagePolicyList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImagePolicy `json:"items"`
}

// ImagePolicySpec is how to choose a tag.
//
// +kubebuilder:validation:XValidation:rule="[has(self.policy.semver), has(self.policy.numerical), has(self.policy.alphabetical)].filter(x, x).size() == 1",message="policy: set exactly one of semver, numerical and alphabetical"
type ImagePolicySpec struct {
	// ImageRepositoryRef names the ImageRepository, in the policy's
	// namespace.
	ImageRepositoryRef LocalObjectReference `json:"imageRepositoryRef"`
	// Policy orders the tags.
	Policy ImagePolicyChoice `json:"policy"`
	// FilterTags keeps only the tags matching Pattern, ordering them by
	// what Extract makes of the match ("$ts", "${version}"); default the
	// whole tag.
	// +optional
	FilterTags *TagFilter `json:"filterTags,omitempty"`
	// DigestReflectionPolicy "Always" records the latest tag's digest at
	// every scan, so a tag that is pushed again (the tag stays, the digest
	// moves) is an update; "Never" (the default) records the tag only.
	// +kubebuilder:validation:Enum=Never;Always
	// +optional
	DigestReflectionPolicy string `json:"digestReflectionPolicy,omitempty"`
}

// ImagePolicyChoice is one of the orders.
type ImagePolicyChoice struct {
	// +optional
	Semver *SemverPolicy `json:"semver,omitempty"`
	// +optional
	Numerical *OrderPolicy `json:"numerical,omitempty"`
	// +optional
	Alphabetical *OrderPolicy `json:"alphabetical,omitempty"`
}

// SemverPolicy picks the highest version within Range. A prerelease
// counts only when Range names a prerelease on the same
// major.minor.patch (">=2.0.0-rc.0"), as Masterminds' semver decides.
type SemverPolicy struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=256
	Range string `json:"range"`
}

// OrderPolicy picks the highest (asc, the default) or lowest (desc)
// value.
type OrderPolicy struct {
	// +kubebuilder:validation:Enum=asc;desc
	// +optional
	Order string `json:"order,omitempty"`
}

// TagFilter keeps tags matching a regular expression.
type TagFilter struct {
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Pattern string `json:"pattern"`
	// +kubebuilder:validation:MaxLength=256
	// +optional
	Extract string `json:"extract,omitempty"`
}

// ImagePolicyStatus is the tag chosen.
type ImagePolicyStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LatestRef is the tag chosen, with its digest when known.
	// +optional
	LatestRef *ImageRef `json:"latestRef,omitempty"`
	// ObservedPreviousRef is the one chosen before it.
	// +optional
	ObservedPreviousRef *ImageRef `json:"observedPreviousRef,omitempty"`
	// AppliedAt is when an ImageUpdateAutomation last pushed LatestRef to
	// Git, and AppliedCommit that commit.
	// +optional
	AppliedAt *metav1.Time `json:"appliedAt,omitempty"`
	// +optional
	AppliedCommit string `json:"appliedCommit,omitempty"`
}

// ImageRef is an image at a tag.
type ImageRef struct {
	Name string `json:"name"`
	Tag  string `json:"tag"`
	// +optional
	Digest string `json:"digest,omitempty"`
}

// ImageUpdateAutomation writes the latest tags its ImagePolicies choose
// into the manifests of a Git repository, as Flux's does: at the fields
// marked `# {"$imagepolicy": "NAMESPACE:NAME"}` (or ":tag", ":name",
// ":digest"), keeping everything else of each file byte for byte. The
// change is one commit, pushed to Branch or to Push.Branch (then kept as
// one pull request when PullRequest is set), through the same Git code as
// a rollback. The Applications that deploy the branch sync it at once.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=converge
// +kubebuilder:printcolumn:name="Repository",type=string,JSONPath=`.spec.repoURL`
// +kubebuilder:printcolumn:name="Last push",type=string,JSONPath=`.status.lastPushCommit`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ImageUpdateAutomation struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ImageUpdateAutomationSpec `json:"spec"`
	// +optional
	Status ImageUpdateAutomationStatus `json:"status,omitempty"`
}

// ImageUpdateAutomationList is a list of ImageUpdateAutomations.
//
// +kubebuilder:object:root=true
type ImageUpdateAutomationList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ImageUpdateAutomation `json:"items"`
}

// ImageUpdateAutomationSpec says where to write and how to commit.
type ImageUpdateAutomationSpec struct {
	// RepoURL is the Git repository, as an Application's; the Tenant's
	// sourceRepos must allow it.
	// +kubebuilder:validation:Pattern=`^(https?://|ssh://|[A-Za-z0-9._-]+@[A-Za-z0-9._-]+:|file://)`
	RepoURL string `json:"repoURL"`
	// SecretRef names the Secret with credentials that may push, as an
	// Application's spec.source.secretRef.
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Insecure allows the credentials over plain http://.
	// +optional
	Insecure bool `json:"insecure,omitempty"`
	// Branch is checked out and, without Push, pushed to. Default main.
	// +optional
	Branch string `json:"branch,omitempty"`
	// Path is the directory whose YAML files are updated; default the
	// repository's root.
	// +optional
	Path string `json:"path,omitempty"`
	// Interval between runs; default 5m. A policy's new tag runs it at
	// once.
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
	// PolicySelector chooses the ImagePolicies of the namespace whose
	// markers are updated; default all. A marker naming another policy
	// (or another namespace) is left as it is.
	// +optional
	PolicySelector *metav1.LabelSelector `json:"policySelector,omitempty"`
	// Commit says who commits and how.
	// +optional
	Commit ImageCommit `json:"commit,omitempty"`
	// Push, when set, pushes to another branch, rebuilt on Branch at every
	// run (force-pushed), instead of Branch itself.
	// +optional
	Push *ImagePush `json:"push,omitempty"`
	// Suspend stops the automation.
	// +optional
	Suspend bool `json:"suspend,omitempty"`
}

// ImageCommit is a commit's author, message and signature.
type ImageCommit struct {
	// AuthorName and AuthorEmail; default "converge" and
	// converge@localhost.
	// +kubebuilder:validation:MaxLength=256
	// +optional
	AuthorName string `json:"authorName,omitempty"`
	// +kubebuilder:validation:MaxLength=256
	// +optional
	AuthorEmail string `json:"authorEmail,omitempty"`
	// MessageTemplate is a Go text/template of the message over .Updates
	// (each with .Policy, .Image, .OldTag, .NewTag, .Files) and
	// .AutomationName; default a subject naming the new tags and a line
	// per update.
	// +kubebuilder:validation:MaxLength=4096
	// +optional
	MessageTemplate string `json:"messageTemplate,omitempty"`
	// SigningKey names a Secret whose "identity" is an SSH private key
	// that signs the commits.
	// +optional
	SigningKey *LocalObjectReference `json:"signingKey,omitempty"`
}

// ImagePush sends the commit to its own branch.
type ImagePush struct {
	// +kubebuilder:validation:MinLength=1
	Branch string `json:"branch"`
	// PullRequest, when set, keeps one open pull request from Branch into
	// the automation's branch: opened at the first push, updated by later
	// ones, never duplicated.
	// +optional
	PullRequest *ImagePullRequest `json:"pullRequest,omitempty"`
}

// ImagePullRequest is the forge the pull request is opened on.
type ImagePullRequest struct {
	// Provider is github, gitlab or gitea.
	// +kubebuilder:validation:Enum=github;gitlab;gitea
	Provider string `json:"provider"`
	// URL is the forge's API base: https://api.github.com (the default
	// for github), https://gitlab.example.com, https://gitea.example.com.
	// The Tenant's notifyHosts must allow its host.
	// +optional
	URL string `json:"url,omitempty"`
	// Repository is "owner/name" (GitLab: the project's path).
	// +kubebuilder:validation:MinLength=3
	Repository string `json:"repository"`
	// SecretRef names a Secret whose "token" may open pull requests.
	SecretRef LocalObjectReference `json:"secretRef"`
}

// ImageUpdateAutomationStatus is what the last run did.
type ImageUpdateAutomationStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// LastPushCommit and LastPushTime are the last commit it pushed.
	// +optional
	LastPushCommit string `json:"lastPushCommit,omitempty"`
	// +optional
	LastPushTime *metav1.Time `json:"lastPushTime,omitempty"`
	// PullRequest is the URL of the pull request it keeps open.
	// +optional
	PullRequest string `json:"pullRequest,omitempty"`
}

func init() {
	SchemeBuilder.Register(&ImageRepository{}, &ImageRepositoryList{}, &ImagePolicy{}, &ImagePolicyList{}, &ImageUpdateAutomation{}, &ImageUpdateAutomationList{})
}
