package controller

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
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
