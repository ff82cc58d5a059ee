package controller

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestOwner_SpreadsAppsAndMovesOnlyALeaversShare(t *testing.T) {
	members := []string{"agent-a", "agent-b", "agent-c"}
	const apps = 3000
	counts := map[string]int{}
	before := map[types.NamespacedName]string{}
	for i := range apps {
		key := types.NamespacedName{Namespace: fmt.Sprintf("team-%d", i%17), Name: fmt.Sprintf("app-%d", i)}
		o := owner(members, key)
		counts[o]++
		before[key] = o
	}
	for _, m := range members {
		if n := counts[m]; n < apps/3*8/10 || n > apps/3*12/10 {
			t.Errorf("%s owns %d of %d apps; want about a third (%v)", m, n, apps, counts)
		}
	}
	// agent-b leaves: only its apps move, and they spread over the rest.
	rest := []string{"agent-a", "agent-c"}
	moved := map[string]int{}
	for key, was := range before {
		now := owner(rest, key)
		if was != "agent-b" && now != was {
			t.Fatalf("%s moved from %s to %s though its owner stayed", key, was, now)
		}
		if was == "agent-b" {
			moved[now]++
		}
	}
	if moved["agent-a"] == 0 || moved["agent-c"] == 0 {
		t.Errorf("a leaver's apps went to one member only: %v", moved)
	}
	if owner(nil, types.NamespacedName{Name: "x"}) != "" {
		t.Error("no members, yet an owner")
	}
}
