//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"maps"
	"sort"
	"strings"
	"testing"
	"time"

	"filippo.io/age"
	"github.com/fluxcd/pkg/envsubst"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
	"converge.dev/converge/internal/testutil/sopstest"
)

// A repository laid out as `flux bootstrap` writes it (clusters/prod with
// flux-system/gotk-sync.yaml), whose apps Kustomization uses postBuild
// (inline and from a ConfigMap), SOPS (age) and a targetNamespace:
// `converge migrate clusters/prod` makes one Application of it (the
// bootstrap Kustomization left out), and the agent syncs exactly the
// objects that `kustomize build` plus Flux's envsubst make of the
// plaintext tree.
func TestCompat_FluxBootstrapTreeMigratesAndSyncsAsFluxWould(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	ctx := context.Background()
	suffix := ns[strings.LastIndex(ns, "-")+1:]
	flux := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "flux-system"}}
	if err := cluster.Client.Create(ctx, flux); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	repo, err := a.git.NewRepo(ns + "-fleet")
	if err != nil {
		t.Fatal(err)
	}
	app := "apps-" + suffix
	// The repository of test/e2e/compat/flux-bootstrap-tree, its Secret
	// encrypted with a fresh age key.
	tree := corpusRepo(t, "flux-bootstrap-tree", map[string]string{"URL": a.git.URL(repo.Name), "NS": ns, "SUFFIX": suffix})
	secret := tree["apps/prod/db.yaml"]
	delete(tree, "apps/prod/db.yaml")
	id, _ := age.GenerateX25519Identity()
	enc, err := sopstest.Encrypt([]byte(secret), "yaml", sopstest.Options{Age: []string{id.Recipient().String()}, EncryptedRegex: "^(data|stringData)$"})
	if err != nil {
		t.Fatal(err)
	}
	tree["apps/prod/db.enc.yaml"] = string(enc)
	if err := repo.Write(tree); err != nil {
		t.Fatal(err)
	}
	rev, err := repo.Commit("main", "flux bootstrap tree")
	if err != nil {
		t.Fatal(err)
	}
	for _, obj := range []*unstructured.Unstructured{
		{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "cluster-vars-" + suffix, "namespace": "flux-system"}, "data": map[string]any{"region": "eu-west-1"}}},
		{Object: map[string]any{"apiVersion": "v1", "kind": "Secret", "metadata": map[string]any{"name": "sops-age-" + suffix, "namespace": "flux-system"}, "stringData": map[string]any{"age.agekey": id.String()}}},
	} {
		if err := cluster.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cluster.Client.Delete(context.Background(), obj) })
	}

	local := writeTree(t, ns, tree)
	r := convergeOffline(t, "migrate", local+"/clusters/prod")
	if r.code != 1 || !strings.Contains(r.stderr, "bootstrap Kustomization is not translated") {
		t.Fatalf("migrate: exit %d\n%s", r.code, r.stderr)
	}
	var apps []v1alpha1.Application
	for _, doc := range strings.Split(r.stdout, "\n---\n") {
		var got v1alpha1.Application
		if err := yaml.UnmarshalStrict([]byte(doc), &got); err != nil {
			t.Fatalf("not an Application: %v\n%s", err, doc)
		}
		apps = append(apps, got)
	}
	sort.Slice(apps, func(i, j int) bool { return apps[i].Name < apps[j].Name })
	if len(apps) != 2 || apps[0].Name != app || apps[0].Spec.Decryption == nil || apps[0].Spec.Source.PostBuild == nil ||
		apps[1].Name != "infra-"+suffix || apps[1].Spec.Source.Path != "infrastructure/prod" || apps[1].Spec.Source.Kustomize == nil {
		t.Fatalf("migrated %d Application(s): %+v", len(apps), apps)
	}
	for i := range apps {
		a.create(t, &apps[i])
		a.waitApp(t, "flux-system", apps[i].Name, 60*time.Second, "synced and healthy", func(got *v1alpha1.Application) bool {
			return strings.HasPrefix(got.Status.Sync.Revision, rev) && got.Status.Sync.Status == v1alpha1.SyncStatusSynced && got.Status.Health.Status == v1alpha1.HealthHealthy
		})
	}

	// What Flux makes of the generated artifact: a kustomization it
	// generates over the plain directory, with the Kustomization's
	// overrides; then its common metadata on every object.
	infra := writeTree(t, ns, map[string]string{
		"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + ns + "\nnamePrefix: infra-\nresources: [limits.yaml]\n" +
			"patches:\n- target: {kind: ConfigMap, name: limits}\n  patch: |\n    - op: add\n      path: /data/burst\n      value: \"20\"\n",
		"limits.yaml": tree["infrastructure/prod/limits.yaml"],
	})
	built, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), infra)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range built.Resources() {
		live := get(t, "v1", r.GetKind(), r.GetNamespace(), r.GetName())
		if live == nil {
			t.Errorf("%s %s/%s: Flux's build makes it; the agent did not", r.GetKind(), r.GetNamespace(), r.GetName())
			continue
		}
		wantData := r.GetDataMap()
		gotData, _, _ := unstructured.NestedStringMap(live.Object, "data")
		if !maps.Equal(wantData, gotData) || live.GetLabels()["app.kubernetes.io/part-of"] != "fleet" || live.GetLabels()["app"] != "limits" {
			t.Errorf("%s %s: data %v, labels %v; Flux makes data %v and adds the common label", r.GetKind(), r.GetName(), gotData, live.GetLabels(), wantData)
		}
	}

	// What Flux makes of it: kustomize build of the plaintext tree, then
	// envsubst with the same variables.
	plain := writeTree(t, ns, map[string]string{
		"kustomization.yaml": "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + ns + "\nresources: [settings.yaml, db.yaml]\ncommonLabels: {tier: apps}\n",
		"settings.yaml":      tree["apps/prod/settings.yaml"],
		"db.yaml":            secret,
	})
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), plain)
	if err != nil {
		t.Fatal(err)
	}
	builtYAML, err := res.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"cluster_name": "prod", "region": "eu-west-1"}
	want, err := envsubst.Eval(string(builtYAML), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatal(err)
	}
	for _, doc := range strings.Split(want, "\n---\n") {
		var w unstructured.Unstructured
		if err := yaml.Unmarshal([]byte(doc), &w.Object); err != nil {
			t.Fatal(err)
		}
		live := get(t, w.GetAPIVersion(), w.GetKind(), w.GetNamespace(), w.GetName())
		if live == nil {
			t.Errorf("%s %s/%s: kustomize and envsubst make it; the agent did not", w.GetKind(), w.GetNamespace(), w.GetName())
			continue
		}
		if live.GetLabels()["tier"] != "apps" {
			t.Errorf("%s %s: labels %v", w.GetKind(), w.GetName(), live.GetLabels())
		}
		wantData, _, _ := unstructured.NestedStringMap(w.Object, "data")
		if sd, ok, _ := unstructured.NestedStringMap(w.Object, "stringData"); ok {
			wantData = sd
		}
		gotData, _, _ := unstructured.NestedStringMap(live.Object, "data")
		if w.GetKind() == "Secret" {
			for k, v := range gotData {
				dec, _ := base64.StdEncoding.DecodeString(v)
				gotData[k] = string(dec)
			}
		}
		for k, v := range wantData {
			if gotData[k] != v {
				t.Errorf("%s %s: data[%s] = %q, Flux's build makes %q", w.GetKind(), w.GetName(), k, gotData[k], v)
			}
		}
	}
}
