package engine

import (
	"sort"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// firstStage holds the kinds applied before anything else, because other
// objects need them to exist: CRDs (custom resources need their kinds),
// namespaces, and cluster-wide RBAC and policy.
var firstStage = map[schema.GroupKind]bool{
	{Group: "apiextensions.k8s.io", Kind: "CustomResourceDefinition"}: true,
	{Kind: "Namespace"}: true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}:        true,
	{Group: "rbac.authorization.k8s.io", Kind: "ClusterRoleBinding"}: true,
	{Group: "scheduling.k8s.io", Kind: "PriorityClass"}:              true,
	{Group: "storage.k8s.io", Kind: "StorageClass"}:                  true,
	{Group: "networking.k8s.io", Kind: "IngressClass"}:               true,
	{Group: "node.k8s.io", Kind: "RuntimeClass"}:                     true,
}

// kindRank orders kinds within a wave so that what others refer to comes
// first (accounts and config before workloads, workloads before the
// webhooks that could block them). Kinds not listed, custom resources
// included, come after the listed ones.
var kindRank = func() map[string]int {
	order := []string{
		"Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "PodDisruptionBudget",
		"ServiceAccount", "Secret", "ConfigMap", "PersistentVolume", "PersistentVolumeClaim",
		"Role", "RoleBinding", "Service", "DaemonSet", "Pod", "ReplicaSet", "Deployment",
		"StatefulSet", "HorizontalPodAutoscaler", "Job", "CronJob", "Ingress",
		"APIService", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
	}
	m := make(map[string]int, len(order))
	for i, k := range order {
		m[k] = i + 1
	}
	return m
}()

func rank(kind string) int {
	if r, ok := kindRank[kind]; ok {
		return r
	}
	return len(kindRank) + 1
}

func inFirstStage(d *desired) bool { return firstStage[d.gvk.GroupKind()] }

// batches splits objs into the groups that are applied one after another:
// by wave, then by kind rank. Objects within a batch go concurrently.
func batches(objs []*desired) [][]*desired {
	sorted := append([]*desired(nil), objs...)
	sort.SliceStable(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if a.wave != b.wave {
			return a.wave < b.wave
		}
		return rank(a.gvk.Kind) < rank(b.gvk.Kind)
	})
	var out [][]*desired
	for i, d := range sorted {
		if i == 0 || d.wave != sorted[i-1].wave || rank(d.gvk.Kind) != rank(sorted[i-1].gvk.Kind) {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], d)
	}
	return out
}

// KindOrder orders kinds as a sync applies them: the first stage (CRDs,
// namespaces, cluster-wide RBAC) before everything else, then what others
// refer to before what refers to it. Lower comes first.
func KindOrder(gk schema.GroupKind) int {
	if firstStage[gk] {
		return 0
	}
	return rank(gk.Kind)
}
