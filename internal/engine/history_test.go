package engine

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

func TestHistory_IsBoundedNumberedAndFoldsRepeatedFailures(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	app := App{Name: "shop", Namespace: ns}
	for i := 1; i <= 5; i++ {
		e := HistoryEntry{Revision: fmt.Sprintf("%040d", i), Result: ResultSucceeded, Trigger: Trigger{Type: TriggerInterval}}
		got, err := AppendHistory(ctx, env.Client, app, e, 3)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != int64(i) {
			t.Fatalf("entry %d got id %d", i, got.ID)
		}
	}
	fail := NewHistoryEntry(nil, errors.New("Deployment/x: spec.replicas: invalid"), true)
	fail.Revision = "bad"
	var rv string
	for i := 0; i < 3; i++ {
		fail.FinishedAt = time.Now().UTC().Truncate(time.Second).Add(time.Duration(i) * time.Second)
		if _, err := AppendHistory(ctx, env.Client, app, fail, 3); err != nil {
			t.Fatal(err)
		}
		var cm corev1.ConfigMap
		if err := env.Client.Get(ctx, client.ObjectKey{Namespace: ns, Name: HistoryName("shop")}, &cm); err != nil {
			t.Fatal(err)
		}
		if i > 0 && cm.ResourceVersion != rv {
			t.Errorf("retry %d of the same failure wrote the record", i)
		}
		rv = cm.ResourceVersion
	}
	h, err := LoadHistory(ctx, env.Client, app)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 3 {
		t.Fatalf("%d entries, want the limit 3", len(h.Entries))
	}
	if h.Entries[0].ID != 6 || h.Entries[0].Result != ResultFailed || h.Entries[1].ID != 5 || h.Entries[2].ID != 4 {
		t.Fatalf("entries %d %s, %d, %d: want 6 (one folded failure), 5, 4", h.Entries[0].ID, h.Entries[0].Result, h.Entries[1].ID, h.Entries[2].ID)
	}
	if e, ok := h.Find("5"); !ok || e.Revision != fmt.Sprintf("%040d", 5) {
		t.Errorf("Find by id: %+v %v", e, ok)
	}
	if e, ok := h.Find(fmt.Sprintf("%012d", 0)); !ok || e.ID != 5 {
		t.Errorf("Find by revision prefix returns the newest match: %+v %v", e, ok)
	}
}

func TestHistory_ConcurrentWritersLoseNothing(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	app := App{Name: "busy", Namespace: ns}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := 0; i < 10; i++ {
		wg.Add(2)
		go func() {
			defer wg.Done()
			_, err := AppendHistory(ctx, env.Client, app, HistoryEntry{Result: ResultSucceeded}, 50)
			errs <- err
		}()
		go func() {
			defer wg.Done()
			errs <- RecordAction(ctx, env.Client, app, ActionEntry{User: "alice", Action: "sync-request"}, 50)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	h, err := LoadHistory(ctx, env.Client, app)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 10 || len(h.Actions) != 10 || h.Entries[0].ID != 10 {
		t.Fatalf("%d entries (newest id %d), %d actions: want 10, 10, 10", len(h.Entries), h.Entries[0].ID, len(h.Actions))
	}
}

// A first sync creates the history without reading it; if a record is
// there after all (the app was recreated, or failed before), it is kept
// and the entry appended to it.
func TestHistory_FirstSyncKeepsARecordThatExists(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	app := App{Name: "again", Namespace: ns}
	for i := range 2 {
		e := HistoryEntry{Revision: fmt.Sprintf("%040d", i+1), Result: ResultSucceeded}
		got, err := appendHistory(ctx, env.Client, app, e, 0, recordLikelyNew)
		if err != nil {
			t.Fatal(err)
		}
		if got.ID != int64(i+1) {
			t.Fatalf("entry %d got id %d", i+1, got.ID)
		}
	}
	h, err := LoadHistory(ctx, env.Client, app)
	if err != nil {
		t.Fatal(err)
	}
	if len(h.Entries) != 2 || h.Entries[1].Revision != fmt.Sprintf("%040d", 1) {
		t.Fatalf("history %+v, want both entries", h.Entries)
	}
}
