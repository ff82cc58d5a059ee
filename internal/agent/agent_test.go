package agent

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/client-go/rest"
)

// --shards: nothing is one agent; auto needs the replica's identity, puts
// it in the user agent (the audit log tells replicas apart) and turns
// leader election on for the singletons; anything else is refused.
func TestSharding_FlagsIntoShards(t *testing.T) {
	cfg := &rest.Config{UserAgent: "converge-agent"}
	o := Options{}
	if s, err := sharding(cfg, &o, logr.Discard()); s != nil || err != nil {
		t.Errorf("no --shards: %v, %v; want one agent", s, err)
	}
	o = Options{Shards: "auto"}
	if _, err := sharding(cfg, &o, logr.Discard()); err == nil || !strings.Contains(err.Error(), "--shard-id") {
		t.Errorf("auto without an id: %v", err)
	}
	o = Options{Shards: "auto", ShardID: "agent-0", SystemNamespace: "converge-system"}
	s, err := sharding(cfg, &o, logr.Discard())
	if err != nil || s == nil || s.ID != "agent-0" || s.Namespace != "converge-system" || !o.LeaderElect || cfg.UserAgent != "converge-agent/agent-0" {
		t.Errorf("auto: shards %+v, err %v, leaderElect %v, user agent %q", s, err, o.LeaderElect, cfg.UserAgent)
	}
	o = Options{Shards: "3"}
	if _, err := sharding(cfg, &o, logr.Discard()); err == nil || !strings.Contains(err.Error(), `--shards "3"`) {
		t.Errorf("--shards 3: %v", err)
	}
}

// The caches and the egress policy follow the flags: the multi-tenant
// profile reaches no private address unless --egress-allow lists it, and
// a bad entry there is refused naming the flag.
func TestFetchers_FlagsIntoCachesAndPolicy(t *testing.T) {
	dir := t.TempDir()
	sources, charts, policy, err := fetchers(Options{CacheDir: dir, SourceHosts: []string{"git.example.com"}, RequireTenant: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(sources.AllowedHosts) != 1 || charts.Egress != policy || charts.AllowedHosts[0] != "git.example.com" {
		t.Errorf("caches: sources %v, charts %v", sources.AllowedHosts, charts.AllowedHosts)
	}
	if err := policy.Check("10.0.0.1", netip.MustParseAddr("10.0.0.1")); err == nil {
		t.Error("the multi-tenant profile reaches a private address")
	}
	if _, _, _, err := fetchers(Options{CacheDir: dir, EgressAllow: []string{"10.0.0.0/33"}}); err == nil || !strings.Contains(err.Error(), "--egress-allow") {
		t.Errorf("a bad --egress-allow: %v", err)
	}
}

// --ignore-differences-file: read, compiled, and a bad entry names the
// file and the entry.
func TestIgnoreRules_FromTheFlag(t *testing.T) {
	if rules, err := ignoreRules(""); rules != nil || err != nil {
		t.Errorf("no file: %v %v", rules, err)
	}
	file := filepath.Join(t.TempDir(), "ignore.yaml")
	if err := os.WriteFile(file, []byte("- {group: admissionregistration.k8s.io, kind: MutatingWebhookConfiguration, jqPathExpressions: [\".webhooks[]?.clientConfig.caBundle\"]}\n- {kind: Deployment, jsonPointers: [\"no-slash\"]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ignoreRules(file); err == nil || !strings.Contains(err.Error(), file+"[1]") {
		t.Errorf("a bad pointer: %v, want the file and entry [1] named", err)
	}
}
