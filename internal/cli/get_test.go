package cli

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

func TestAppTree_ChildrenFollowTheAppThatAppliesThem(t *testing.T) {
	app := func(name, parent string) v1alpha1.Application {
		a := v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: name}}
		if parent != "" {
			a.Labels = map[string]string{engine.LabelApp: parent}
			a.Annotations = map[string]string{engine.AnnotationOwner: "ops/" + parent}
		}
		return a
	}
	apps := []v1alpha1.Application{app("api", "root"), app("db", "root"), app("lonely", ""), app("root", ""), app("web", "api"), app("orphan", "gone")}
	var got []string
	for _, n := range appTree(apps) {
		got = append(got, treeMark(n.depth)+n.app.Name+"@"+string(rune('0'+n.depth)))
	}
	want := []string{"lonely@0", "root@0", "└ api@1", "└ web@2", "└ db@1", "orphan@0"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("appTree (-want +got):\n%s", diff)
	}
}
