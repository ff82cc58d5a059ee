package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1ac "k8s.io/client-go/applyconfigurations/core/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// RequestCost is what one kind of request a cold app's sync makes costs
// the apiserver and etcd, alone: CPU milliseconds per request, from n
// requests sent by 8 workers.
type RequestCost struct {
	Request     string  `json:"request"`
	N           int     `json:"n"`
	Seconds     float64 `json:"seconds"`
	APIServerMs float64 `json:"apiserverCpuMsPerRequest"`
	EtcdMs      float64 `json:"etcdCpuMsPerRequest"`
}

// requestCosts sends, kind by kind, the requests a cold app's sync makes
// (its Application's finalizer and status, its objects' dry-runs and
// applies, its record and events), n of each, and measures each kind's
// CPU on the apiserver and etcd. It says where the apiserver's time per
// app goes, beyond what the floor's dry-runs and applies cost.
func (b *bench) requestCosts(ctx context.Context, id string, n int) ([]RequestCost, error) {
	cfg := rest.CopyConfig(b.env.Config)
	cfg.QPS, cfg.Burst = -1, 0
	c, err := client.New(cfg, client.Options{Scheme: b.env.Scheme})
	if err != nil {
		return nil, err
	}
	// Not while an earlier workload's namespace is being emptied.
	if err := b.waitForDeletions(ctx); err != nil {
		return nil, err
	}
	ns := id + "-costs"
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{"converge.dev/bench": "true"}}}); err != nil {
		return nil, err
	}
	meter := kubetest.NewClusterCPUMeter()
	app := func(i int) *v1alpha1.Application {
		return &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("app-%04d", i), Namespace: ns}}
	}
	cm := func(name string, i int) *corev1ac.ConfigMapApplyConfiguration {
		return corev1ac.ConfigMap(fmt.Sprintf("%s-%04d", name, i), ns).WithLabels(map[string]string{"converge.dev/app": "bench"}).WithData(map[string]string{"i": fmt.Sprint(i)})
	}
	steps := []struct {
		name string
		send func(i int) error
	}{
		{"create an Application (not the agent's)", func(i int) error {
			a := app(i)
			a.Spec.Source = v1alpha1.ApplicationSource{RepoURL: "http://127.0.0.1:1/fleet.git", Path: fmt.Sprintf("apps/app-%04d", i)}
			return c.Create(ctx, a)
		}},
		{"Application: add the finalizer (merge patch)", func(i int) error {
			return c.Patch(ctx, app(i), client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":["bench.converge.dev/f"]}}`)))
		}},
		{"inventory: read (absent)", func(i int) error {
			return client.IgnoreNotFound(c.Get(ctx, client.ObjectKey{Namespace: ns, Name: fmt.Sprintf("inventory-%04d", i)}, &corev1.ConfigMap{}))
		}},
		{"object: server-side apply, dry-run", func(i int) error {
			return c.Apply(ctx, cm("cm", i), client.FieldOwner("bench"), client.ForceOwnership, client.DryRunAll)
		}},
		{"object: server-side apply", func(i int) error {
			return c.Apply(ctx, cm("cm", i), client.FieldOwner("bench"), client.ForceOwnership)
		}},
		{"ConfigMap: add a label (merge patch), for comparison", func(i int) error {
			return c.Patch(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("cm-%04d", i), Namespace: ns}},
				client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"labels":{"x":"1"}}}`)))
		}},
		{"inventory: server-side apply", func(i int) error {
			inv := corev1ac.ConfigMap(fmt.Sprintf("inventory-%04d", i), ns).WithLabels(map[string]string{"converge.dev/record": "inventory"}).
				WithBinaryData(map[string][]byte{"inventory": []byte(strings.Repeat("i", 400))})
			return c.Apply(ctx, inv, client.FieldOwner("bench"), client.ForceOwnership)
		}},
		{"history entry: create", func(i int) error {
			return c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{GenerateName: "history-", Namespace: ns, Labels: map[string]string{"converge.dev/record": "history"}},
				BinaryData: map[string][]byte{"entry": []byte(strings.Repeat("h", 800))}})
		}},
		{"event: create", func(i int) error {
			now := metav1.Now()
			return c.Create(ctx, &corev1.Event{ObjectMeta: metav1.ObjectMeta{GenerateName: "app-", Namespace: ns}, Type: corev1.EventTypeNormal, Reason: "Synced",
				Message: "synced: 10 created", InvolvedObject: corev1.ObjectReference{Kind: "Application", Namespace: ns, Name: fmt.Sprintf("app-%04d", i)},
				FirstTimestamp: now, LastTimestamp: now, Count: 1, Source: corev1.EventSource{Component: "bench"}})
		}},
		{"Application: write the status (10 objects)", func(i int) error {
			a := app(i)
			if err := c.Get(ctx, client.ObjectKeyFromObject(a), a); err != nil {
				return err
			}
			base := a.DeepCopy()
			now := metav1.Now()
			a.Status.Sync = v1alpha1.SyncStatus{Status: v1alpha1.SyncStatusSynced, Revision: strings.Repeat("a", 40)}
			a.Status.Health.Status = v1alpha1.HealthHealthy
			a.Status.LastSyncTime = &now
			a.Status.Conditions = []metav1.Condition{{Type: v1alpha1.ConditionReady, Status: metav1.ConditionTrue, Reason: v1alpha1.ReasonSynced, Message: "synced aaaaaaaaaaaa and healthy", LastTransitionTime: now}}
			for j := range 10 {
				a.Status.Resources = append(a.Status.Resources, v1alpha1.ResourceStatus{Version: "v1", Kind: "ConfigMap", Namespace: ns, Name: fmt.Sprintf("a%04d-cm-%04d", i, j), Status: "Synced", Health: "Healthy"})
			}
			return c.Status().Patch(ctx, a, client.MergeFromWithOptions(base, client.MergeFromWithOptimisticLock{}))
		}},
		{"Application: read it, for comparison", func(i int) error {
			return c.Get(ctx, client.ObjectKeyFromObject(app(i)), &v1alpha1.Application{})
		}},
	}
	var out []RequestCost
	for _, s := range steps {
		progress("request costs: %s (%d)", s.name, n)
		before := meter.Read()
		start := time.Now()
		if err := parallel(n, 8, s.send); err != nil {
			return out, fmt.Errorf("%s: %w", s.name, err)
		}
		cost := RequestCost{Request: s.name, N: n, Seconds: time.Since(start).Seconds()}
		cpu := meter.CPUSince(before)
		cost.APIServerMs, cost.EtcdMs = cpu["kube-apiserver"]*1000/float64(n), cpu["etcd"]*1000/float64(n)
		out = append(out, cost)
	}
	// The Applications go with their finalizer removed: no agent here.
	_ = c.DeleteAllOf(ctx, &v1alpha1.Application{}, client.InNamespace(ns))
	_ = parallel(n, 8, func(i int) error {
		return client.IgnoreNotFound(c.Patch(ctx, app(i), client.RawPatch("application/merge-patch+json", []byte(`{"metadata":{"finalizers":null}}`))))
	})
	return out, nil
}

// parallel runs send(0..n-1) on workers goroutines and returns the first
// error.
func parallel(n, workers int, send func(int) error) error {
	next := make(chan int)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				if err := send(i); err != nil {
					once.Do(func() { first = err })
				}
			}
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	return first
}

func printCosts(w io.Writer, costs []RequestCost) {
	if len(costs) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "request (alone)\tn\tseconds\tapiserver CPU ms each\tetcd CPU ms each")
	for _, c := range costs {
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\n", c.Request, c.N, c.Seconds, c.APIServerMs, c.EtcdMs)
	}
	tw.Flush()
}
