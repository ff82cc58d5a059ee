// Command demo is `make demo`: converge in pull mode on the local cluster.
// It serves examples/ as a Git repository (git http-backend on loopback),
// installs the CRDs, runs the agent, creates an Application per example,
// prints their status until all are Synced and Healthy, then pushes a
// commit (delivered by webhook) and makes a live drift, and shows both
// handled; seals a password into Git and shows the agent's Secret; prints
// the history and rolls back in Git. With DEMO_EXIT=1 it exits 0 once everything has converged;
// otherwise it keeps running until Ctrl-C.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

const (
	namespace = "demo"
	secret    = "demo-webhook-secret"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "\n\033[1m==> "+format+"\033[0m\n", args...)
}

func run(ctx context.Context) error {
	root, err := kubetest.RepoRoot()
	if err != nil {
		return err
	}
	kubeconfig := filepath.Join(root, ".cluster", "kubeconfig")
	converge := filepath.Join(root, "bin", "converge")

	step("Serving examples/ as a Git repository (git http-backend on loopback)")
	gitDir := filepath.Join(root, ".cluster", "demo-git")
	_ = os.RemoveAll(gitDir)
	git, err := gitserver.New(gitDir)
	if err != nil {
		return err
	}
	if err := git.Start("127.0.0.1:0"); err != nil {
		return err
	}
	defer git.Stop()
	repo, err := git.NewRepo("examples")
	if err != nil {
		return err
	}
	if err := copyTree(filepath.Join(root, "examples"), repo.Work); err != nil {
		return err
	}
	first, err := repo.Commit("main", "examples")
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s at %s\n", git.URL("examples"), first[:12])

	step("Installing the CRDs")
	if err := runCmd(ctx, converge, "install", "--crds-only", "--apply", "--kubeconfig", kubeconfig); err != nil {
		return err
	}

	env, err := kubetest.LocalCluster(v1alpha1.AddToScheme)
	if err != nil {
		return err
	}
	c := env.Client
	for _, ns := range []string{namespace, "converge-system"} {
		if err := client.IgnoreAlreadyExists(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})); err != nil {
			return err
		}
	}

	step("Starting the agent (logs: .cluster/logs/agent.log)")
	webhookAddr, err := freeAddr()
	if err != nil {
		return err
	}
	sealingAddr, err := freeAddr()
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(root, ".cluster", "logs", "agent.log"))
	if err != nil {
		return err
	}
	agent := exec.CommandContext(ctx, converge, "agent", "--kubeconfig", kubeconfig,
		"--metrics-bind-address", "127.0.0.1:0", "--health-probe-bind-address", "0",
		"--webhook-bind-address", webhookAddr, "--sealing-bind-address", sealingAddr, "--cache-dir", filepath.Join(root, ".cluster", "agent-cache"))
	agent.Env = append(os.Environ(), "CONVERGE_WEBHOOK_SECRET="+secret)
	agent.Stdout, agent.Stderr = logFile, logFile
	if err := agent.Start(); err != nil {
		return err
	}
	defer func() { _ = agent.Process.Signal(syscall.SIGTERM); _ = agent.Wait() }()

	step("Creating Applications: plain YAML, a Kustomize overlay and a Helm chart")
	policy := v1alpha1.SyncPolicy{
		Automated: &v1alpha1.AutomatedSync{Prune: true, SelfHeal: true},
		Interval:  &metav1.Duration{Duration: time.Minute},
	}
	apps := []*v1alpha1.Application{
		app("plain", git.URL("examples"), "plain", policy, nil),
		app("api", git.URL("examples"), "kustomize/overlays/prod", policy, nil),
		app("podinfo", git.URL("examples"), "helm/podinfo", policy, &v1alpha1.HelmSource{ReleaseName: "demo"}),
	}
	for _, a := range apps {
		existing := &v1alpha1.Application{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(a), existing); err == nil {
			existing.Spec = a.Spec
			if err := c.Update(ctx, existing); err != nil {
				return err
			}
			continue
		}
		if err := c.Create(ctx, a); err != nil {
			return err
		}
	}

	step("Waiting until every Application is Synced and Healthy")
	if err := waitAll(ctx, c, apps, first, 3*time.Minute); err != nil {
		return err
	}

	step("A commit arrives: examples/plain greets differently (delivered by webhook)")
	cm := filepath.Join(repo.Work, "plain", "app.yaml")
	data, err := os.ReadFile(cm)
	if err != nil {
		return err
	}
	if err := os.WriteFile(cm, bytes.Replace(data, []byte("greeting: hello"), []byte("greeting: hello from git"), 1), 0o644); err != nil {
		return err
	}
	second, err := repo.Commit("main", "plain: new greeting")
	if err != nil {
		return err
	}
	start := time.Now()
	if err := webhook(ctx, "http://"+webhookAddr+"/hooks/git", git.URL("examples")); err != nil {
		return err
	}
	if err := waitAll(ctx, c, apps, second, time.Minute); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "commit %s synced %s after the push\n", second[:12], time.Since(start).Round(time.Millisecond))

	step("Drift: scaling deployment/web to 5 behind converge's back")
	var d appsv1.Deployment
	key := client.ObjectKey{Namespace: namespace, Name: "web"}
	if err := c.Get(ctx, key, &d); err != nil {
		return err
	}
	five := int32(5)
	d.Spec.Replicas = &five
	if err := c.Update(ctx, &d); err != nil {
		return err
	}
	start = time.Now()
	err = kubetest.WaitFor(ctx, 10*time.Second, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, &d); err != nil {
			return false, err
		}
		return *d.Spec.Replicas == 2, fmt.Errorf("replicas still %d", *d.Spec.Replicas)
	})
	if err != nil {
		return fmt.Errorf("self-heal: %w", err)
	}
	fmt.Fprintf(os.Stderr, "healed: replicas back to 2 after %s\n", time.Since(start).Round(time.Millisecond))
	if err := waitAll(ctx, c, apps, second, time.Minute); err != nil {
		return err
	}

	step("Secrets in Git: sealing a password with the cluster's certificate")
	third, err := sealedCommit(ctx, converge, kubeconfig, repo)
	if err != nil {
		return err
	}
	if err := webhook(ctx, "http://"+webhookAddr+"/hooks/git", git.URL("examples")); err != nil {
		return err
	}
	if err := waitAll(ctx, c, apps, third, time.Minute); err != nil {
		return err
	}
	var db corev1.Secret
	err = kubetest.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: "db"}, &db)
		return err == nil && len(db.Data["password"]) > 0, err
	})
	if err != nil {
		return fmt.Errorf("the sealed Secret: %w", err)
	}
	fmt.Fprintf(os.Stderr, "Git holds plain/db-sealed.yaml (ciphertext only); the agent wrote Secret %s/db (%d-byte password, not shown)\n", namespace, len(db.Data["password"]))

	step("History: converge history plain")
	if err := runCmd(ctx, converge, "history", "plain", "-n", namespace, "--kubeconfig", kubeconfig); err != nil {
		return err
	}

	step("Rollback in Git: converge rollback plain (a revert commit, pushed and synced)")
	if err := runCmd(ctx, converge, "rollback", "plain", "-n", namespace, "--kubeconfig", kubeconfig, "--timeout", "2m"); err != nil {
		return err
	}
	log, err := exec.CommandContext(ctx, "git", "--git-dir", repo.Bare, "log", "--oneline", "-4", "main").Output()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "the server's main branch now:\n%s", log)
	// The other apps learn of the new commit as they would from the Git
	// server: by webhook.
	if err := webhook(ctx, "http://"+webhookAddr+"/hooks/git", git.URL("examples")); err != nil {
		return err
	}
	if err := repo.Pull("main"); err != nil {
		return err
	}

	step("Starting the web UI (converge ui; logs: .cluster/logs/ui.log)")
	url, stopUI, err := startUI(ctx, converge, kubeconfig, filepath.Join(root, ".cluster", "logs", "ui.log"))
	if err != nil {
		return err
	}
	defer stopUI()
	fmt.Fprintf(os.Stderr, "Web UI: %s\n", url)

	if os.Getenv("DEMO_EXIT") == "1" {
		step("Everything converged (DEMO_EXIT=1: exiting)")
		return nil
	}
	step("Running until Ctrl-C. Open the web UI at %s\nTry: kubectl --kubeconfig .cluster/kubeconfig -n demo delete deploy web", url)
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	last := ""
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			last = printStatus(ctx, c, apps, last)
		}
	}
}

func app(name, url, path string, policy v1alpha1.SyncPolicy, helm *v1alpha1.HelmSource) *v1alpha1.Application {
	return &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: url, Path: path, Helm: helm},
			SyncPolicy: policy,
		},
	}
}

func waitAll(ctx context.Context, c client.Client, apps []*v1alpha1.Application, revision string, timeout time.Duration) error {
	last := ""
	return kubetest.WaitFor(ctx, timeout, func(ctx context.Context) (bool, error) {
		var buf bytes.Buffer
		done := renderStatus(ctx, c, apps, revision, &buf)
		if s := buf.String(); s != last {
			fmt.Fprint(os.Stderr, s)
			last = s
		}
		return done, fmt.Errorf("not converged:\n%s", last)
	})
}

// printStatus prints the apps' table when it differs from last, and
// returns it.
func printStatus(ctx context.Context, c client.Client, apps []*v1alpha1.Application, last string) string {
	var buf bytes.Buffer
	renderStatus(ctx, c, apps, "", &buf)
	if s := buf.String(); s != last {
		fmt.Fprint(os.Stderr, s)
		return s
	}
	return last
}

// renderStatus writes a table of the apps and reports whether all are
// Synced at revision (any, when empty) and Healthy.
func renderStatus(ctx context.Context, c client.Client, apps []*v1alpha1.Application, revision string, buf *bytes.Buffer) bool {
	tw := tabwriter.NewWriter(buf, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "APP\tSYNC\tHEALTH\tREVISION\tMESSAGE")
	all := true
	for _, a := range apps {
		got := &v1alpha1.Application{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(a), got); err != nil {
			fmt.Fprintf(tw, "%s\t-\t-\t-\t%v\n", a.Name, err)
			all = false
			continue
		}
		msg := ""
		if r := apimeta.FindStatusCondition(got.Status.Conditions, v1alpha1.ConditionReady); r != nil {
			msg = r.Message
		}
		rev := got.Status.Sync.Revision
		ok := got.Status.Sync.Status == v1alpha1.SyncStatusSynced && got.Status.Health.Status == v1alpha1.HealthHealthy && (revision == "" || rev == revision)
		all = all && ok
		if len(rev) > 12 {
			rev = rev[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, dash(string(got.Status.Sync.Status)), dash(string(got.Status.Health.Status)), dash(rev), msg)
	}
	tw.Flush()
	return all
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func webhook(ctx context.Context, url, repo string) error {
	body := fmt.Sprintf(`{"ref":"refs/heads/main","repository":{"clone_url":%q}}`, repo)
	mac := hmac.New(sha256.New, []byte(secret))
	mac.Write([]byte(body))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-Hub-Signature-256", "sha256="+hex.EncodeToString(mac.Sum(nil)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

func runCmd(ctx context.Context, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}

// sealedCommit seals a generated password with `converge seal` (the
// certificate read from the cluster) and commits the SealedSecret to
// examples/plain.
func sealedCommit(ctx context.Context, converge, kubeconfig string, repo *gitserver.Repo) (string, error) {
	pw := make([]byte, 18)
	if _, err := rand.Read(pw); err != nil {
		return "", err
	}
	manifest := fmt.Sprintf("apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: %s}\nstringData: {password: %x}\n", namespace, pw)
	var sealed []byte
	err := kubetest.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		cmd := exec.CommandContext(ctx, converge, "seal", "--kubeconfig", kubeconfig)
		cmd.Stdin = strings.NewReader(manifest)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			// The agent makes its first key on start: a few seconds.
			return false, fmt.Errorf("%v: %s", err, stderr.String())
		}
		sealed = out
		return true, nil
	})
	if err != nil {
		return "", err
	}
	if err := repo.Write(map[string]string{"plain/db-sealed.yaml": string(sealed)}); err != nil {
		return "", err
	}
	return repo.Commit("main", "plain: sealed db password")
}

// startUI runs `converge ui` (on 127.0.0.1:9393, or a free port when that
// is taken) and returns the URL it prints, which signs the browser in.
func startUI(ctx context.Context, converge, kubeconfig, logPath string) (string, func(), error) {
	addr := "127.0.0.1:9393"
	if ln, err := net.Listen("tcp", addr); err != nil {
		addr = "127.0.0.1:0"
	} else {
		ln.Close()
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return "", nil, err
	}
	cmd := exec.CommandContext(ctx, converge, "ui", "--kubeconfig", kubeconfig, "--address", addr)
	cmd.Stderr = logFile
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", nil, err
	}
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait(); logFile.Close() }
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil {
		stop()
		return "", nil, fmt.Errorf("converge ui printed no URL (see %s): %w", logPath, err)
	}
	return strings.TrimSpace(line), stop, nil
}
