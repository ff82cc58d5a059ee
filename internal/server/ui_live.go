package server

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// heartbeat keeps an idle live stream open through proxies.
const heartbeat = 20 * time.Second

// live streams changes to one page as Server-Sent Events: every
// Application the viewer may list (the list page) or one Application
// (?app=ns/name). Events carry names only; the page reads what changed as
// the viewer.
func (u *UI) live(w http.ResponseWriter, r *http.Request, ss *session) {
	var onlyNS, onlyName string
	if app := r.URL.Query().Get("app"); app != "" {
		var ok bool
		if onlyNS, onlyName, ok = strings.Cut(app, "/"); !ok || onlyNS == "" || onlyName == "" {
			http.Error(w, "app must be NAMESPACE/NAME", http.StatusBadRequest)
			return
		}
	}
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
			if onlyName != "" && (c.Namespace != onlyNS || c.Name != onlyName) {
				continue
			}
			if onlyName == "" && c.Kind != "app" {
				continue
			}
			verb := "list"
			if onlyName != "" {
				verb = "get"
			}
			if !u.Local && !ss.can(r.Context(), verb, "applications", c.Namespace) {
				continue
			}
			data, _ := json.Marshal(c)
			if !send(c.Kind, data) {
				return
			}
		}
	}
}
