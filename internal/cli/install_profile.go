package cli

import (
	"fmt"
)

// Install profiles.
const (
	// ProfileSingleTenant: one team, or a platform team deploying for
	// everyone. The agent may apply anything; Tenants, when present,
	// still bound the namespaces they govern.
	ProfileSingleTenant = "single-tenant"
	// ProfileMultiTenant: teams that do not trust each other. The agent
	// runs with --require-tenant, its own role is narrow, everything a
	// tenant's app does runs as the tenant's ServiceAccount, and admission
	// policies protect the records others rely on.
	ProfileMultiTenant = "multi-tenant"
)

// ImpersonatorRole is the ClusterRole that, bound by a RoleBinding in a
// tenant's namespace, lets the agent act there (multi-tenant profile): as
// that namespace's ServiceAccounts, and with its own identity to keep its
// records (ConfigMaps) and write the Secrets of SealedSecrets. The agent
// has no Secret or ConfigMap writes anywhere else but its own namespace,
// so an agent taken over cannot mint a token Secret for a ServiceAccount
// of kube-system or rewrite another namespace's configuration.
const ImpersonatorRole = "converge-impersonator"

// HistoryWritersGroup may write history records besides the agent, under
// the multi-tenant profile: CI systems that sync in push mode.
const HistoryWritersGroup = "converge:history-writers"

func rule(groups, resources, verbs []any) map[string]any {
	return map[string]any{"apiGroups": groups, "resources": resources, "verbs": verbs}
}

var (
	readVerbs  = []any{"get", "list", "watch"}
	writeVerbs = []any{"get", "list", "watch", "create", "update", "patch", "delete"}
)

// agentRules are the agent's cluster-wide permissions in a profile.
func agentRules(profile string) []any {
	if profile != ProfileMultiTenant {
		// The agent applies whatever Applications describe.
		return []any{
			rule([]any{"*"}, []any{"*"}, []any{"*"}),
			map[string]any{"nonResourceURLs": []any{"*"}, "verbs": []any{"get"}},
		}
	}
	return []any{
		// Its own API.
		rule([]any{"converge.dev"}, []any{"applications", "sealedsecrets", "tenants", "clusters", "applicationsets"}, []any{"get", "list", "watch", "update", "patch"}),
		rule([]any{"converge.dev"}, []any{"alerts", "notifiers", "imagerepositories", "imagepolicies", "imageupdateautomations"}, []any{"get", "list", "watch"}),
		rule([]any{"converge.dev"}, []any{"applications/status", "applications/finalizers", "sealedsecrets/status", "clusters/status", "applicationsets/status", "applicationsets/finalizers",
			"imagerepositories/status", "imagepolicies/status", "imageupdateautomations/status"}, []any{"get", "update", "patch"}),
		// Bitnami's SealedSecrets, opened with imported keys (when their
		// CRD is served).
		rule([]any{"bitnami.com"}, []any{"sealedsecrets"}, []any{"get", "list", "watch"}),
		rule([]any{"bitnami.com"}, []any{"sealedsecrets/status"}, []any{"get", "update", "patch"}),
		// The Applications ApplicationSets generate.
		rule([]any{"converge.dev"}, []any{"applications"}, []any{"create", "delete"}),
		// Its events. Its records (ConfigMaps) and the Secrets of
		// SealedSecrets it writes only where a RoleBinding to
		// ImpersonatorRole lets it (a tenant's namespaces), and in its
		// own namespace (sealing keys, certificate: a Role).
		rule([]any{"", "events.k8s.io"}, []any{"events"}, []any{"create", "update", "patch"}),
		// Reads of what it watches (owned objects, metadata only) and
		// discovery. Everything a tenant's app writes, it writes as the
		// tenant's ServiceAccount (see ImpersonatorRole).
		rule([]any{"*"}, []any{"*"}, readVerbs),
		map[string]any{"nonResourceURLs": []any{"/api", "/api/*", "/apis", "/apis/*", "/version", "/openapi/*"}, "verbs": []any{"get"}},
	}
}

// profileObjects are the objects a profile adds to the install.
func profileObjects(profile, ns string, labels map[string]any) []map[string]any {
	agent := fmt.Sprintf("system:serviceaccount:%s:converge-agent", ns)
	objs := []map[string]any{
		// Leader election and shard Leases, sealing keys (Secrets) and the
		// published certificate (a ConfigMap), in the agent's own
		// namespace only.
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": map[string]any{"name": "converge-agent-leases", "namespace": ns},
			"rules": []any{
				rule([]any{"coordination.k8s.io"}, []any{"leases"}, writeVerbs),
				rule([]any{""}, []any{"secrets", "configmaps"}, writeVerbs),
			}},
		{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": map[string]any{"name": "converge-agent-leases", "namespace": ns},
			"roleRef":  map[string]any{"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "converge-agent-leases"},
			"subjects": []any{map[string]any{"kind": "ServiceAccount", "name": "converge-agent", "namespace": ns}}},
		// The webhook, sealing (reached through the apiserver's service
		// proxy) and probe ports take connections from anywhere; metrics
		// only from the agent's namespace and namespaces labelled
		// converge.dev/scrape: "true".
		{"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": map[string]any{"name": "converge-agent", "namespace": ns},
			"spec": map[string]any{
				"podSelector": map[string]any{"matchLabels": labels},
				"policyTypes": []any{"Ingress"},
				"ingress": []any{
					map[string]any{"ports": []any{map[string]any{"port": "webhook"}, map[string]any{"port": "sealing"}, map[string]any{"port": "ui"}, map[string]any{"port": "probes"}}},
					map[string]any{"ports": []any{map[string]any{"port": "metrics"}},
						"from": []any{
							map[string]any{"podSelector": map[string]any{}},
							map[string]any{"namespaceSelector": map[string]any{"matchLabels": map[string]any{"converge.dev/scrape": "true"}}},
						}},
				},
			}},
	}
	objs = append(objs, admissionPolicy("converge-requested-by", requestedByPolicy(agent))...)
	if profile == ProfileMultiTenant {
		objs = append(objs,
			map[string]any{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": map[string]any{"name": ImpersonatorRole},
				"rules": []any{
					rule([]any{""}, []any{"serviceaccounts"}, []any{"impersonate"}),
					rule([]any{""}, []any{"configmaps", "secrets"}, writeVerbs),
				}})
		objs = append(objs, admissionPolicy("converge-history-records", historyPolicy(agent))...)
	}
	return objs
}

// admissionPolicy is a ValidatingAdmissionPolicy and its cluster-wide
// binding (deny).
func admissionPolicy(name string, spec map[string]any) []map[string]any {
	return []map[string]any{
		{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy", "metadata": map[string]any{"name": name}, "spec": spec},
		{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": map[string]any{"name": name},
			"spec": map[string]any{"policyName": name, "validationActions": []any{"Deny"}}},
	}
}

// requestedByPolicy lets a user name only themselves as the requester of
// a sync: whenever converge.dev/requested-at or converge.dev/requested-by
// is set or changed on an Application, requested-by must be the user's
// own name. The agent (which stamps "webhook") is exempt.
func requestedByPolicy(agent string) map[string]any {
	const at, by = "'converge.dev/requested-at'", "'converge.dev/requested-by'"
	ann := func(obj, key string) string {
		return fmt.Sprintf("(%[1]s != null && has(%[1]s.metadata.annotations) && %[2]s in %[1]s.metadata.annotations ? %[1]s.metadata.annotations[%[2]s] : '')", obj, key)
	}
	return map[string]any{
		"failurePolicy": "Fail",
		"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
			"apiGroups": []any{"converge.dev"}, "apiVersions": []any{"*"}, "resources": []any{"applications"},
			"operations": []any{"CREATE", "UPDATE"},
		}}},
		"matchConditions": []any{
			map[string]any{"name": "not-the-agent", "expression": fmt.Sprintf("request.userInfo.username != %q", agent)},
			map[string]any{"name": "request-changed", "expression": fmt.Sprintf("%s != %s || %s != %s", ann("object", at), ann("oldObject", at), ann("object", by), ann("oldObject", by))},
		},
		"validations": []any{map[string]any{
			"expression":        fmt.Sprintf("%s == '' || %s == request.userInfo.username", ann("object", by), ann("object", by)),
			"messageExpression": "'converge.dev/requested-by may only name the requesting user (' + request.userInfo.username + ')'",
			"reason":            "Forbidden",
		}},
	}
}

// historyPolicy lets only the agent, and members of HistoryWritersGroup,
// write history records.
func historyPolicy(agent string) map[string]any {
	isHistory := func(obj string) string {
		return fmt.Sprintf("(%[1]s != null && has(%[1]s.metadata.labels) && 'converge.dev/record' in %[1]s.metadata.labels && %[1]s.metadata.labels['converge.dev/record'] == 'history')", obj)
	}
	return map[string]any{
		"failurePolicy": "Fail",
		"matchConstraints": map[string]any{"resourceRules": []any{map[string]any{
			"apiGroups": []any{""}, "apiVersions": []any{"v1"}, "resources": []any{"configmaps"},
			"operations": []any{"CREATE", "UPDATE", "DELETE"},
		}}},
		"matchConditions": []any{
			map[string]any{"name": "history-record", "expression": isHistory("object") + " || " + isHistory("oldObject")},
		},
		"validations": []any{map[string]any{
			"expression":        fmt.Sprintf("request.userInfo.username == %q || %q in request.userInfo.groups", agent, HistoryWritersGroup),
			"messageExpression": "'history records are written by the converge agent only, not by ' + request.userInfo.username",
			"reason":            "Forbidden",
		}},
	}
}
