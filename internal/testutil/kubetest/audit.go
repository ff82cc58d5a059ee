package kubetest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// AuditEvent is the part of an apiserver audit event the tests look at.
type AuditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	UserAgent  string `json:"userAgent"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	// ImpersonatedUser is set when the request impersonated someone.
	ImpersonatedUser *struct {
		Username string `json:"username"`
	} `json:"impersonatedUser"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		APIGroup  string `json:"apiGroup"`
		// Subresource is "status", "scale", ... ("": the object).
		Subresource string `json:"subresource"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	// Received is when the apiserver received the request.
	Received time.Time `json:"requestReceivedTimestamp"`
}

// Actor is the user the request acted as: the impersonated one, if any.
func (e AuditEvent) Actor() string {
	if e.ImpersonatedUser != nil {
		return e.ImpersonatedUser.Username
	}
	return e.User.Username
}

// Write reports whether the request could change state: a create, update,
// patch or delete, dry-run or not.
func (e AuditEvent) Write() bool {
	switch e.Verb {
	case "create", "update", "patch", "delete", "deletecollection":
		return true
	}
	return false
}

// DryRun reports whether the request asked for a dry run.
func (e AuditEvent) DryRun() bool { return strings.Contains(e.RequestURI, "dryRun=") }

// ByVerbAndResource counts events by "verb resource[/subresource]"
// ("-" for a request on no object), with dry-runs apart.
func ByVerbAndResource(events []AuditEvent) map[string]int {
	out := map[string]int{}
	for _, e := range events {
		res := "-"
		if r := e.ObjectRef; r != nil {
			res = r.Resource
			if r.Subresource != "" {
				res += "/" + r.Subresource
			}
		}
		verb := e.Verb
		if e.DryRun() {
			verb += " (dry-run)"
		}
		out[verb+" "+res]++
	}
	return out
}

// AuditLog reads the local cluster's audit log from a remembered offset, so
// that a test sees only the requests made after Mark.
type AuditLog struct {
	Path   string
	offset int64
}

// LocalAuditLog returns the audit log of the cluster started by
// `make cluster-up`: audit.log beside the kubeconfig.
func LocalAuditLog() (*AuditLog, error) {
	kc, err := LocalKubeconfig()
	if err != nil {
		return nil, err
	}
	return &AuditLog{Path: filepath.Join(filepath.Dir(kc), "audit.log")}, nil
}

// Mark remembers the end of the log's last complete line; Since then
// returns what follows. (The apiserver may be half-way through a line.)
func (l *AuditLog) Mark() error {
	f, err := os.Open(l.Path)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	end := fi.Size()
	start := max(0, end-(1<<20))
	tail := make([]byte, end-start)
	if _, err := f.ReadAt(tail, start); err != nil && err != io.EOF {
		return err
	}
	l.offset = start + int64(bytes.LastIndexByte(tail, '\n')+1)
	return nil
}

// Since returns the events logged after the last Mark that match keep (all
// of them when keep is nil).
func (l *AuditLog) Since(keep func(AuditEvent) bool) ([]AuditEvent, error) {
	f, err := os.Open(l.Path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if _, err := f.Seek(l.offset, io.SeekStart); err != nil {
		return nil, err
	}
	var events []AuditEvent
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			// A line without its newline is still being written.
			return events, nil
		}
		if err != nil {
			return nil, err
		}
		var e AuditEvent
		if err := json.Unmarshal(line, &e); err != nil {
			return nil, fmt.Errorf("%s: malformed audit event: %w", l.Path, err)
		}
		if keep == nil || keep(e) {
			events = append(events, e)
		}
	}
}
