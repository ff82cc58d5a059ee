//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// A hostile ApplicationSet fails on a named bound, not on the agent's
// memory: the matrix (one element of 100,000 keys × 5,000 empty
// elements) is refused by the CRD; one within the CRD's limits whose
// product is 64 MiB, and a Git files generator over 20 files of 1 MiB,
// fail with LimitExceeded naming the bound. Meanwhile the agent's heap
// stays small and a neighbour's commit syncs within 2 s of its webhook.
func TestAppSet_HostileInputFailsOnANamedBoundAndNeighboursSync(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()

	var peak atomic.Uint64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		var m runtime.MemStats
		for {
			runtime.ReadMemStats(&m)
			if m.HeapAlloc > peak.Load() {
				peak.Store(m.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	defer func() { close(stop); <-sampled }()

	long := make([]map[string]string, 5000)
	for i := range long {
		long[i] = map[string]string{}
	}
	matrix := func(first map[string]string) []v1alpha1.Generator {
		return []v1alpha1.Generator{{Matrix: &v1alpha1.MatrixGenerator{Generators: []v1alpha1.NestedGenerator{
			{List: &v1alpha1.ListGenerator{Elements: []map[string]string{first}}},
			{List: &v1alpha1.ListGenerator{Elements: long}},
		}}}}
	}
	tmpl := v1alpha1.ApplicationTemplate{Metadata: v1alpha1.ApplicationTemplateMeta{Name: "x"},
		Spec: templateSpec(t, v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/x", Path: "."}})}
	set := func(name string, gens []v1alpha1.Generator) *v1alpha1.ApplicationSet {
		return &v1alpha1.ApplicationSet{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
			Spec: v1alpha1.ApplicationSetSpec{Generators: gens, Template: tmpl, Interval: &metav1.Duration{Duration: time.Hour}}}
	}

	wide := map[string]string{}
	for i := range 100_000 {
		wide[fmt.Sprintf("k%d", i)] = ""
	}
	err := a.client.Create(ctx, set("the-issues-matrix", matrix(wide)))
	if err == nil || !strings.Contains(err.Error(), "256") {
		t.Fatalf("the issue's matrix: err = %v, want the CRD's refusal of more than 256 keys", err)
	}

	wide = map[string]string{}
	for i := range 200 {
		wide[fmt.Sprintf("k%03d", i)] = strings.Repeat("v", 60)
	}
	if err := a.client.Create(ctx, set("wide-matrix", matrix(wide))); err != nil {
		t.Fatal(err)
	}

	files := map[string]string{}
	line := "- {a: " + strings.Repeat("x", 1000) + "}\n"
	for i := range 20 {
		files[fmt.Sprintf("clusters/c%02d/config.yaml", i)] = strings.Repeat(line, (1<<20-1)/len(line))
	}
	params, _ := a.repoWith(t, ns+"-params", files, "20 files of 1 MiB")
	fileSet := set("big-files", []v1alpha1.Generator{{Git: &v1alpha1.GitGenerator{RepoURL: a.git.URL(params.Name),
		Files: []v1alpha1.GitPathPattern{{Path: "clusters/*/config.yaml"}}}}})
	if err := a.client.Create(ctx, fileSet); err != nil {
		t.Fatal(err)
	}

	// The neighbour: an app whose next commit must sync promptly.
	repo, rev := a.repoWith(t, ns+"-neighbour", map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "first")}, "first")
	a.create(t, &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: "neighbour", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"}, SyncPolicy: automated(true, true)}})
	a.waitApp(t, ns, "neighbour", 60*time.Second, "the neighbour synced", synced(rev))

	// The files hold about 1,000 sets each: the sets' count is the
	// first bound they pass (their bytes would be the next).
	for name, want := range map[string][]string{
		"wide-matrix": {"spec.generators[0].matrix: ", "(parameter bytes per ApplicationSet)"},
		"big-files":   {"spec.generators[0].git", "allowed ("},
	} {
		a.waitSet(t, ns, name, 60*time.Second, name+": LimitExceeded naming "+strings.Join(want, " … "), func(s *v1alpha1.ApplicationSet) bool {
			c := setCondition(s, v1alpha1.ConditionReady)
			return c != nil && c.Reason == v1alpha1.ReasonLimitExceeded && strings.Contains(c.Message, want[0]) && strings.Contains(c.Message, want[1])
		})
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "second")}); err != nil {
		t.Fatal(err)
	}
	rev, err = repo.Commit("main", "second")
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "neighbour", 30*time.Second, "the neighbour's second commit synced", synced(rev))
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("the neighbour's commit took %v to sync, want within 2 s", took)
	}
	if len(a.setApps(t, ns, "wide-matrix"))+len(a.setApps(t, ns, "big-files")) != 0 {
		t.Error("a set past its bounds generated Applications")
	}
	// The whole test process (agent, Git server, test) stayed small.
	if p := peak.Load(); p > 300<<20 {
		t.Errorf("heap peaked at %d MiB, want below 300", p>>20)
	}
	t.Logf("heap peak %d MiB", peak.Load()>>20)
}

// A template cannot speak for a person: one that sets
// converge.dev/requested-by is refused, naming the field, and no
// Application (so no history entry) carries that name.
func TestAppSet_TemplateCannotForgeARequester(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	set := &v1alpha1.ApplicationSet{ObjectMeta: metav1.ObjectMeta{Name: "forger", Namespace: ns},
		Spec: v1alpha1.ApplicationSetSpec{
			Generators: []v1alpha1.Generator{{List: &v1alpha1.ListGenerator{Elements: []map[string]string{{"name": "web"}}}}},
			Template: v1alpha1.ApplicationTemplate{
				Metadata: v1alpha1.ApplicationTemplateMeta{Name: "{{name}}", Annotations: map[string]string{
					"converge.dev/requested-by": "alice", "converge.dev/requested-at": "2026-12-07T00:00:00Z"}},
				Spec: templateSpec(t, v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/x", Path: "."}}),
			},
			Interval: &metav1.Duration{Duration: time.Hour},
		}}
	if err := a.client.Create(ctx, set); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.client.Delete(context.Background(), set) })
	a.waitSet(t, ns, "forger", 60*time.Second, "TemplateFailed naming the annotation", func(s *v1alpha1.ApplicationSet) bool {
		c := setCondition(s, v1alpha1.ConditionReady)
		return c != nil && c.Reason == v1alpha1.ReasonTemplateFailed && strings.Contains(c.Message, `metadata.annotations["converge.dev/requested-`) &&
			strings.Contains(c.Message, "converge's own")
	})
	if apps := a.setApps(t, ns, "forger"); len(apps) != 0 {
		t.Fatalf("the set made %d Applications", len(apps))
	}
}
