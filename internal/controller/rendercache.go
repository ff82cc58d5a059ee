package controller

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"

	"converge.dev/converge/internal/render"
)

// renderCache keeps recent renders by (revision, options): a drift
// reconcile, or a second app on the same path, does not render again.
// Objects are deep-copied on the way out, since the engine mutates them.
type renderCache struct {
	mu      sync.Mutex
	max     int
	order   []string
	entries map[string][]render.Object
}

func newRenderCache(max int) *renderCache {
	return &renderCache{max: max, entries: map[string][]render.Object{}}
}

// render returns the objects of opts at revision, rendering them with fn
// unless the cache holds them.
func (c *renderCache) render(ctx context.Context, revision string, opts render.Options, fn func(context.Context, render.Options) (*render.Result, error)) ([]render.Object, error) {
	data, err := json.Marshal(struct {
		Rev  string
		Opts render.Options
	}{revision, opts})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(data)
	key := hex.EncodeToString(sum[:])
	c.mu.Lock()
	objs, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		res, err := fn(ctx, opts)
		if err != nil {
			return nil, err
		}
		objs = res.Objects
		c.mu.Lock()
		c.entries[key] = objs
		c.order = append(c.order, key)
		for len(c.order) > c.max {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.mu.Unlock()
	}
	out := make([]render.Object, len(objs))
	for i, o := range objs {
		out[i] = render.Object{Unstructured: o.DeepCopy(), Source: o.Source}
	}
	return out, nil
}
