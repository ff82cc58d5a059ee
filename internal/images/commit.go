package images

import (
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"text/template"

	"converge.dev/converge/internal/notify"
)

// Bounds of what an automation reads and writes.
const (
	MaxFiles     = 5000
	MaxBytes     = 32 << 20
	MaxFileBytes = 4 << 20
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
// text/template; DefaultMessage when empty), under the rules of
// notification templates (notify.ParseTemplate): a tenant's template may
// range over the data's lists, never over a number, defines no templates,
// and writes at most notify.MaxMessage bytes. It cannot make the agent
// spend more than its data.
func Message(text string, data MessageData) (string, error) {
	if text == "" {
		text = DefaultMessage
	}
	t, err := notify.ParseTemplateFuncs(text, template.FuncMap{"join": strings.Join})
	if err != nil {
		return "", fmt.Errorf("spec.commit.messageTemplate: %w", err)
	}
	out, err := notify.Execute(t, data)
	if err != nil {
		return "", fmt.Errorf("spec.commit.messageTemplate: %w", err)
	}
	return out, nil
}
