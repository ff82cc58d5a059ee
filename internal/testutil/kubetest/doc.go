// Package kubetest is the test harness shared by converge's package tests and
// end-to-end tests. Package tests run against a real kube-apiserver and etcd
// started by controller-runtime's envtest from the binaries the local cluster
// builds (KUBEBUILDER_ASSETS, set by the Makefile); end-to-end tests run
// against the local cluster itself (make cluster-up). Either way each test
// gets a namespace of its own, and waits poll a condition, never a clock.
package kubetest
