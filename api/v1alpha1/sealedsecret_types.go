package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// AnnotationSealedSecretManaged, set to "true" on an existing Secret, lets
// a SealedSecret of the same name take it over. Without it, a Secret that
// no SealedSecret owns is never overwritten.
const AnnotationSealedSecretManaged = "converge.dev/sealed-secret-managed"

// LabelSealedSecret marks the Secrets SealedSecrets produce (the agent
// watches only those).
const LabelSealedSecret = "converge.dev/sealed-secret"

// SealedSecret is a Secret encrypted for one cluster: safe to keep in Git.
// Its values are sealed with `converge seal`; only the agent can open them,
// and it writes the Secret they describe.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:shortName=sealed,categories=converge
// +kubebuilder:printcolumn:name="Scope",type=string,JSONPath=`.spec.scope`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Reason",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].reason`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type SealedSecret struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   SealedSecretSpec   `json:"spec"`
	Status SealedSecretStatus `json:"status,omitempty"`
}

// SealedSecretList is a list of SealedSecrets.
//
// +kubebuilder:object:root=true
type SealedSecretList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []SealedSecret `json:"items"`
}

// SealedSecretSpec holds the sealed values and the shape of the Secret.
type SealedSecretSpec struct {
	// Scope is what the values are bound to: strict (this namespace and
	// name), namespace (this namespace, any name) or cluster (anywhere).
	// It must be the scope they were sealed with.
	// +kubebuilder:validation:Enum=strict;namespace;cluster
	// +kubebuilder:default=strict
	// +optional
	Scope string `json:"scope,omitempty"`

	// EncryptedData maps each key of the Secret to its sealed value
	// (base64 of the envelope, docs/design/sealing.md).
	// +kubebuilder:validation:MinProperties=1
	EncryptedData map[string]string `json:"encryptedData"`

	// Template shapes the Secret: its type, labels and annotations.
	// +optional
	Template SecretTemplate `json:"template,omitempty"`
}

// SecretTemplate is what the produced Secret carries besides its data.
type SecretTemplate struct {
	// Type is the Secret's type (default Opaque). Types that make the
	// cluster mint credentials from the Secret are refused:
	// kubernetes.io/service-account-token and bootstrap.kubernetes.io/token.
	// +kubebuilder:validation:XValidation:rule="!(self in ['kubernetes.io/service-account-token', 'bootstrap.kubernetes.io/token'])",message="this Secret type mints cluster credentials and cannot be sealed"
	// +optional
	Type string `json:"type,omitempty"`
	// +optional
	Metadata TemplateMetadata `json:"metadata,omitempty"`
}

// TemplateMetadata holds labels and annotations for the produced Secret.
type TemplateMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// SealedSecretStatus reports whether the Secret was written.
type SealedSecretStatus struct {
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// Conditions: Ready (reasons Unsealed, WrongScope, UnknownKey,
	// Tampered, Malformed, SecretNotOwned) and Stalled while a failure
	// needs a new SealedSecret to clear.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// KeyIDs are the ids of the keys the values are sealed with.
	// +optional
	KeyIDs []string `json:"keyIDs,omitempty"`
}

func init() {
	SchemeBuilder.Register(&SealedSecret{}, &SealedSecretList{})
}
