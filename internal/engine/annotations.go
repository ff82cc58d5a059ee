package engine

import (
	"fmt"
	"strconv"
	"strings"
)

// Annotations of other tools that converge honours, so that repositories
// written for Argo CD, Flux or Helm mean the same here. docs/compat.md
// has the table.
const (
	argoSyncWave       = "argocd.argoproj.io/sync-wave"
	argoSyncOptions    = "argocd.argoproj.io/sync-options"
	argoCompareOptions = "argocd.argoproj.io/compare-options"
	fluxPrune          = "kustomize.toolkit.fluxcd.io/prune"
	fluxSSA            = "kustomize.toolkit.fluxcd.io/ssa"
	fluxForce          = "kustomize.toolkit.fluxcd.io/force"
	fluxReconcile      = "kustomize.toolkit.fluxcd.io/reconcile"
	helmResourcePolicy = "helm.sh/resource-policy"
)

// syncWave is an object's wave: converge.dev/sync-wave, else Argo CD's
// sync-wave; 0 when neither is set.
func syncWave(ann map[string]string) (int, error) {
	for _, key := range []string{AnnotationSyncWave, argoSyncWave} {
		if w, ok := ann[key]; ok {
			n, err := strconv.Atoi(strings.TrimSpace(w))
			if err != nil {
				return 0, fmt.Errorf("annotation %s: %q is not an integer", key, w)
			}
			return n, nil
		}
	}
	return 0, nil
}

// argoSyncOption reports whether Argo CD's comma-separated sync-options hold
// name=value (case-insensitive, as Argo CD reads them).
func argoSyncOption(ann map[string]string, name, value string) bool {
	for _, opt := range strings.Split(ann[argoSyncOptions], ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(opt), "=")
		if strings.EqualFold(k, name) && strings.EqualFold(v, value) {
			return true
		}
	}
	return false
}

// keepOnPrune says why an owned object that left the source is kept
// instead of pruned ("" to prune it), from the annotations on the live
// object: converge.dev/prune: "false", Argo CD's Prune=false, Flux's
// prune: disabled, and Helm's resource-policy: keep.
func keepOnPrune(ann map[string]string) string {
	switch {
	case ann[AnnotationPrune] == "false":
		return AnnotationPrune + `: "false"`
	case argoSyncOption(ann, "Prune", "false"):
		return argoSyncOptions + ": Prune=false"
	case argoSyncOption(ann, "Prune", "confirm"):
		// Argo CD waits for a person's confirmation; converge has none
		// to wait for, so it keeps the object and says so.
		return argoSyncOptions + ": Prune=confirm (delete it by hand once confirmed)"
	case strings.EqualFold(ann[fluxPrune], "disabled"):
		return fluxPrune + ": disabled"
	case ann[helmResourcePolicy] == "keep":
		return helmResourcePolicy + ": keep"
	}
	return ""
}

// keepOnDelete says why an owned object is kept when its app is deleted
// ("" to delete it): whatever keeps it from pruning, and converge.dev/delete:
// "false" or Argo CD's Delete=false, which teams put on PVCs, CRDs and
// Namespaces that must outlive the app.
func keepOnDelete(ann map[string]string) string {
	switch {
	case ann[AnnotationDelete] == "false":
		return AnnotationDelete + `: "false"`
	case argoSyncOption(ann, "Delete", "false"):
		return argoSyncOptions + ": Delete=false"
	case argoSyncOption(ann, "Delete", "confirm"):
		return argoSyncOptions + ": Delete=confirm (delete it by hand once confirmed)"
	}
	return keepOnPrune(ann)
}

// keep is keepOnDelete while the app is being deleted, keepOnPrune
// otherwise.
func keep(ann map[string]string, appDeleted bool) string {
	if appDeleted {
		return keepOnDelete(ann)
	}
	return keepOnPrune(ann)
}

// forceReplace says an object whose change touches an immutable field may
// be deleted and recreated: converge.dev/force, Argo CD's Replace=true or
// Force=true, Flux's force: enabled.
func forceReplace(ann map[string]string) bool {
	return ann[AnnotationForce] == "true" ||
		argoSyncOption(ann, "Replace", "true") || argoSyncOption(ann, "Force", "true") ||
		strings.EqualFold(ann[fluxForce], "enabled")
}

// applyMode is how an object is applied.
type applyMode int

const (
	applyAlways applyMode = iota
	// applyIfAbsent creates the object when it does not exist and never
	// changes it after (Flux's ssa: IfNotPresent).
	applyIfAbsent
	// applyNever leaves the object out of the sync (Flux's ssa: Ignore and
	// reconcile: disabled).
	applyNever
)

func applyModeOf(ann map[string]string) (applyMode, error) {
	switch ssa := ann[fluxSSA]; {
	case ssa == "" || strings.EqualFold(ssa, "Merge") || strings.EqualFold(ssa, "Override"):
	case strings.EqualFold(ssa, "IfNotPresent"):
		return applyIfAbsent, nil
	case strings.EqualFold(ssa, "Ignore"):
		return applyNever, nil
	default:
		return 0, fmt.Errorf("annotation %s: %q is not one of Merge, IfNotPresent, Ignore", fluxSSA, ssa)
	}
	if strings.EqualFold(ann[fluxReconcile], "disabled") {
		return applyNever, nil
	}
	return applyAlways, nil
}
