package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Cluster is a Kubernetes cluster Applications may deploy to
// (spec.destination.cluster). It holds the apiserver's address and CA and
// names the Secret with the credentials converge uses there.
//
// Clusters are cluster-scoped and their credentials live only in the
// agent's own namespace: registering a cluster, or pointing one at a
// Secret, takes a platform admin's rights; a tenant who may create
// Applications in its namespaces can only name a Cluster its Tenant
// allows (spec.clusters), and can make the agent read no Secret of its
// choosing.
//
// Credentials are a bearer token or a client certificate. Kubeconfig exec
// plugins and auth providers are not accepted: they would run programs in
// the agent.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,categories=converge
// +kubebuilder:printcolumn:name="Server",type=string,JSONPath=`.spec.server`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Version",type=string,JSONPath=`.status.version`
// +kubebuilder:printcolumn:name="Apps",type=integer,JSONPath=`.status.applications`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Cluster struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec ClusterSpec `json:"spec"`
	// +optional
	Status ClusterStatus `json:"status,omitempty"`
}

// ClusterList is a list of Clusters.
//
// +kubebuilder:object:root=true
type ClusterList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Cluster `json:"items"`
}

// ClusterSpec says how to reach a cluster.
type ClusterSpec struct {
	// Server is the apiserver's URL.
	// +kubebuilder:validation:Pattern=`^https://[^/@\s]+(/[^@\s]*)?$`
	Server string `json:"server"`
	// CAData is the PEM bundle the apiserver's certificate must chain to;
	// default: the Secret's ca.crt, else the system's roots.
	// +optional
	CAData []byte `json:"caData,omitempty"`
	// TLSServerName, if set, is the name the apiserver's certificate is
	// checked against instead of the URL's host.
	// +optional
	TLSServerName string `json:"tlsServerName,omitempty"`
	// SecretRef names a Secret in the agent's namespace holding "token"
	// (a bearer token) or "tls.crt" and "tls.key" (a client certificate),
	// and optionally "ca.crt".
	SecretRef LocalObjectReference `json:"secretRef"`
}

// ClusterStatus is what the agent last saw of the cluster.
type ClusterStatus struct {
	// Conditions: Ready is True while the apiserver answers with these
	// credentials (reason Reachable), else False (ClusterUnreachable,
	// CredentialsInvalid).
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
	// Version is the apiserver's version (v1.31.2).
	// +optional
	Version string `json:"version,omitempty"`
	// Applications counts the Applications deploying to the cluster.
	// +optional
	Applications int32 `json:"applications,omitempty"`
	// ObservedGeneration is the generation the status describes.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
}

// Reasons of a Cluster's Ready condition, and of the Applications on it.
const (
	// ReasonReachable: the apiserver answered the last probe.
	ReasonReachable = "Reachable"
	// ReasonClusterUnreachable: the destination cluster's apiserver does
	// not answer; only that cluster's Applications say so.
	ReasonClusterUnreachable = "ClusterUnreachable"
	// ReasonCredentialsInvalid: the Cluster's Secret is missing or
	// malformed, or the apiserver refused its credentials.
	ReasonCredentialsInvalid = "CredentialsInvalid"
	// ReasonClusterNotFound: an Application names a Cluster that does not
	// exist.
	ReasonClusterNotFound = "ClusterNotFound"
)

func init() {
	SchemeBuilder.Register(&Cluster{}, &ClusterList{})
}
