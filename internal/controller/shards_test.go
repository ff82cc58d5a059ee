package controller

import (
	"fmt"
	"testing"

	"k8s.io/apimachinery/pkg/types"
)

func TestOwner_SpreadsAppsAndMovesOnlyALeaversShare(t *testing.T) {
	for _, members := range [][]string{{"agent-a", "agent-b", "agent-c"}, {"a", "b", "c"}, {"converge-agent-7d9f-x1", "converge-agent-7d9f-x2", "converge-agent-7d9f-x3"}} {
		t.Run(members[0], func(t *testing.T) { testOwner(t, members) })
	}
	// Two members, few apps: not all on one side.
	n := 0
	for i := range 8 {
		if owner([]string{"sa", "sb"}, types.NamespacedName{Namespace: "shx", Name: fmt.Sprintf("a%d", i)}) == "sa" {
			n++
		}
	}
	if n == 0 || n == 8 {
		t.Errorf("%d of 8 apps on one of two members", n)
	}
}

func testOwner(t *testing.T, members []string) {
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
	// The second member leaves: only its apps move, and they spread over
	// the rest.
	rest := []string{members[0], members[2]}
	moved := map[string]int{}
	for key, was := range before {
		now := owner(rest, key)
		if was != members[1] && now != was {
			t.Fatalf("%s moved from %s to %s though its owner stayed", key, was, now)
		}
		if was == members[1] {
			moved[now]++
		}
	}
	if moved[members[0]] == 0 || moved[members[2]] == 0 {
		t.Errorf("a leaver's apps went to one member only: %v", moved)
	}
	if owner(nil, types.NamespacedName{Name: "x"}) != "" {
		t.Error("no members, yet an owner")
	}
}
