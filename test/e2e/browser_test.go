//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/testutil/kubetest"
)

// browser is a headless Chromium driven over the DevTools protocol.
type browser struct {
	t   *testing.T
	ctx context.Context
}

// newBrowser starts Debian's Chromium headless (.ci/run installs it),
// with extra flags if any.
func newBrowser(t *testing.T, extra ...chromedp.ExecAllocatorOption) *browser {
	t.Helper()
	path := ""
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			path = p
			break
		}
	}
	if path == "" {
		t.Fatal("no Chromium to drive: install Debian's chromium package (.ci/run does when it is missing)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true))
	opts = append(opts, extra...)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	b := &browser{t: t, ctx: ctx}
	// The first run starts the browser; it lives as long as ctx.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting Chromium: %v", err)
	}
	return b
}

// newTab opens another tab in the same browser (sharing its cookies).
func (b *browser) newTab() *browser {
	b.t.Helper()
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	// As for the browser: the first run makes the tab, which lives as
	// long as that run's context.
	if err := chromedp.Do(ctx); err != nil {
		b.t.Fatalf("opening a tab: %v", err)
	}
	return &browser{t: b.t, ctx: ctx}
}

// run runs steps, failing the test with what it was doing.
func (b *browser) run(what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	runAs(b, what, chromedp.Steps(steps...))
}

// runAs runs one action and returns its value, failing the test with what
// it was doing.
func runAs[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		b.t.Fatalf("browser: %s: %v", what, err)
	}
	return v
}

// evalJS evaluates a JavaScript expression in the page.
func evalJS[T any](b *browser, expr string) T {
	b.t.Helper()
	return runAs(b, "evaluating "+expr, chromedp.Evaluate[T](expr))
}

// Steps by CSS selector.
// visible waits, in the page, until sel matches an element that is laid
// out (a live update may replace it at any time).
func visible(sel string) chromedp.Action[chromedp.Void] {
	return until(fmt.Sprintf(`(el => el !== null && el.getClientRects().length > 0)(document.querySelector(%q))`, sel))
}

// until waits until expr is true in the page, across navigations (an
// evaluation that fails while a page loads is tried again).
func until(expr string) chromedp.Action[chromedp.Void] {
	eval := chromedp.Evaluate[bool](expr)
	return func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		for {
			ok, err := eval(ctx, t)
			if err == nil && ok {
				return chromedp.Void{}, nil
			}
			select {
			case <-ctx.Done():
				return chromedp.Void{}, fmt.Errorf("waiting for %s: %w (last: %v)", expr, ctx.Err(), err)
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}
func click(sel string) chromedp.Action[chromedp.Void] {
	return chromedp.Click(chromedp.CSS(sel), chromedp.NodeVisible)
}
func setValue(sel, v string) chromedp.Action[chromedp.Void] {
	return chromedp.SetValue(chromedp.CSS(sel), v)
}

// html is the page's HTML as the browser has it now.
func (b *browser) html() string {
	b.t.Helper()
	return runAs(b, "reading the page", chromedp.OuterHTML(chromedp.CSS("html")))
}

// text is the text of the first element matching sel, once there. It is
// read in the page: a live update may replace the element between a lookup
// and a read by the DevTools protocol.
func (b *browser) text(sel string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	expr := fmt.Sprintf(`(el => el === null ? null : el.innerText)(document.querySelector(%q))`, sel)
	for {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[*string](expr))
		if err == nil && s != nil {
			return *s
		}
		select {
		case <-ctx.Done():
			b.t.Fatalf("browser: reading %s: %v (last: %v)", sel, ctx.Err(), err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// value is the value of the form field sel.
func (b *browser) value(sel string) string {
	b.t.Helper()
	return runAs(b, "reading "+sel, chromedp.Value(chromedp.CSS(sel)))
}

// confirm clicks a button that asks first, then the dialog's Confirm, and
// waits for the page the action leads to. The clicks are made in the page
// (a live update may replace the button between a lookup and a click by
// the DevTools protocol).
func (b *browser) confirm(sel string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	// The mark goes with this page: the next one has a flash of its own.
	evalJS[bool](b, `window.beforeAction = true`)
	err := b.waitJS(ctx, fmt.Sprintf(`(el => el !== null && (el.click(), true))(document.querySelector(%q))`, sel))
	if err == nil {
		err = b.waitJS(ctx, `document.getElementById("confirm").open`)
	}
	if err == nil {
		err = b.waitJS(ctx, `(document.getElementById("confirm-ok").click(), true)`)
	}
	if err == nil {
		err = b.waitJS(ctx, `window.beforeAction === undefined && document.readyState === "complete" && document.querySelector(".flash") !== null`)
	}
	if err != nil {
		b.t.Fatalf("browser: clicking %s and confirming: %v\nthe page:\n%s", sel, err, b.html())
	}
}

// waitJS waits until expr is true in the page, across navigations.
func (b *browser) waitJS(ctx context.Context, expr string) error {
	_, err := chromedp.Run(ctx, until(expr))
	return err
}

// waitLive waits until the page's live updates are connected.
func (b *browser) waitLive() {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	if err := b.waitJS(ctx, `document.getElementById("live-dot").classList.contains("on")`); err != nil {
		b.t.Fatalf("the page's live updates did not connect: %v", err)
	}
}

// screenshot writes the element sel (or the whole page for "") to
// docs/images/name, for docs/ui.md.
func (b *browser) screenshot(sel, name string) {
	b.t.Helper()
	root, err := kubetest.RepoRoot()
	if err != nil {
		b.t.Fatal(err)
	}
	var png []byte
	if sel == "" {
		png = runAs(b, "taking a screenshot", chromedp.FullScreenshot(100))
	} else {
		png = runAs(b, "taking a screenshot of "+sel, chromedp.Screenshot(chromedp.CSS(sel), chromedp.NodeVisible))
	}
	dir := filepath.Join(root, "docs", "images")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// localUI runs `converge ui` with kubeconfig until the test ends and
// returns the sign-in URL it printed and the file its log goes to.
func localUI(t *testing.T, kubeconfig string) (string, string) {
	t.Helper()
	logs, err := os.CreateTemp("", "converge-e2e-ui-*.log")
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		code := cli.Execute(ctx, cli.Streams{In: strings.NewReader(""), Out: pw, ErrOut: logs},
			[]string{"ui", "--kubeconfig", kubeconfig, "--address", "127.0.0.1:0"})
		fmt.Fprintf(logs, "converge ui exited with %d\n", code)
		pw.Close()
	}()
	t.Cleanup(func() { cancel(); <-done; logs.Close() })
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		data, _ := os.ReadFile(logs.Name())
		t.Fatalf("converge ui printed no URL: %v\n%s", err, data)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	return strings.TrimSpace(line), logs.Name()
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// signIn signs a plain HTTP client in to the agent's UI with token and
// returns it and the session's CSRF token.
func signIn(t *testing.T, base, token string) (*http.Client, string) {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	page := getPage(t, c, base+"/login", http.StatusOK)
	m := csrfField.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("the sign-in page has no CSRF field:\n%s", page)
	}
	resp, err := c.PostForm(base+"/login", url.Values{"csrf": {m[1]}, "token": {token}})
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Request.URL.Path != "/" {
		t.Fatalf("signing in: %s at %s:\n%s", resp.Status, resp.Request.URL, body)
	}
	m = csrfField.FindStringSubmatch(string(body))
	if m == nil {
		t.Fatalf("the list page has no CSRF field:\n%s", body)
	}
	return c, m[1]
}

// getPage GETs url and checks the status.
func getPage(t *testing.T, c *http.Client, url string, want int) string {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("GET %s: %s, want %d:\n%s", url, resp.Status, want, body)
	}
	return string(body)
}

// axeScript is axe-core, which hack/test-deps.sh installs with npm for the
// tests only.
func axeScript(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("CONVERGE_AXE_DIR")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(home, ".cache", "converge", "axe-core")
	}
	data, err := os.ReadFile(filepath.Join(dir, "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		t.Fatalf("no axe-core for the accessibility check (%v): `make test-deps` installs it", err)
	}
	return string(data)
}

// accessible runs axe-core's WCAG 2.1 A and AA rules on the page as it is
// and fails the test for each violation, naming the rule and the elements.
func (b *browser) accessible(page string) {
	b.t.Helper()
	if !evalJS[bool](b, `typeof window.axe === "object"`) {
		runAs(b, "loading axe-core", chromedp.Evaluate[bool](axeScript(b.t)+";true"))
	}
	type violation struct {
		ID, Impact, Help string
		Targets          []string
	}
	found := runAs(b, "checking "+page+" with axe-core", chromedp.Evaluate[[]violation](`axe.run(document, {
		runOnly: {type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]}, resultTypes: ["violations"]
	}).then(r => r.violations.map(v => ({id: v.id, impact: v.impact || "", help: v.help,
		targets: v.nodes.slice(0, 5).map(n => n.target.join(" "))})))`, chromedp.EvalAwaitPromise))
	for _, v := range found {
		b.t.Errorf("%s: accessibility (axe-core %s, %s): %s: %s", page, v.ID, v.Impact, v.Help, strings.Join(v.Targets, "; "))
	}
}
