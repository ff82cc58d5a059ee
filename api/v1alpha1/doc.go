// Package v1alpha1 holds converge's API, group converge.dev, version
// v1alpha1: the Application (what to sync from Git, where, and how) and,
// later, the SealedSecret.
//
// +kubebuilder:object:generate=true
// +groupName=converge.dev
package v1alpha1
