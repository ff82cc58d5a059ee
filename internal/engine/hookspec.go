package engine

// The hooks' vocabulary: their annotations, phases, occasions, delete
// policies and weights, and the order they run in. Running them is in
// hooks.go.

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"converge.dev/converge/internal/render"
)

// Hook annotations: converge's own, Argo CD's and Helm's (render holds the
// list of those that make an object a hook, in the order they win). An object that
// carries one is a hook, not part of the desired set: it runs at its phase
// of a sync, is never in the inventory and so is never drift.
const (
	AnnotationHook             = render.AnnotationHook
	AnnotationHookDeletePolicy = "converge.dev/hook-delete-policy"
	// LabelHook marks a hook object with the name of its app. Hooks do
	// not carry LabelApp: the app's watches never see them.
	LabelHook = "converge.dev/hook-of"

	argoHook             = render.AnnotationArgoHook
	argoHookDeletePolicy = "argocd.argoproj.io/hook-delete-policy"
	helmHook             = render.AnnotationHelmHook
	helmHookWeight       = "helm.sh/hook-weight"
	helmHookDeletePolicy = "helm.sh/hook-delete-policy"
)

// HookPhase is when in a sync a hook runs.
type HookPhase string

// Hook phases, in the order a sync runs them. SyncFail runs instead of the
// rest when a sync fails.
const (
	PhasePreSync    HookPhase = "PreSync"
	PhaseSync       HookPhase = "Sync"
	PhasePostSync   HookPhase = "PostSync"
	PhaseSyncFail   HookPhase = "SyncFail"
	PhasePreDelete  HookPhase = "PreDelete"
	PhasePostDelete HookPhase = "PostDelete"
)

// occasion says on which syncs a hook phase applies: Helm's pre-install
// runs on an app's first sync only, pre-upgrade on later ones.
type occasion uint8

const (
	onInstall occasion = 1 << iota
	onUpgrade
	always = onInstall | onUpgrade
)

// Hook delete policies.
const (
	deleteBeforeCreation = "BeforeHookCreation"
	deleteOnSuccess      = "HookSucceeded"
	deleteOnFailure      = "HookFailed"
)

// hook is one hook object of a desired set.
type hook struct {
	*desired
	phases map[HookPhase]occasion
	weight int
	// deletePolicy holds the delete policies; BeforeHookCreation when the
	// manifest names none.
	deletePolicy map[string]bool
}

// HookResult is what one hook did.
type HookResult struct {
	Ref     string    `json:"ref"`
	Phase   HookPhase `json:"phase"`
	Status  string    `json:"status"` // Succeeded or Failed
	Message string    `json:"message,omitempty"`
}

// String is the hook's outcome as every surface prints it (the CLI, the
// history, the UI): "PreSync Job/ns/migrate: Failed (BackoffLimitExceeded)".
func (r HookResult) String() string {
	s := fmt.Sprintf("%s %s: %s", r.Phase, r.Ref, r.Status)
	if r.Message != "" {
		s += " (" + r.Message + ")"
	}
	return s
}

// Hook statuses.
const (
	HookSucceeded = "Succeeded"
	HookFailed    = "Failed"
)

// HookError says a hook failed, which stops the sync.
type HookError struct {
	Phase  HookPhase
	Ref    string
	Source string
	Reason string
}

func (e *HookError) Error() string {
	where := e.Ref
	if e.Source != "" {
		where += " (" + e.Source + ")"
	}
	return fmt.Sprintf("%s hook %s failed: %s", e.Phase, where, e.Reason)
}

// hookSpec reads o's hook annotations: its phases and whether it is to be
// skipped altogether (Argo CD's Skip). converge's own annotation wins over
// Argo CD's, which wins over Helm's, as in Argo CD. Helm's test and
// rollback hooks never run in a sync; an object with only those is
// skipped.
func hookSpec(ann map[string]string) (phases map[HookPhase]occasion, skip bool, err error) {
	key, value := "", ""
	for _, k := range render.HookAnnotations {
		if v, ok := ann[k]; ok {
			key, value = k, v
			break
		}
	}
	if key == "" {
		return nil, false, nil
	}
	phases = map[HookPhase]occasion{}
	for _, v := range strings.Split(value, ",") {
		v = strings.TrimSpace(v)
		if v == "" {
			continue
		}
		if key == helmHook {
			switch strings.ToLower(v) {
			case "pre-install":
				phases[PhasePreSync] |= onInstall
			case "pre-upgrade":
				phases[PhasePreSync] |= onUpgrade
			case "post-install":
				phases[PhasePostSync] |= onInstall
			case "post-upgrade":
				phases[PhasePostSync] |= onUpgrade
			case "pre-delete":
				phases[PhasePreDelete] = always
			case "post-delete":
				phases[PhasePostDelete] = always
			case "pre-rollback", "post-rollback", "test", "test-success", "test-failure", "crd-install":
				// Not part of a sync (a converge rollback is a sync of
				// an older revision, which runs the upgrade hooks).
			default:
				return nil, false, fmt.Errorf("annotation %s: unknown hook %q", key, v)
			}
			continue
		}
		switch p := HookPhase(v); p {
		case PhasePreSync, PhaseSync, PhasePostSync, PhaseSyncFail, PhasePreDelete, PhasePostDelete:
			phases[p] = always
		case "Skip":
			return nil, true, nil
		default:
			return nil, false, fmt.Errorf("annotation %s: unknown hook %q; use PreSync, Sync, PostSync, SyncFail, PreDelete, PostDelete or Skip", key, v)
		}
	}
	if len(phases) == 0 {
		return nil, true, nil
	}
	return phases, false, nil
}

// hookDeletePolicy reads the delete policies, in Argo CD's or Helm's words.
func hookDeletePolicy(ann map[string]string) (map[string]bool, error) {
	key, value := "", ""
	for _, k := range []string{AnnotationHookDeletePolicy, argoHookDeletePolicy, helmHookDeletePolicy} {
		if v, ok := ann[k]; ok {
			key, value = k, v
			break
		}
	}
	out := map[string]bool{}
	for _, v := range strings.Split(value, ",") {
		switch strings.ToLower(strings.ReplaceAll(strings.TrimSpace(v), "-", "")) {
		case "":
		case "beforehookcreation":
			out[deleteBeforeCreation] = true
		case "hooksucceeded":
			out[deleteOnSuccess] = true
		case "hookfailed":
			out[deleteOnFailure] = true
		default:
			return nil, fmt.Errorf("annotation %s: unknown delete policy %q; use BeforeHookCreation, HookSucceeded or HookFailed", key, v)
		}
	}
	if len(out) == 0 {
		out[deleteBeforeCreation] = true
	}
	return out, nil
}

// hookWeight orders hooks within a phase: converge's or Argo CD's sync
// wave, else Helm's hook-weight.
func hookWeight(ann map[string]string) (int, error) {
	if _, ok := ann[AnnotationSyncWave]; ok {
		return syncWave(ann)
	}
	if _, ok := ann[argoSyncWave]; ok {
		return syncWave(ann)
	}
	if w, ok := ann[helmHookWeight]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(w))
		if err != nil {
			return 0, fmt.Errorf("annotation %s: %q is not an integer", helmHookWeight, w)
		}
		return n, nil
	}
	return 0, nil
}

// hooksFor returns the hooks of phase that run on this occasion, grouped by
// weight, lowest first; within a group, by kind rank and name.
func hooksFor(hooks []*hook, phase HookPhase, when occasion) [][]*hook {
	var sel []*hook
	for _, h := range hooks {
		if h.phases[phase]&when != 0 {
			sel = append(sel, h)
		}
	}
	sort.SliceStable(sel, func(i, j int) bool {
		a, b := sel[i], sel[j]
		if a.weight != b.weight {
			return a.weight < b.weight
		}
		if rank(a.gvk.Kind) != rank(b.gvk.Kind) {
			return rank(a.gvk.Kind) < rank(b.gvk.Kind)
		}
		return hookName(a.obj) < hookName(b.obj)
	})
	var out [][]*hook
	for i, h := range sel {
		if i == 0 || h.weight != sel[i-1].weight {
			out = append(out, nil)
		}
		out[len(out)-1] = append(out[len(out)-1], h)
	}
	return out
}

func hookName(u *unstructured.Unstructured) string {
	if n := u.GetName(); n != "" {
		return n
	}
	return u.GetGenerateName()
}
