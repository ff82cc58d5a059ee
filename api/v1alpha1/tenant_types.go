package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Tenant bounds what the Applications in a set of namespaces may do: which
// repositories they may use, where their objects may go, which kinds they
// may apply, and the ServiceAccount every one of them runs as. Tenants are
// cluster-scoped: a team that may create Applications in its namespaces
// cannot edit the Tenant that bounds them.
//
// An Application governed by a Tenant that breaks one of its rules is
// refused (Ready=False, Stalled=True, reason PolicyViolation) and nothing
// of it is applied.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=converge
// +kubebuilder:printcolumn:name="Namespaces",type=string,JSONPath=`.spec.namespaces`
// +kubebuilder:printcolumn:name="ServiceAccount",type=string,JSONPath=`.spec.serviceAccountName`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Tenant struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TenantSpec `json:"spec"`
}

// TenantList is a list of Tenants.
//
// +kubebuilder:object:root=true
type TenantList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Tenant `json:"items"`
}

// TenantSpec is a tenant's policy.
type TenantSpec struct {
	// Namespaces whose Applications this Tenant governs: names, or glob
	// patterns ("team-a-*"). A namespace governed by two Tenants is an
	// error for its Applications.
	// +kubebuilder:validation:MinItems=1
	Namespaces []string `json:"namespaces"`

	// ServiceAccountName is the ServiceAccount, in each Application's own
	// namespace, that the agent impersonates to read the app's Secrets and
	// to plan, apply and prune its objects. An Application naming another
	// account is refused.
	// +kubebuilder:validation:MinLength=1
	ServiceAccountName string `json:"serviceAccountName"`

	// SourceRepos are the repositories the tenant's Applications may use,
	// as host/path patterns over the normalized URL (scheme, user, ".git"
	// and default ports dropped): "git.example.com/team-a/*" allows every
	// repository under team-a on any scheme. Empty allows none.
	// +optional
	SourceRepos []string `json:"sourceRepos,omitempty"`

	// ChartRepos are the Helm repositories and OCI registries the
	// tenant's charts may come from, as patterns like SourceRepos
	// ("charts.example.com/**", "registry.example.com/team-a/*"). They
	// are matched against the chart source's repository, the chart URL
	// its index lists and every dependency's repository. Empty: the
	// patterns of SourceRepos.
	// +optional
	ChartRepos []string `json:"chartRepos,omitempty"`

	// ImageRepos are the image repositories the tenant's ImageRepositories
	// may scan, as patterns over "registry/path" ("registry.example.com/team-a/*",
	// "ghcr.io/org/**"). Empty allows none: an ImageRepository is refused,
	// naming this field, before the registry is asked anything.
	// +optional
	ImageRepos []string `json:"imageRepos,omitempty"`
	// NotifyHosts are the hosts the tenant's Applications may send
	// notifications and commit statuses to ("hooks.slack.com",
	// "*.example.com", with a port or not). Empty allows none: an
	// Application with notify targets is refused, naming this field.
	// +optional
	NotifyHosts []string `json:"notifyHosts,omitempty"`

	// DestinationNamespaces are the namespaces the tenant's objects may go
	// to: names or glob patterns. Default: the Tenant's Namespaces.
	// +optional
	DestinationNamespaces []string `json:"destinationNamespaces,omitempty"`

	// Clusters are the Clusters (by name or glob pattern) the tenant's
	// Applications may deploy to, as its ServiceAccount impersonated
	// there. Default: none, only the agent's own cluster.
	// +optional
	Clusters []string `json:"clusters,omitempty"`

	// ClusterResources are the cluster-scoped kinds the tenant may apply
	// ("*" matches any group or kind). Default: none. A Namespace allowed
	// here must still match DestinationNamespaces.
	// +optional
	ClusterResources []GroupKind `json:"clusterResources,omitempty"`

	// DeniedResources are kinds the tenant may never apply, in any
	// namespace.
	// +optional
	DeniedResources []GroupKind `json:"deniedResources,omitempty"`

	// Adopt says when a sync may take over an existing object that no app
	// owns: Never, Annotated (only a manifest annotated
	// converge.dev/adopt: "true"; the default) or Always. An object owned
	// by another app is never taken.
	// +kubebuilder:validation:Enum=Never;Annotated;Always
	// +kubebuilder:default=Annotated
	// +optional
	Adopt string `json:"adopt,omitempty"`

	// SyncWindows say when automated syncs (new revisions, drift repairs)
	// may run. With any allow window, only inside an open one; never
	// inside an open deny window (deny wins). Outside, apps report
	// OutOfSync and wait. Manual syncs (`converge sync APP`, webhooks)
	// pass unless a window says manualSync: false.
	// +optional
	SyncWindows []SyncWindow `json:"syncWindows,omitempty"`
}

// SyncWindow is a weekly time window.
type SyncWindow struct {
	// Kind is allow or deny.
	// +kubebuilder:validation:Enum=allow;deny
	Kind string `json:"kind"`
	// Days are the days it opens on (Mon, Tue, ... Sun); empty: every day.
	// +optional
	Days []string `json:"days,omitempty"`
	// Start and End are "HH:MM" in TimeZone; an End before Start closes
	// the next day.
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	Start string `json:"start"`
	// +kubebuilder:validation:Pattern=`^([01][0-9]|2[0-3]):[0-5][0-9]$`
	End string `json:"end"`
	// TimeZone is an IANA name; default UTC.
	// +optional
	TimeZone string `json:"timeZone,omitempty"`
	// ManualSync lets manual syncs through while this window blocks
	// automated ones. Default true.
	// +optional
	ManualSync *bool `json:"manualSync,omitempty"`
}

// GroupKind names a kind; "*" matches any group or any kind.
type GroupKind struct {
	// Group is the API group, "" for the core group.
	// +optional
	Group string `json:"group"`
	// +kubebuilder:validation:MinLength=1
	Kind string `json:"kind"`
}

func init() {
	SchemeBuilder.Register(&Tenant{}, &TenantList{})
}
