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
// print fields, with printf and the like, choose with if and with, and
// range over a list the data holds; it may not range over anything else
// (a number: {{range 1000000000}}), define or call other templates: a
// tenant's template must not be able to spend the agent's CPU. No
// function reads anything.
func ParseTemplate(text string) (*template.Template, error) {
	return ParseTemplateFuncs(text, nil)
}

// ParseTemplateFuncs is ParseTemplate with functions of the caller's (pure
// ones: they must read nothing).
func ParseTemplateFuncs(text string, funcs template.FuncMap) (*template.Template, error) {
	if len(text) > MaxTemplate {
		return nil, fmt.Errorf("%d bytes, more than %d", len(text), MaxTemplate)
	}
	t, err := template.New("message").Option("missingkey=error").Funcs(funcs).Parse(text)
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

// Execute fills t with data, failing past MaxMessage bytes.
func Execute(t *template.Template, data any) (string, error) {
	var buf bytes.Buffer
	if err := t.Execute(&limited{w: &buf, left: MaxMessage}, data); err != nil {
		return "", err
	}
	return buf.String(), nil
}

// maxRangeDepth bounds nested ranges: a template that ranges over a list
// within a range over a list spends at most the product of two lists.
const maxRangeDepth = 2

// restricted refuses the nodes that loop without data, or over data more
// than maxRangeDepth deep, or reach other templates.
func restricted(n parse.Node) error { return restrictedAt(n, 0) }

func restrictedAt(n parse.Node, depth int) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := restrictedAt(c, depth); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		if p := n.Pipe; p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
			return errors.New("range may only go over a field")
		} else if _, ok := p.Cmds[0].Args[0].(*parse.FieldNode); !ok {
			return errors.New("range may only go over a field")
		}
		if depth == maxRangeDepth {
			return fmt.Errorf("ranges may nest %d deep at most", maxRangeDepth)
		}
		return branches(n.List, n.ElseList, depth+1)
	case *parse.TemplateNode:
		return errors.New("template is not allowed")
	case *parse.IfNode:
		return branches(n.List, n.ElseList, depth)
	case *parse.WithNode:
		return branches(n.List, n.ElseList, depth)
	}
	return nil
}

func branches(list, elseList *parse.ListNode, depth int) error {
	if err := restrictedAt(list, depth); err != nil {
		return err
	}
	if elseList != nil {
		return restrictedAt(elseList, depth)
	}
	return nil
}

// render fills t with ev, bounded in size.
func render(t *template.Template, ev Event) (string, error) {
	out, err := Execute(t, TemplateData{Event: ev.Type, Namespace: ev.Namespace, Name: ev.Name, Revision: ev.Revision,
		ShortRevision: source.ShortRevision(ev.Revision), Message: ev.Message, Time: ev.Time})
	if err != nil {
		return "", fmt.Errorf("message template: %w", err)
	}
	return out, nil
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
