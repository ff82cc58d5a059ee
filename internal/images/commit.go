package images

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/template"
	"text/template/parse"
)

// Bounds of what an automation reads and writes.
const (
	MaxFiles        = 5000
	MaxBytes        = 32 << 20
	MaxFileBytes    = 4 << 20
	MaxTemplate     = 4096
	MaxMessageBytes = 16 << 10
)

// ReadManifests reads the YAML files below dir/sub (a checkout), keyed by
// their paths from dir, through an os.Root (no link leads out of dir),
// skipping links and anything not a regular file: at most MaxFiles files
// of MaxFileBytes, MaxBytes in all, else an error naming the bound.
func ReadManifests(dir, sub string) (map[string][]byte, error) {
	sub = strings.Trim(path.Clean("/"+filepath.ToSlash(sub)), "/")
	if sub == "" {
		sub = "."
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	fsys := root.FS()
	if fi, err := fs.Stat(fsys, sub); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("spec.path %q: not a directory of the repository", sub)
	}
	files := map[string][]byte{}
	total := 0
	err = fs.WalkDir(fsys, sub, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if d.Name() == ".git" {
				return fs.SkipDir
			}
			return nil
		}
		ext := strings.ToLower(path.Ext(p))
		if !d.Type().IsRegular() || (ext != ".yaml" && ext != ".yml") {
			return nil
		}
		if len(files) == MaxFiles {
			return fmt.Errorf("spec.path %q holds more than %d YAML files", sub, MaxFiles)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Size() > MaxFileBytes {
			return fmt.Errorf("%s: %d bytes, more than %d", p, info.Size(), MaxFileBytes)
		}
		if total += int(info.Size()); total > MaxBytes {
			return fmt.Errorf("spec.path %q holds more than %d bytes of YAML", sub, MaxBytes)
		}
		data, err := root.ReadFile(p)
		if err != nil {
			return err
		}
		files[p] = data
		return nil
	})
	return files, err
}

// MessageData is what a commit message template sees.
type MessageData struct {
	AutomationName string
	Updates        []PolicyUpdate
}

// PolicyUpdate is one policy's change: its old and new values and the
// files they are in.
type PolicyUpdate struct {
	Policy, Image, OldTag, NewTag string
	Files                         []string
}

// DefaultMessage is the commit message without a template.
const DefaultMessage = `Update images:{{range .Updates}} {{.Policy}} {{.NewTag}}{{end}}

{{range .Updates}}- {{.Policy}} ({{.Image}}): {{.OldTag}} -> {{.NewTag}} in {{join .Files ", "}}
{{end}}
Automation: {{.AutomationName}}
`

// Message writes data with a commit message template (Go's
// text/template; DefaultMessage when empty). A tenant's template may
// range over the data's lists, never over a number or a function's
// result, define no templates, and write at most MaxMessageBytes: it
// cannot make the agent spend more than its data.
func Message(text string, data MessageData) (string, error) {
	if text == "" {
		text = DefaultMessage
	}
	if len(text) > MaxTemplate {
		return "", fmt.Errorf("spec.commit.messageTemplate: %d bytes, more than %d", len(text), MaxTemplate)
	}
	t, err := template.New("message").Option("missingkey=error").Funcs(template.FuncMap{"join": strings.Join}).Parse(text)
	if err != nil {
		return "", fmt.Errorf("spec.commit.messageTemplate: %w", err)
	}
	if len(t.Templates()) > 1 {
		return "", errors.New("spec.commit.messageTemplate: define and block are not allowed")
	}
	if err := restricted(t.Tree.Root); err != nil {
		return "", fmt.Errorf("spec.commit.messageTemplate: %w", err)
	}
	var out capped
	if err := t.Execute(&out, data); err != nil {
		return "", fmt.Errorf("spec.commit.messageTemplate: %w", err)
	}
	return out.String(), nil
}

// restricted refuses template nodes that could loop without data or reach
// another template.
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
	case *parse.TemplateNode:
		return errors.New("template is not allowed")
	case *parse.RangeNode:
		if !overField(n.Pipe) {
			return errors.New("range may only go over a field (.Updates, .Files)")
		}
		return branches(n.List, n.ElseList)
	case *parse.IfNode:
		return branches(n.List, n.ElseList)
	case *parse.WithNode:
		return branches(n.List, n.ElseList)
	}
	return nil
}

func overField(p *parse.PipeNode) bool {
	if p == nil || len(p.Cmds) != 1 || len(p.Cmds[0].Args) != 1 {
		return false
	}
	_, ok := p.Cmds[0].Args[0].(*parse.FieldNode)
	return ok
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

// capped is a buffer that refuses more than MaxMessageBytes.
type capped struct{ bytes.Buffer }

func (c *capped) Write(p []byte) (int, error) {
	if c.Len()+len(p) > MaxMessageBytes {
		return 0, fmt.Errorf("the message is over %d bytes", MaxMessageBytes)
	}
	return c.Buffer.Write(p)
}
