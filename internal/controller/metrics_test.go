package controller

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
)

// converge_application_info has one series per Application, with its sync
// and health state as the agent wrote them (Unknown before it did) and
// whether it is suspended.
func TestMetrics_ApplicationInfoPerApp(t *testing.T) {
	ctx := context.Background()
	ns := kubetest.Namespace(t, env.Client)
	states := []struct {
		name    string
		sync    v1alpha1.SyncStatusCode
		health  v1alpha1.HealthStatusCode
		suspend bool
	}{
		{"healthy", v1alpha1.SyncStatusSynced, v1alpha1.HealthHealthy, false},
		{"drifted", v1alpha1.SyncStatusOutOfSync, v1alpha1.HealthHealthy, false},
		{"broken", v1alpha1.SyncStatusSynced, v1alpha1.HealthDegraded, true},
		{"new", "", "", false},
	}
	for _, s := range states {
		app := &v1alpha1.Application{ObjectMeta: metav1.ObjectMeta{Name: s.name, Namespace: ns},
			Spec: v1alpha1.ApplicationSpec{Source: v1alpha1.ApplicationSource{RepoURL: "https://git.example.com/a.git"}, Suspend: s.suspend}}
		if err := env.Client.Create(ctx, app); err != nil {
			t.Fatal(err)
		}
		if s.sync == "" {
			continue
		}
		app.Status.Sync.Status, app.Status.Health.Status = s.sync, s.health
		if err := env.Client.Status().Update(ctx, app); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(appCollector{cache: env.Client})
	var want strings.Builder
	want.WriteString("# HELP converge_application_info " + "1 for each Application this agent reconciles, labelled with its sync status (Synced, OutOfSync, Unknown), health (Healthy, Progressing, Degraded, Missing, Unknown) and whether it is suspended.\n# TYPE converge_application_info gauge\n")
	for _, line := range []string{
		`converge_application_info{health="Degraded",name="broken",namespace="NS",suspended="true",sync="Synced"} 1`,
		`converge_application_info{health="Healthy",name="drifted",namespace="NS",suspended="false",sync="OutOfSync"} 1`,
		`converge_application_info{health="Healthy",name="healthy",namespace="NS",suspended="false",sync="Synced"} 1`,
		`converge_application_info{health="Unknown",name="new",namespace="NS",suspended="false",sync="Unknown"} 1`,
	} {
		want.WriteString(strings.ReplaceAll(line, "NS", ns) + "\n")
	}
	// Other tests' Applications share the apiserver: compare this
	// namespace's series only.
	got, err := testutil.CollectAndFormat(appCollector{cache: env.Client}, expfmt.TypeTextPlain, "converge_application_info")
	if err != nil {
		t.Fatal(err)
	}
	var mine []string
	for _, line := range strings.Split(string(got), "\n") {
		if strings.HasPrefix(line, "#") || strings.Contains(line, `namespace="`+ns+`"`) {
			mine = append(mine, line)
		}
	}
	if strings.Join(mine, "\n")+"\n" != want.String() {
		t.Errorf("metrics:\n%s\nwant:\n%s", strings.Join(mine, "\n"), want.String())
	}
	if problems, err := testutil.GatherAndLint(reg); err != nil || len(problems) > 0 {
		t.Errorf("lint: %v %v", err, problems)
	}
}

// The alerts and the dashboard in config/monitoring name only metrics the
// agent exports.
func TestMetrics_MonitoringConfigNamesExportedMetrics(t *testing.T) {
	exported := map[string]bool{}
	descs := make(chan *prometheus.Desc, 64)
	for _, c := range []prometheus.Collector{syncTotal, driftEvents, gitFetches, reconcileSeconds, shardMembers, shardApplications,
		syncSeconds, syncObjects, reconcileErrors, appCollector{}} {
		c.Describe(descs)
	}
	close(descs)
	fqName := regexp.MustCompile(`fqName: "([a-z_]+)"`)
	for d := range descs {
		if m := fqName.FindStringSubmatch(d.String()); m != nil {
			exported[m[1]] = true
		}
	}
	named := regexp.MustCompile(`converge_[a-z_]+`)
	for _, file := range []string{"../../config/monitoring/prometheusrule.yaml", "../../config/monitoring/dashboard.json"} {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		seen := 0
		for _, n := range named.FindAllString(string(data), -1) {
			base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(n, "_bucket"), "_count"), "_sum")
			if !exported[base] {
				t.Errorf("%s names %s, which the agent does not export", file, n)
			}
			seen++
		}
		if seen == 0 {
			t.Errorf("%s names no converge metric", file)
		}
	}
}
