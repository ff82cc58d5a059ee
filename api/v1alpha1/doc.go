// Package v1alpha1 holds converge's API, group converge.dev, version
// v1alpha1: the Application (what to sync, from where, to where, and how),
// the ApplicationSet (Applications from generators), the Tenant (what a
// team's Applications may do), the Cluster (another cluster to deploy to)
// and the SealedSecret (a Secret encrypted one way for this cluster).
//
// +kubebuilder:object:generate=true
// +groupName=converge.dev
package v1alpha1
