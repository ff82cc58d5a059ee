// Package render turns a path in a repository into the desired set: a sorted
// list of Kubernetes objects, each remembering the file (and document) it
// came from.
//
// Four kinds of source are understood, chosen by what the path holds: a
// Helm chart (Chart.yaml), a Kustomize root (kustomization.yaml), Jsonnet
// (.jsonnet files), or a directory of plain YAML and JSON manifests, read
// recursively. Helm post-renderers and the Application's Kustomize
// overrides apply to what those make.
//
// Rendering is sandboxed. Every file is read through an os.Root opened on the
// repository root, so neither a path nor a symlink can reach outside it; file
// and total sizes are bounded; Kustomize reads through the same sandbox, with
// plugins off and remote bases refused; Helm renders without a
// cluster connection. No program is run and nothing touches the network:
// renders run in worker processes of this binary (workers.go, isolate.go)
// under memory, CPU, time and output limits, kept per tenant, and, when
// asked, confined by Landlock to their roots (landlock.go).
//
// Inside the worker, after a file is read and before anything else sees
// it, SOPS-encrypted files are decrypted with the keys the options carry
// (sops.go); postBuild variables are substituted after rendering
// (substitute.go). An object still carrying SOPS metadata is refused: the
// render never yields ciphertext to apply.
//
// render knows nothing of Applications, Tenants or clusters: it is given a
// root and options (appspec makes them) and returns objects or an error
// naming the file. It must not fetch, and must not read outside the root.
package render
