package controller

import (
	"context"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/engine"
)

var (
	syncTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "converge_sync_total",
		Help: "Application reconciles by result: synced (something applied), unchanged, outofsync, failed.",
	}, []string{"result"})
	driftEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "converge_drift_events_total",
		Help: "Watch events on owned objects that led to a reconcile.",
	})
	gitFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "converge_git_fetch_total",
		Help: "Source fetches requested by reconciles, by result.",
	}, []string{"result"})
	shardMembers = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "converge_shard_members",
		Help: "Agent replicas sharing the Applications (sharded agents).",
	})
	shardApplications = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "converge_shard_applications",
		Help: "Applications this replica owns (sharded agents).",
	})
	reconcileSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "converge_reconcile_duration_seconds",
		Help:    "Duration of Application reconciles.",
		Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
	})
)

func init() {
	metrics.Registry.MustRegister(syncTotal, driftEvents, gitFetches, reconcileSeconds, shardMembers, shardApplications)
}

// CountGitFetch counts a reconcile's Git fetch by its outcome
// (converge_git_fetch_total).
func CountGitFetch(err error) {
	if err != nil {
		gitFetches.WithLabelValues("failed").Inc()
		return
	}
	gitFetches.WithLabelValues("ok").Inc()
}

var (
	syncSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "converge_sync_duration_seconds",
		Help:    "Duration of syncs that applied (fetch, render, plan, apply and hooks), by result: succeeded or failed.",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 12),
	}, []string{"result"})
	syncObjects = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "converge_sync_objects_total",
		Help: "Objects syncs changed, by action: created, configured, deleted (pruned).",
	}, []string{"action"})
	reconcileErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "converge_reconcile_errors_total",
		Help: "Failed Application reconciles, by the reason their Ready condition gives (a fixed set: docs/agent.md).",
	}, []string{"reason"})
)

func init() {
	metrics.Registry.MustRegister(syncSeconds, syncObjects, reconcileErrors)
}

// countSync records what a sync that applied did (converge_sync_*).
func countSync(res *engine.Result, took time.Duration, err error) {
	if res == nil || !res.Applied {
		return
	}
	result := "succeeded"
	if err != nil {
		result = "failed"
	}
	syncSeconds.WithLabelValues(result).Observe(took.Seconds())
	for action, n := range map[string]int{"created": res.Counts.Created, "configured": res.Counts.Configured, "deleted": res.Counts.Deleted} {
		if n > 0 {
			syncObjects.WithLabelValues(action).Add(float64(n))
		}
	}
}

// appInfo is converge_application_info: one series per Application this
// replica reconciles, read from the informer cache at each scrape (no
// request), with its sync and health state. Its cardinality is the number
// of Applications; the label values are fixed sets.
var appInfoDesc = prometheus.NewDesc("converge_application_info",
	"1 for each Application this agent reconciles, labelled with its sync status (Synced, OutOfSync, Unknown), health (Healthy, Progressing, Degraded, Missing, Unknown) and whether it is suspended.",
	[]string{"namespace", "name", "sync", "health", "suspended"}, nil)

type appCollector struct {
	cache  client.Reader
	shards *Shards
}

func (c appCollector) Describe(ch chan<- *prometheus.Desc) { ch <- appInfoDesc }

func (c appCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var list v1alpha1.ApplicationList
	if err := c.cache.List(ctx, &list); err != nil {
		ch <- prometheus.NewInvalidMetric(appInfoDesc, err)
		return
	}
	for i := range list.Items {
		app := &list.Items[i]
		if c.shards != nil {
			if owns, _ := c.shards.Owns(client.ObjectKeyFromObject(app)); !owns {
				continue
			}
		}
		ch <- prometheus.MustNewConstMetric(appInfoDesc, prometheus.GaugeValue, 1, app.Namespace, app.Name,
			state(string(app.Status.Sync.Status)), state(string(app.Status.Health.Status)), strconv.FormatBool(app.Spec.Suspend))
	}
}

// state is a status word, Unknown when the agent has not written one.
func state(s string) string {
	if s == "" {
		return "Unknown"
	}
	return s
}
