package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"golang.org/x/sync/errgroup"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/internal/testutil/kubetest"
)

// FleetFloor is what the apiserver alone needs for a fleet's objects: a
// plain client-go loop doing an agent's essential requests with as many
// workers as the agent has, and nothing else (no Git, no render, no
// record).
type FleetFloor struct {
	Workers int `json:"workers"`
	// ApplySeconds: each worker server-side applies one app's objects,
	// one after the other.
	ApplySeconds float64 `json:"applySeconds"`
	// DryRunApplySeconds: each worker dry-runs one app's objects, then
	// applies them (all-or-nothing, as the agent does).
	DryRunApplySeconds float64 `json:"dryRunApplySeconds"`
	// DryRunApplyCPU is the CPU seconds of the loop (bench), the
	// kube-apiserver and etcd for the dry-run-and-apply pass.
	DryRunApplyCPU map[string]float64 `json:"dryRunApplyCpuSeconds,omitempty"`
}

// fleetObjects are the ConfigMaps of the fleet benchmark's app a (the
// same objects its Git repository holds).
func fleetObjects(ns string, a, perApp int) []*unstructured.Unstructured {
	objs := make([]*unstructured.Unstructured, perApp)
	for i := range perApp {
		objs[i] = object("v1", "ConfigMap", ns, fmt.Sprintf("a%03d-cm-%04d", a, i), map[string]any{"data": map[string]any{"i": fmt.Sprint(i)}})
	}
	return objs
}

// fleetFloor measures the floor for apps apps of perApp objects, each
// variant in a namespace of its own (ns-floor-apply, ns-floor-dryrun),
// deleted by the returned cleanup once the whole benchmark is done, so
// that their deletion does not compete with what is measured next.
func (b *bench) fleetFloor(ctx context.Context, ns string, apps, perApp, workers int) (FleetFloor, func(), error) {
	f := FleetFloor{Workers: workers}
	var created []string
	cleanup := func() {
		for _, name := range created {
			_ = b.env.Client.Delete(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
		}
	}
	cfg := rest.CopyConfig(b.env.Config)
	// No client-side limit: the agent has none either.
	cfg.QPS, cfg.Burst = -1, 0
	cfg.UserAgent = "bench-floor"
	c, err := client.New(cfg, client.Options{})
	if err != nil {
		return f, cleanup, err
	}
	meter := kubetest.NewClusterCPUMeter()
	meter["bench"] = os.Getpid()
	for _, v := range []struct {
		suffix string
		dryRun bool
		into   *float64
		cpu    *map[string]float64
	}{{"floor-dryrun", true, &f.DryRunApplySeconds, &f.DryRunApplyCPU}, {"floor-apply", false, &f.ApplySeconds, nil}} {
		name := ns + "-" + v.suffix
		if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"converge.dev/bench": "true"}}}); err != nil {
			return f, cleanup, err
		}
		created = append(created, name)
		progress("floor: %d apps x %d objects, %d workers, dry-run first: %v", apps, perApp, workers, v.dryRun)
		cpu := meter.Read()
		d, err := floorLoop(ctx, c, name, apps, perApp, workers, v.dryRun)
		if err != nil {
			return f, cleanup, fmt.Errorf("floor %s: %w", v.suffix, err)
		}
		*v.into = d.Seconds()
		if v.cpu != nil {
			*v.cpu = meter.CPUSince(cpu)
		}
		progress("floor: %.1f s (%.1f apps/s)", d.Seconds(), float64(apps)/d.Seconds())
	}
	return f, cleanup, nil
}

// floorLoop gives each of workers goroutines one app at a time, as the
// agent's workers take them, and sends its requests as one sync does:
// the app's dry-runs at once, then, when all have answered, its applies
// at once.
func floorLoop(ctx context.Context, c client.Client, ns string, apps, perApp, workers int, dryRun bool) (time.Duration, error) {
	start := time.Now()
	err := parallel(apps, workers, func(a int) error {
		if dryRun {
			if err := applyAll(ctx, c, fleetObjects(ns, a, perApp), client.DryRunAll); err != nil {
				return err
			}
		}
		// Fresh objects: an apply writes its answer into the object it
		// sent.
		return applyAll(ctx, c, fleetObjects(ns, a, perApp))
	})
	return time.Since(start), err
}

// applyAll server-side applies objs at once and waits for every answer.
func applyAll(ctx context.Context, c client.Client, objs []*unstructured.Unstructured, opts ...client.ApplyOption) error {
	opts = append(opts, client.FieldOwner("bench-floor"), client.ForceOwnership)
	var g errgroup.Group
	for _, u := range objs {
		g.Go(func() error { return c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), opts...) })
	}
	return g.Wait()
}
