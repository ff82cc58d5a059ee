package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// ApplicationSet generates Applications: a template, filled in once per
// parameter set its generators produce (a list, the Clusters matching a
// selector, the directories or the files of a Git repository, or the
// product of two). The Applications it makes are its own (owner
// reference and the converge.dev/application-set label), in its own
// namespace; its policy says whether it may update and delete them.
//
// A generator that fails, or that produces nothing while the set owns
// Applications (a Git outage, an emptied directory), never deletes them:
// the set says so in its Ready condition and keeps them.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=appset,categories=converge
// +kubebuilder:printcolumn:name="Apps",type=integer,JSONPath=`.status.applicationCount`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type ApplicationSet struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ApplicationSetSpec `json:"spec"`
	// +optional
	Status ApplicationSetStatus `json:"status,omitempty"`
}

// ApplicationSetList is a list of ApplicationSets.
//
// +kubebuilder:object:root=true
type ApplicationSetList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []ApplicationSet `json:"items"`
}

// ApplicationSetSpec is what to generate and how to manage it.
type ApplicationSetSpec struct {
	// Generators produce parameter sets; the template is filled in once
	// per set, all generators' sets together. What a set may produce is
	// bounded (docs/security.md): 5,000 parameter sets, 256 parameters
	// each, 16 KiB a value, 16 MiB of parameters, 16 MiB of parameter
	// files, 512 KiB a filled template and 64 MiB of them in all; past
	// one, the set fails with LimitExceeded naming it.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=16
	Generators []Generator `json:"generators"`

	// Template is an Application, "{{name}}"-style placeholders in any
	// of its strings replaced by a parameter set's values (no
	// expressions, no functions). A placeholder naming no parameter is
	// an error.
	Template ApplicationTemplate `json:"template"`

	// Policy says what the set may do to the Applications it owns:
	// sync (create, update, and delete those no longer generated; the
	// default), create-update (never delete) or create-only.
	// +kubebuilder:validation:Enum=sync;create-update;create-only
	// +kubebuilder:default=sync
	// +optional
	Policy string `json:"policy,omitempty"`

	// Strategy, if set, rolls changes out in steps (below).
	// +optional
	Strategy *RolloutStrategy `json:"strategy,omitempty"`

	// Interval between looks at the generators' sources (Git, Clusters).
	// +kubebuilder:default="3m"
	// +optional
	Interval *metav1.Duration `json:"interval,omitempty"`
}

// ApplicationTemplate is the Application each parameter set makes.
type ApplicationTemplate struct {
	// Metadata: name (required, usually from a parameter), labels and
	// annotations. The namespace is always the set's.
	Metadata ApplicationTemplateMeta `json:"metadata"`
	// Spec is an Application's spec with placeholders. It is checked
	// once filled in (an unknown field is an error naming it), and then
	// by the Application's own validation.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Type=object
	Spec runtime.RawExtension `json:"spec"`
}

// ApplicationTemplateMeta is a generated Application's metadata.
type ApplicationTemplateMeta struct {
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Generator produces parameter sets; exactly one of its fields is set.
// +kubebuilder:validation:MaxProperties=1
// +kubebuilder:validation:MinProperties=1
type Generator struct {
	// +optional
	List *ListGenerator `json:"list,omitempty"`
	// +optional
	Clusters *ClustersGenerator `json:"clusters,omitempty"`
	// +optional
	Git *GitGenerator `json:"git,omitempty"`
	// +optional
	Matrix *MatrixGenerator `json:"matrix,omitempty"`
}

// ListGenerator produces its elements, each a map of parameters.
type ListGenerator struct {
	// Elements: at most 5,000, each of at most 256 parameters.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=5000
	// +kubebuilder:validation:items:MaxProperties=256
	Elements []map[string]string `json:"elements"`
}

// ClustersGenerator produces one parameter set per Cluster matching
// Selector: name, server, and labels.<key> for each of its labels, plus
// Values.
type ClustersGenerator struct {
	// Selector picks Clusters by label; empty matches every Cluster.
	// +optional
	Selector metav1.LabelSelector `json:"selector,omitempty"`
	// Values are added to each set.
	// +kubebuilder:validation:MaxProperties=128
	// +optional
	Values map[string]string `json:"values,omitempty"`
}

// GitGenerator reads a repository, through the same cache as
// Applications: one parameter set per matching directory (path,
// path.basename, path[0], path[1], ...) or per matching file (its keys,
// nested ones joined with dots, plus path and path.basename of its
// directory; a file holding a list makes one set per element).
type GitGenerator struct {
	// RepoURL, Ref and SecretRef are as in an Application's source.
	// +kubebuilder:validation:MinLength=1
	RepoURL string `json:"repoURL"`
	// +optional
	Ref *GitRef `json:"ref,omitempty"`
	// +optional
	SecretRef *LocalObjectReference `json:"secretRef,omitempty"`
	// Verify requires the revision read to be signed by a trusted key,
	// as an Application's source.verify does. A set whose template
	// verifies its Applications' sources must verify its Git generators
	// too (refused otherwise, naming this field).
	// +optional
	Verify *SourceVerification `json:"verify,omitempty"`
	// Directories are glob patterns ("apps/*"); one with exclude drops
	// what it matches.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Directories []GitPathPattern `json:"directories,omitempty"`
	// Files are glob patterns ("clusters/*/config.yaml") of YAML or JSON
	// files.
	// +kubebuilder:validation:MaxItems=64
	// +optional
	Files []GitPathPattern `json:"files,omitempty"`
}

// GitPathPattern is a glob pattern over paths in the repository.
type GitPathPattern struct {
	// +kubebuilder:validation:MinLength=1
	Path string `json:"path"`
	// +optional
	Exclude bool `json:"exclude,omitempty"`
}

// MatrixGenerator produces every combination of its two generators'
// sets (each pair merged; the second's values win).
type MatrixGenerator struct {
	// +kubebuilder:validation:MinItems=2
	// +kubebuilder:validation:MaxItems=2
	Generators []NestedGenerator `json:"generators"`
}

// NestedGenerator is a generator inside a matrix (no matrix in a
// matrix).
// +kubebuilder:validation:MaxProperties=1
// +kubebuilder:validation:MinProperties=1
type NestedGenerator struct {
	// +optional
	List *ListGenerator `json:"list,omitempty"`
	// +optional
	Clusters *ClustersGenerator `json:"clusters,omitempty"`
	// +optional
	Git *GitGenerator `json:"git,omitempty"`
}

// RolloutStrategy rolls a set's Applications out in steps: the apps of
// each step sync a revision only once every app of the step before is
// Synced and Healthy at that same revision (they depend on them). Apps no
// step selects come after the last step. A failing step holds the rest,
// and the set's status says which apps it waits for.
type RolloutStrategy struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Steps []RolloutStep `json:"steps"`
}

// RolloutStep selects the generated Applications of one step by their
// labels.
type RolloutStep struct {
	Selector metav1.LabelSelector `json:"selector"`
}

// ApplicationSetStatus is what the set last generated.
type ApplicationSetStatus struct {
	// Conditions: Ready is True when every generator answered and every
	// Application is as generated (reason Generated); False with
	// GeneratorFailed, EmptyGenerator (nothing generated, owned apps
	// kept), TemplateFailed or ApplicationConflict.
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// ApplicationCount is how many Applications the set owns.
	// +optional
	ApplicationCount int32 `json:"applicationCount,omitempty"`
	// Applications are their names, in order.
	// +optional
	Applications []string `json:"applications,omitempty"`
	// Steps report the rollout, step by step.
	// +optional
	Steps []RolloutStepStatus `json:"steps,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// RolloutStepStatus is one step's progress.
type RolloutStepStatus struct {
	// Selector is the step's selector, as text.
	Selector string `json:"selector"`
	// Applications in the step, and how many are Synced and Healthy.
	Applications int32 `json:"applications"`
	Ready        int32 `json:"ready"`
	// Waiting names, for a step not done, the apps not ready yet and why.
	// +optional
	Waiting string `json:"waiting,omitempty"`
}

// LabelApplicationSet marks the Applications a set generated.
const LabelApplicationSet = "converge.dev/application-set"

// Reasons of an ApplicationSet's Ready condition.
const (
	ReasonGenerated           = "Generated"
	ReasonGeneratorFailed     = "GeneratorFailed"
	ReasonEmptyGenerator      = "EmptyGenerator"
	ReasonTemplateFailed      = "TemplateFailed"
	ReasonApplicationConflict = "ApplicationConflict"
	// ReasonLimitExceeded: the set's input passed one of the limits on
	// what a set may produce (count, keys, bytes); the message names the
	// generator and the limit.
	ReasonLimitExceeded = "LimitExceeded"
)

func init() {
	SchemeBuilder.Register(&ApplicationSet{}, &ApplicationSetList{})
}
