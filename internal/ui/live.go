package ui

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// heartbeat keeps an idle live stream open through proxies.
const heartbeat = 20 * time.Second

// live streams, as Server-Sent Events, the changes to every Application
// the viewer may list: the Application itself, its history record and its
// events. Events carry names only; a page reads what changed as the viewer.
// A browser keeps one stream for all its pages (live-worker.js). The
// stream ends when the session does.
func (u *Server) live(w http.ResponseWriter, r *http.Request, ss *session) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	changes, cancel := u.Hub.Subscribe()
	defer cancel()
	send := func(event string, data []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(heartbeat + 10*time.Second))
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, data); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	if !send("hello", []byte(`{}`)) {
		return
	}
	tick := time.NewTicker(heartbeat)
	defer tick.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-tick.C:
			if !u.sessions.alive(ss.id) {
				return
			}
			_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if _, err := fmt.Fprint(w, ": keep-alive\n\n"); err != nil || rc.Flush() != nil {
				return
			}
		case c := <-changes:
			if c.Kind == "reload" {
				if !send("reload", []byte(`{}`)) {
					return
				}
				continue
			}
			if !u.sessions.alive(ss.id) {
				return
			}
			if !u.Local && !ss.can(r.Context(), "list", "applications", c.Namespace) {
				continue
			}
			data, _ := json.Marshal(c)
			if !send(c.Kind, data) {
				return
			}
		}
	}
}
