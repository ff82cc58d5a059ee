package notify

import (
	"bytes"
	"errors"
	"fmt"
	"text/template"
	"text/template/parse"
	"time"

	"converge.dev/converge/internal/source"
)

// MaxTemplate bounds a message template, and MaxMessage what one makes.
const (
	MaxTemplate = 4096
	MaxMessage  = 16 << 10
)

// TemplateData is what a message template sees: the event and nothing
// else. Its fields are the documented data model.
type TemplateData struct {
	Event, Namespace, Name, Revision, ShortRevision, Message string
	Time                                                     time.Time
}

// ParseTemplate reads a message template (Go's text/template). It may
// print fields, with printf and the like, and choose with if and with;
// it may not loop (range), define or call other templates: a tenant's
// template must not be able to spend the agent's CPU. No function reads
// anything.
func ParseTemplate(text string) (*template.Template, error) {
	if len(text) > MaxTemplate {
		return nil, fmt.Errorf("%d bytes, more than %d", len(text), MaxTemplate)
	}
	t, err := template.New("message").Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, err
	}
	if len(t.Templates()) > 1 {
		return nil, errors.New("define and block are not allowed")
	}
	if err := restricted(t.Tree.Root); err != nil {
		return nil, err
	}
	return t, nil
}

// restricted refuses the nodes that loop or reach other templates.
func restricted(n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := restricted(c); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		return errors.New("range is not allowed")
	case *parse.TemplateNode:
		return errors.New("template is not allowed")
	case *parse.IfNode:
		return branches(n.List, n.ElseList)
	case *parse.WithNode:
		return branches(n.List, n.ElseList)
	}
	return nil
}

func branches(list, elseList *parse.ListNode) error {
	if err := restricted(list); err != nil {
		return err
	}
	if elseList != nil {
		return restricted(elseList)
	}
	return nil
}

// render fills t with ev, bounded in size.
func render(t *template.Template, ev Event) (string, error) {
	var buf bytes.Buffer
	w := &limited{w: &buf, left: MaxMessage}
	err := t.Execute(w, TemplateData{Event: ev.Type, Namespace: ev.Namespace, Name: ev.Name, Revision: ev.Revision,
		ShortRevision: source.ShortRevision(ev.Revision), Message: ev.Message, Time: ev.Time})
	if err != nil {
		return "", fmt.Errorf("message template: %w", err)
	}
	return buf.String(), nil
}

// limited fails a write past its budget.
type limited struct {
	w    *bytes.Buffer
	left int
}

func (l *limited) Write(p []byte) (int, error) {
	if len(p) > l.left {
		return 0, fmt.Errorf("the message is over %d bytes", MaxMessage)
	}
	l.left -= len(p)
	return l.w.Write(p)
}
