package engine

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"

	"converge.dev/converge/internal/redact"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/tracing"
)

// ObjectHealth is the kstatus verdict on one object.
type ObjectHealth struct {
	Ref     string `json:"ref"`
	Status  string `json:"status"`
	Message string `json:"message,omitempty"`
}

// Health is an object's health in the words converge shows everywhere
// (an Application's status, its resources, the web UI): kstatus's verdict,
// read one way.
type Health string

// Health words, from best to worst as an app's health takes the worst.
const (
	HealthHealthy     Health = "Healthy"
	HealthUnknown     Health = "Unknown"
	HealthProgressing Health = "Progressing"
	HealthMissing     Health = "Missing"
	HealthDegraded    Health = "Degraded"
)

// Health is o's health word: Current is Healthy, InProgress and
// Terminating Progressing, Failed Degraded, NotFound Missing, anything
// else Unknown.
func (o ObjectHealth) Health() Health {
	switch o.Status {
	case "Current":
		return HealthHealthy
	case "InProgress", "Terminating":
		return HealthProgressing
	case "Failed":
		return HealthDegraded
	case "NotFound":
		return HealthMissing
	}
	return HealthUnknown
}

// Worse says whether h is worse than other (an app's health is its worst
// object's).
func (h Health) Worse(other Health) bool { return healthRank[h] > healthRank[other] }

var healthRank = map[Health]int{HealthHealthy: 0, HealthUnknown: 1, HealthProgressing: 2, HealthMissing: 3, HealthDegraded: 4}

// HealthError lists the objects that were not healthy when a wait ended.
type HealthError struct {
	Objects []ObjectHealth
	Timeout bool
}

func (e *HealthError) Error() string {
	lines := make([]string, len(e.Objects))
	for i, o := range e.Objects {
		lines[i] = fmt.Sprintf("%s: %s", o.Ref, o.Status)
		if o.Message != "" {
			lines[i] += ": " + o.Message
		}
	}
	what := "failed"
	if e.Timeout {
		what = "not healthy before the timeout"
	}
	return fmt.Sprintf("%d object(s) %s:\n  %s", len(lines), what, strings.Join(lines, "\n  "))
}

// health computes the kstatus of each object, reading them with one list
// per kind.
func (m *Manager) health(ctx context.Context, app App, objs []*desired) ([]ObjectHealth, error) {
	kinds := map[schema.GroupVersionKind]map[string]bool{}
	for _, d := range objs {
		if kinds[d.gvk] == nil {
			kinds[d.gvk] = map[string]bool{}
		}
		kinds[d.gvk][d.obj.GetNamespace()] = true
	}
	live, err := m.listOwned(ctx, app, kinds)
	if err != nil {
		return nil, err
	}
	out := make([]ObjectHealth, 0, len(objs))
	for _, d := range objs {
		if d.finished && live[d.key] == nil {
			out = append(out, finishedHealth(d))
			continue
		}
		out = append(out, objectHealth(render.Ref(d.obj), live[d.key]))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out, nil
}

// Health computes the kstatus of the plan's objects without a request,
// from the live objects the plan listed. After an Apply, the change set's
// Health says the same from what the writes returned.
func (p *Plan) Health() []ObjectHealth { return health(p.objects, nil) }

// health is the kstatus of objects: from what an apply returned for those
// it wrote (applied may be nil), from the listed live objects for the
// rest. Right after an apply a workload reads as InProgress (its
// controller has not caught up); ask again later.
func health(objects []*desired, applied *appliedSet) []ObjectHealth {
	out := make([]ObjectHealth, 0, len(objects))
	for _, d := range objects {
		u := d.live
		if applied != nil {
			if a := applied.objs[d.key]; a != nil {
				u = a
			}
		}
		if d.finished && u == nil {
			out = append(out, finishedHealth(d))
			continue
		}
		out = append(out, objectHealth(render.Ref(d.obj), u))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Ref < out[j].Ref })
	return out
}

func finishedHealth(d *desired) ObjectHealth {
	return ObjectHealth{Ref: render.Ref(d.obj), Status: status.CurrentStatus.String(), Message: "finished and removed by its ttlSecondsAfterFinished"}
}

// Kinds returns every kind the plan's objects and the app's inventory use.
func (p *Plan) Kinds() []schema.GroupVersionKind {
	seen := map[schema.GroupVersionKind]bool{}
	var out []schema.GroupVersionKind
	add := func(gvk schema.GroupVersionKind) {
		if !seen[gvk] {
			seen[gvk] = true
			out = append(out, gvk)
		}
	}
	for _, d := range p.objects {
		add(d.gvk)
	}
	for _, e := range p.inventory.Entries {
		add(e.gvk())
	}
	return out
}

func objectHealth(ref string, u *unstructured.Unstructured) ObjectHealth {
	h := ObjectHealth{Ref: ref}
	if u == nil {
		h.Status, h.Message = status.NotFoundStatus.String(), "not found in the cluster"
	} else if res, err := status.Compute(u); err != nil {
		h.Status, h.Message = status.UnknownStatus.String(), err.Error()
	} else {
		h.Status, h.Message = res.Status.String(), res.Message
		if res.Status == status.CurrentStatus && u.GetKind() == "Job" && u.GroupVersionKind().Group == "batch" {
			// kstatus calls a started Job Current; a sync that waits for
			// health waits for it to complete.
			if done, _, _ := hookOutcome(u); !done {
				h.Status = status.InProgressStatus.String()
			}
		}
	}
	return h
}

// waitHealthy waits until every object is Current. An object that turns
// Failed ends the wait at once; at the timeout the error lists every object
// not Current, with kstatus's reason.
func (m *Manager) waitHealthy(ctx context.Context, app App, objs []*desired, timeout time.Duration, progress func(string)) (err error) {
	if len(objs) == 0 {
		return nil
	}
	ctx, span := tracing.Start(ctx, "health", attribute.Int("objects", len(objs)))
	defer func() { tracing.End(span, err, redact.Error(err)) }()
	deadline := time.Now().Add(timeout)
	lastReport := time.Now()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	for {
		hs, err := m.health(ctx, app, objs)
		if err != nil {
			return err
		}
		var pending, failed []ObjectHealth
		for _, h := range hs {
			switch h.Status {
			case status.CurrentStatus.String():
			case status.FailedStatus.String():
				failed = append(failed, h)
			default:
				pending = append(pending, h)
			}
		}
		if len(failed) > 0 {
			return &HealthError{Objects: failed}
		}
		if len(pending) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return &HealthError{Objects: pending, Timeout: true}
		}
		if progress != nil && time.Since(lastReport) > 5*time.Second {
			lastReport = time.Now()
			progress(fmt.Sprintf("waiting for %d of %d object(s) to be healthy, e.g. %s (%s)", len(pending), len(hs), pending[0].Ref, pending[0].Status))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
}

// HealthOf is the kstatus of one live object (nil: not found), as the
// engine judges it for an app's health.
func HealthOf(u *unstructured.Unstructured) ObjectHealth {
	if u == nil {
		return objectHealth("", nil)
	}
	return objectHealth(render.Ref(u), u)
}
