package engine

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"

	"k8s.io/client-go/discovery"
)

// Capabilities are what a chart may ask of its target cluster
// (.Capabilities in Helm): its version and the APIs it serves, as
// "group/version" and "group/version/Kind".
type Capabilities struct {
	KubeVersion string
	APIVersions []string
}

// capabilitiesTTL bounds how stale the cached capabilities may be: CRDs
// come and go, but seldom.
const capabilitiesTTL = 5 * time.Minute

type capabilitiesCache struct {
	mu   sync.Mutex
	at   time.Time
	caps Capabilities
}

// Capabilities describes the cluster, from discovery (cached for a few
// minutes: a chart rendered for every reconcile costs no requests).
func (m *Manager) Capabilities(ctx context.Context) (Capabilities, error) {
	c := &m.caps
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < capabilitiesTTL {
		return c.caps, nil
	}
	if m.discovery == nil {
		return Capabilities{}, fmt.Errorf("no discovery client")
	}
	v, err := m.discovery.ServerVersion()
	if err != nil {
		return Capabilities{}, fmt.Errorf("asking the cluster's version: %w", err)
	}
	_, lists, err := m.discovery.ServerGroupsAndResources()
	if err != nil && !discovery.IsGroupDiscoveryFailedError(err) {
		return Capabilities{}, fmt.Errorf("discovering the cluster's APIs: %w", err)
	}
	seen := map[string]bool{}
	for _, l := range lists {
		seen[l.GroupVersion] = true
		for _, r := range l.APIResources {
			seen[l.GroupVersion+"/"+r.Kind] = true
		}
	}
	caps := Capabilities{KubeVersion: v.GitVersion, APIVersions: make([]string, 0, len(seen))}
	for s := range seen {
		caps.APIVersions = append(caps.APIVersions, s)
	}
	sort.Strings(caps.APIVersions)
	c.caps, c.at = caps, time.Now()
	return caps, nil
}
