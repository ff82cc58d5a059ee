package engine

import (
	"encoding/base64"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/internal/redact"
)

// scrubSecret removes the values of a Secret from msg (redact.Secrets):
// both the base64 form in data and the decoded value, so that no error
// about a Secret can carry what it holds. Other objects are returned as
// they are.
func scrubSecret(msg string, u *unstructured.Unstructured) string {
	if u == nil || u.GetKind() != "Secret" || u.GroupVersionKind().Group != "" {
		return msg
	}
	var values []string
	for _, field := range []string{"data", "stringData"} {
		m, _, _ := unstructured.NestedMap(u.Object, field)
		for _, v := range m {
			s, ok := v.(string)
			if !ok || s == "" {
				continue
			}
			values = append(values, s)
			if field == "data" {
				if raw, err := base64.StdEncoding.DecodeString(s); err == nil && len(raw) > 0 {
					values = append(values, string(raw))
				}
			}
		}
	}
	return redact.Secrets(msg, values...)
}
