package server

import (
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// RateLimit allows each client (by remote IP) Rate requests a second, in
// bursts of Burst, and answers 429 beyond that. Clients unseen for ten
// minutes are forgotten, so the table stays small.
type RateLimit struct {
	Rate  rate.Limit
	Burst int

	mu      sync.Mutex
	clients map[string]*clientBudget
}

type clientBudget struct {
	limiter *rate.Limiter
	seen    time.Time
}

// maxClients bounds the table: past it, the oldest entries are dropped.
const maxClients = 10000

// Wrap limits h.
func (l *RateLimit) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !l.allow(r.RemoteAddr, time.Now()) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, "too many requests", http.StatusTooManyRequests)
			return
		}
		h.ServeHTTP(w, r)
	})
}

func (l *RateLimit) allow(remote string, now time.Time) bool {
	ip, _, err := net.SplitHostPort(remote)
	if err != nil {
		ip = remote
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.clients == nil {
		l.clients = map[string]*clientBudget{}
	}
	c := l.clients[ip]
	if c == nil {
		if len(l.clients) >= maxClients {
			for k, v := range l.clients {
				if now.Sub(v.seen) > 10*time.Minute || len(l.clients) >= maxClients {
					delete(l.clients, k)
				}
			}
		}
		c = &clientBudget{limiter: rate.NewLimiter(l.Rate, l.Burst)}
		l.clients[ip] = c
	}
	c.seen = now
	return c.limiter.AllowN(now, 1)
}
