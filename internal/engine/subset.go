package engine

import "reflect"

// contains reports whether live holds every field of want with the same
// value. It is how the plan recognises an unchanged object without asking
// the server: if the last applied desired state is still fully present in
// the live object, applying it again changes nothing.
//
// It errs only towards "not contained": values the server normalises (a
// quantity written as 0.5 and stored as 500m) make it false, and the plan
// then falls back to a dry-run, which is authoritative.
func contains(live, want any) bool {
	switch w := want.(type) {
	case map[string]any:
		l, ok := live.(map[string]any)
		if !ok {
			return false
		}
		for k, wv := range w {
			lv, ok := l[k]
			if !ok {
				if wv == nil {
					continue
				}
				return false
			}
			if !contains(lv, wv) {
				return false
			}
		}
		return true
	case []any:
		l, ok := live.([]any)
		if !ok || len(l) != len(w) {
			return false
		}
		for i := range w {
			if !contains(l[i], w[i]) {
				return false
			}
		}
		return true
	case nil:
		return live == nil
	}
	if a, ok := number(live); ok {
		if b, ok := number(want); ok {
			return a == b
		}
	}
	return reflect.DeepEqual(live, want)
}

func number(v any) (float64, bool) {
	switch n := v.(type) {
	case int64:
		return float64(n), true
	case int:
		return float64(n), true
	case int32:
		return float64(n), true
	case float64:
		return n, true
	}
	return 0, false
}
