package appspec

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"

	"converge.dev/converge/internal/render"
)

// RenderCache keeps recent renders by (revision, options): a drift
// reconcile, or a second app on the same path, does not render again.
// Objects are deep-copied on the way out, since the engine mutates them.
type RenderCache struct {
	mu      sync.Mutex
	max     int
	order   []string
	entries map[string]*render.Result
}

// NewRenderCache keeps up to max renders.
func NewRenderCache(max int) *RenderCache {
	return &RenderCache{max: max, entries: map[string]*render.Result{}}
}

// Render returns the render of opts at revision, made with fn unless the
// cache holds it.
func (c *RenderCache) Render(ctx context.Context, revision string, opts render.Options, fn func(context.Context, render.Options) (*render.Result, error)) (*render.Result, error) {
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
	res, ok := c.entries[key]
	c.mu.Unlock()
	if !ok {
		if res, err = fn(ctx, opts); err != nil {
			return nil, err
		}
		c.mu.Lock()
		c.entries[key] = res
		c.order = append(c.order, key)
		for len(c.order) > c.max {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
		c.mu.Unlock()
	}
	out := *res
	out.Objects = make([]render.Object, len(res.Objects))
	for i, o := range res.Objects {
		out.Objects[i] = render.Object{Unstructured: o.DeepCopy(), Source: o.Source}
	}
	return &out, nil
}
