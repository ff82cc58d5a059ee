package engine

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func TestHookSpec_ReadsConvergeArgoAndHelmAnnotations(t *testing.T) {
	cases := []struct {
		name    string
		ann     map[string]string
		want    map[HookPhase]occasion
		skip    bool
		wantErr bool
	}{
		{name: "no hook", ann: map[string]string{"a": "b"}},
		{name: "helm install and upgrade", ann: map[string]string{helmHook: "pre-install, pre-upgrade"},
			want: map[HookPhase]occasion{PhasePreSync: always}},
		{name: "helm install only", ann: map[string]string{helmHook: "pre-install,post-install"},
			want: map[HookPhase]occasion{PhasePreSync: onInstall, PhasePostSync: onInstall}},
		{name: "helm upgrade only", ann: map[string]string{helmHook: "post-upgrade"},
			want: map[HookPhase]occasion{PhasePostSync: onUpgrade}},
		{name: "helm delete", ann: map[string]string{helmHook: "pre-delete,post-delete"},
			want: map[HookPhase]occasion{PhasePreDelete: always, PhasePostDelete: always}},
		{name: "helm test only: never in a sync", ann: map[string]string{helmHook: "test"}, skip: true},
		{name: "helm rollback only", ann: map[string]string{helmHook: "pre-rollback"}, skip: true},
		{name: "helm unknown", ann: map[string]string{helmHook: "pre-instal"}, wantErr: true},
		{name: "argo", ann: map[string]string{argoHook: "PreSync,SyncFail"},
			want: map[HookPhase]occasion{PhasePreSync: always, PhaseSyncFail: always}},
		{name: "argo skip", ann: map[string]string{argoHook: "Skip"}, skip: true},
		{name: "argo unknown", ann: map[string]string{argoHook: "presync"}, wantErr: true},
		{name: "argo wins over helm", ann: map[string]string{argoHook: "Sync", helmHook: "pre-install"},
			want: map[HookPhase]occasion{PhaseSync: always}},
		{name: "converge wins over argo", ann: map[string]string{AnnotationHook: "PostSync", argoHook: "PreSync"},
			want: map[HookPhase]occasion{PhasePostSync: always}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, skip, err := hookSpec(c.ann)
			if (err != nil) != c.wantErr {
				t.Fatalf("err = %v, want error %v", err, c.wantErr)
			}
			if skip != c.skip {
				t.Errorf("skip = %v, want %v", skip, c.skip)
			}
			if diff := cmp.Diff(c.want, got); diff != "" && !c.wantErr {
				t.Errorf("phases (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHookDeletePolicy_DefaultsToBeforeHookCreation(t *testing.T) {
	cases := []struct {
		ann  map[string]string
		want map[string]bool
	}{
		{ann: nil, want: map[string]bool{deleteBeforeCreation: true}},
		{ann: map[string]string{helmHookDeletePolicy: "before-hook-creation,hook-succeeded"},
			want: map[string]bool{deleteBeforeCreation: true, deleteOnSuccess: true}},
		{ann: map[string]string{argoHookDeletePolicy: "HookFailed"}, want: map[string]bool{deleteOnFailure: true}},
		{ann: map[string]string{AnnotationHookDeletePolicy: "HookSucceeded", helmHookDeletePolicy: "hook-failed"},
			want: map[string]bool{deleteOnSuccess: true}},
	}
	for _, c := range cases {
		got, err := hookDeletePolicy(c.ann)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("%v (-want +got):\n%s", c.ann, diff)
		}
	}
	if _, err := hookDeletePolicy(map[string]string{helmHookDeletePolicy: "always"}); err == nil {
		t.Error("an unknown delete policy was accepted")
	}
}

func TestHooksFor_OrdersByWeightAndSelectsOccasion(t *testing.T) {
	mk := func(name string, weight int, phases map[HookPhase]occasion) *hook {
		u := &unstructured.Unstructured{}
		u.SetAPIVersion("batch/v1")
		u.SetKind("Job")
		u.SetName(name)
		return &hook{desired: &desired{obj: u, gvk: u.GroupVersionKind()}, weight: weight, phases: phases}
	}
	hooks := []*hook{
		mk("late", 5, map[HookPhase]occasion{PhasePreSync: always}),
		mk("b", 0, map[HookPhase]occasion{PhasePreSync: always}),
		mk("a", 0, map[HookPhase]occasion{PhasePreSync: onInstall}),
		mk("early", -1, map[HookPhase]occasion{PhasePreSync: onUpgrade}),
		mk("post", 0, map[HookPhase]occasion{PhasePostSync: always}),
	}
	names := func(groups [][]*hook) [][]string {
		var out [][]string
		for _, g := range groups {
			var ns []string
			for _, h := range g {
				ns = append(ns, h.obj.GetName())
			}
			out = append(out, ns)
		}
		return out
	}
	if diff := cmp.Diff([][]string{{"a", "b"}, {"late"}}, names(hooksFor(hooks, PhasePreSync, onInstall))); diff != "" {
		t.Errorf("install (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([][]string{{"early"}, {"b"}, {"late"}}, names(hooksFor(hooks, PhasePreSync, onUpgrade))); diff != "" {
		t.Errorf("upgrade (-want +got):\n%s", diff)
	}
}

func TestCompatAnnotations(t *testing.T) {
	if w, err := syncWave(map[string]string{argoSyncWave: "-2"}); err != nil || w != -2 {
		t.Errorf("argo sync-wave = %d, %v", w, err)
	}
	if w, _ := syncWave(map[string]string{argoSyncWave: "-2", AnnotationSyncWave: "3"}); w != 3 {
		t.Errorf("converge's sync-wave must win, got %d", w)
	}
	if _, err := syncWave(map[string]string{argoSyncWave: "first"}); err == nil {
		t.Error("a wave that is not an integer was accepted")
	}
	for ann, want := range map[string]string{
		argoSyncOptions + "=Prune=false":                       argoSyncOptions + ": Prune=false",
		argoSyncOptions + "=ServerSideApply=true, Prune=false": argoSyncOptions + ": Prune=false",
		fluxPrune + "=disabled":                                fluxPrune + ": disabled",
		helmResourcePolicy + "=keep":                           helmResourcePolicy + ": keep",
		AnnotationPrune + "=false":                             AnnotationPrune + `: "false"`,
		argoSyncOptions + "=Prune=true":                        "",
	} {
		k, v, _ := strings.Cut(ann, "=")
		if got := keepOnPrune(map[string]string{k: v}); got != want {
			t.Errorf("keepOnPrune(%s) = %q, want %q", ann, got, want)
		}
	}
	for ann, want := range map[string][2]string{
		argoSyncOptions + "=Delete=false":            {"", argoSyncOptions + ": Delete=false"},
		argoSyncOptions + "=Prune=true,Delete=false": {"", argoSyncOptions + ": Delete=false"},
		AnnotationDelete + "=false":                  {"", AnnotationDelete + `: "false"`},
		argoSyncOptions + "=Prune=false":             {argoSyncOptions + ": Prune=false", argoSyncOptions + ": Prune=false"},
		helmResourcePolicy + "=keep":                 {helmResourcePolicy + ": keep", helmResourcePolicy + ": keep"},
		argoSyncOptions + "=Delete=true":             {"", ""},
	} {
		k, v, _ := strings.Cut(ann, "=")
		if got := [2]string{keep(map[string]string{k: v}, false), keep(map[string]string{k: v}, true)}; got != want {
			t.Errorf("keep(%s) on prune, on app deletion = %q, want %q", ann, got, want)
		}
	}
	if !forceReplace(map[string]string{argoSyncOptions: "Replace=true"}) || !forceReplace(map[string]string{fluxForce: "Enabled"}) {
		t.Error("Replace=true and force: enabled must let converge recreate")
	}
	for v, want := range map[string]applyMode{"": applyAlways, "Merge": applyAlways, "IfNotPresent": applyIfAbsent, "Ignore": applyNever} {
		if got, err := applyModeOf(map[string]string{fluxSSA: v}); err != nil || got != want {
			t.Errorf("ssa %q = %v, %v; want %v", v, got, err, want)
		}
	}
	if got, _ := applyModeOf(map[string]string{fluxReconcile: "disabled"}); got != applyNever {
		t.Error("reconcile: disabled must leave the object out")
	}
	if _, err := applyModeOf(map[string]string{fluxSSA: "Sometimes"}); err == nil {
		t.Error("an unknown ssa value was accepted")
	}
}
