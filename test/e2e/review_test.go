//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/cli"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/testutil/gitserver"
	"converge.dev/converge/internal/testutil/kubetest"
)

var update = flag.Bool("update", false, "rewrite golden files")

func commitMode(t *testing.T, repo *gitserver.Repo, mode, msg, author string) string {
	t.Helper()
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, mode)}); err != nil {
		t.Fatal(err)
	}
	sha, err := repo.CommitAs("main", msg, author, strings.ToLower(author)+"@example.com")
	if err != nil {
		t.Fatal(err)
	}
	return sha
}

func history(t *testing.T, ns, app string, args ...string) engine.History {
	t.Helper()
	r := converge(t, append([]string{"history", app, "-n", ns, "-o", "json"}, args...)...)
	if r.code != 0 {
		t.Fatalf("converge history: exit %d: %s", r.code, r.output())
	}
	var h engine.History
	target := any(&h.Entries)
	if len(args) > 0 && args[0] == "--actions" {
		target = &h.Actions
	}
	if err := json.Unmarshal([]byte(r.stdout), target); err != nil {
		t.Fatalf("history -o json does not parse as a list: %v\n%s", err, r.stdout)
	}
	return h
}

func TestHistory_RecordsEachSyncWithCommitAuthorAndTrigger(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "hist", automated(true, true))
	a.waitApp(t, ns, "hist", 30*time.Second, "first synced", synced(first))

	second := commitMode(t, repo, "second", "Second change", "Alice")
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "hist", 10*time.Second, "second synced", synced(second))
	third := commitMode(t, repo, "third", "Third change", "Bob")
	if r := converge(t, "sync", "hist", "-n", ns, "--wait", "--timeout", "20s"); r.code != 0 {
		t.Fatalf("sync request: %s", r.output())
	}
	a.waitApp(t, ns, "hist", 10*time.Second, "third synced", synced(third))

	h := history(t, ns, "hist")
	if len(h.Entries) < 3 {
		t.Fatalf("history has %d entries, want 3: %+v", len(h.Entries), h.Entries)
	}
	want := []struct{ rev, author, subject, trigger string }{
		{third, "Bob", "Third change", engine.TriggerManual},
		{second, "Alice", "Second change", engine.TriggerWebhook},
		{first, "Test Author", "first", ""},
	}
	for i, w := range want {
		e := h.Entries[i]
		if e.Revision != w.rev || e.Commit == nil || e.Commit.Author != w.author || e.Commit.Subject != w.subject || e.Result != engine.ResultSucceeded {
			t.Errorf("entry %d = %+v (commit %+v), want revision %s by %s %q, Succeeded", i, e, e.Commit, w.rev[:12], w.author, w.subject)
		}
		if w.trigger != "" && e.Trigger.Type != w.trigger {
			t.Errorf("entry %d trigger = %+v, want %s", i, e.Trigger, w.trigger)
		}
		if e.Mode != "pull" || e.FinishedAt.Before(e.StartedAt) || len(e.Changed) == 0 {
			t.Errorf("entry %d: mode %q, started %s finished %s, changed %v", i, e.Mode, e.StartedAt, e.FinishedAt, e.Changed)
		}
	}
	if h.Entries[0].ID != h.Entries[1].ID+1 {
		t.Errorf("ids %d, %d: want consecutive", h.Entries[0].ID, h.Entries[1].ID)
	}
	if u := h.Entries[0].Trigger.User; u == "" {
		t.Errorf("manual sync does not name the user: %+v", h.Entries[0].Trigger)
	}
	if r := converge(t, "get", "hist", "-n", ns, "-o", "wide"); !strings.Contains(r.stdout, "Bob") || !strings.Contains(r.stdout, "Third change") {
		t.Errorf("get -o wide does not show the synced commit:\n%s", r.stdout)
	}
	// The table form names the same commits.
	r := converge(t, "history", "hist", "-n", ns)
	for _, s := range []string{third[:12], "Bob", "Third change", "Alice", "webhook"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("history table lacks %q:\n%s", s, r.stdout)
		}
	}
	// The sync request is an audited action, and an event.
	acts := history(t, ns, "hist", "--actions")
	if len(acts.Actions) == 0 || acts.Actions[0].Action != "sync-request" || acts.Actions[0].User == "" {
		t.Errorf("actions = %+v, want the sync request with its user", acts.Actions)
	}
	var events corev1.EventList
	if err := cluster.Client.List(context.Background(), &events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	reasons := map[string]bool{}
	for _, e := range events.Items {
		if e.InvolvedObject.Name == "hist" {
			reasons[e.Reason] = true
		}
	}
	for _, want := range []string{v1alpha1.ReasonSyncStarted, v1alpha1.ReasonSynced, v1alpha1.ReasonAction} {
		if !reasons[want] {
			t.Errorf("no %s event on the Application (got %v)", want, reasons)
		}
	}
}

func TestRollback_GitNativeCommitRestoresAndAutoSyncContinues(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "rb", automated(true, true))
	a.waitApp(t, ns, "rb", 30*time.Second, "first synced", synced(first))
	second := commitMode(t, repo, "second", "Second change", "Alice")
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "rb", 10*time.Second, "second synced", synced(second))

	// Without a target: the newest successful sync of another revision.
	r := converge(t, "rollback", "rb", "-n", ns, "--timeout", "30s")
	if r.code != 0 {
		t.Fatalf("rollback: exit %d: %s", r.code, r.output())
	}
	if got := configMapMode(t, ns); got != "first" {
		t.Fatalf("after rollback mode = %q, want first", got)
	}
	log, err := repo.Log("main")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(log[0], "Roll back deploy to "+first[:12]) {
		t.Fatalf("server log: %q, want a rollback commit on top", log)
	}
	app := &v1alpha1.Application{}
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "rb"}, app); err != nil {
		t.Fatal(err)
	}
	if app.Spec.SyncPolicy.Automated == nil || app.Spec.Pin != nil || app.Status.Rollback == nil || app.Status.Sync.Revision != app.Status.Rollback.Commit {
		t.Fatalf("after rollback: automated %+v, pin %+v, rollback %+v, revision %s", app.Spec.SyncPolicy.Automated, app.Spec.Pin, app.Status.Rollback, app.Status.Sync.Revision)
	}
	h := history(t, ns, "rb")
	if h.Entries[0].Trigger.Type != engine.TriggerRollback || h.Entries[0].Revision != app.Status.Rollback.Commit {
		t.Errorf("newest history entry = %+v, want the rollback sync", h.Entries[0])
	}

	// A later commit syncs as usual.
	if err := repo.Pull("main"); err != nil {
		t.Fatal(err)
	}
	third := commitMode(t, repo, "third", "Third change", "Bob")
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "rb", 10*time.Second, "third synced", synced(third))
	if got := configMapMode(t, ns); got != "third" {
		t.Fatalf("mode = %q, want third", got)
	}

	// A revision whose tree no longer renders is refused, and nothing moves.
	if err := repo.Write(map[string]string{"deploy/broken.yaml": "kind: [unclosed\n"}); err != nil {
		t.Fatal(err)
	}
	broken, err := repo.Commit("feature", "broken")
	if err != nil {
		t.Fatal(err)
	}
	r = converge(t, "rollback", "rb", broken, "-n", ns, "--timeout", "20s")
	if r.code == 0 || !strings.Contains(r.stderr, "no longer renders") || !strings.Contains(r.stderr, "broken.yaml") {
		t.Fatalf("rollback to an unrenderable tree: exit %d: %s", r.code, r.output())
	}
	if log2, _ := repo.Log("main"); log2[0] != "Third change" {
		t.Fatalf("a refused rollback wrote a commit: %q", log2[0])
	}
}

func TestRollback_PinHoldsRevisionUntilUnpinned(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, first := a.newApp(t, ns, "pin", automated(true, true))
	a.waitApp(t, ns, "pin", 30*time.Second, "first synced", synced(first))
	second := commitMode(t, repo, "second", "Second change", "Alice")
	a.push(t, repo, "refs/heads/main")
	a.waitApp(t, ns, "pin", 10*time.Second, "second synced", synced(second))

	if r := converge(t, "rollback", "pin", first[:12], "--pin", "-n", ns, "--timeout", "30s"); r.code != 0 {
		g := converge(t, "get", "pin", "-n", ns, "-o", "yaml")
		t.Fatalf("rollback --pin: %s\n%s", r.output(), g.stdout)
	}
	if got := configMapMode(t, ns); got != "first" {
		t.Fatalf("pinned mode = %q, want first", got)
	}
	third := commitMode(t, repo, "third", "Third change", "Bob")
	a.push(t, repo, "refs/heads/main")
	app := a.waitApp(t, ns, "pin", 10*time.Second, "pin status counting 2 commits behind", func(app *v1alpha1.Application) bool {
		return app.Status.Pin != nil && app.Status.Pin.Behind == 2 && app.Status.Pin.BranchRevision == third
	})
	if app.Status.Sync.Revision != first || configMapMode(t, ns) != "first" {
		t.Fatalf("pinned app moved: revision %s, mode %q", app.Status.Sync.Revision, configMapMode(t, ns))
	}
	pinned := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionPinned)
	if pinned == nil || pinned.Status != metav1.ConditionTrue || !strings.Contains(pinned.Message, "2 commit(s) ahead") {
		t.Fatalf("Pinned condition = %+v", pinned)
	}
	if r := converge(t, "get", "pin", "-n", ns, "-o", "wide"); !strings.Contains(r.stdout, "pinned to "+first[:12]) {
		t.Errorf("get -o wide does not say the app is pinned:\n%s", r.stdout)
	}

	if r := converge(t, "rollback", "pin", "--unpin", "-n", ns, "--timeout", "30s"); r.code != 0 {
		t.Fatalf("--unpin: %s", r.output())
	}
	app = a.waitApp(t, ns, "pin", 10*time.Second, "caught up", synced(third))
	if configMapMode(t, ns) != "third" || app.Status.Pin != nil || apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionPinned) != nil {
		t.Fatalf("after unpin: mode %q, pin %+v", configMapMode(t, ns), app.Status.Pin)
	}
	acts := history(t, ns, "pin", "--actions")
	var got []string
	for _, a := range acts.Actions {
		got = append(got, a.Action)
	}
	if strings.Join(got, ",") != "unpin,pin" {
		t.Errorf("actions = %v, want unpin, pin", got)
	}
}

const previewDeploy = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: %d
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
`

func TestPreview_DiffOfABranchShowsExactlyItsChanges(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	repo, err := a.git.NewRepo(ns + "-preview")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{
		"deploy/web.yaml":   fmt.Sprintf(previewDeploy, 2),
		"deploy/cm.yaml":    fmt.Sprintf(agentCM, "kept"),
		"deploy/extra.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\ndata:\n  k: v\n",
	}); err != nil {
		t.Fatal(err)
	}
	main, err := repo.Commit("main", "base")
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "shop", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source:     v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy"},
			SyncPolicy: automated(true, true),
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "shop", 60*time.Second, "synced and healthy", func(app *v1alpha1.Application) bool {
		return synced(main)(app) && app.Status.Health.Status == v1alpha1.HealthHealthy
	})

	if err := repo.Write(map[string]string{"deploy/web.yaml": fmt.Sprintf(previewDeploy, 3), "deploy/extra.yaml": ""}); err != nil {
		t.Fatal(err)
	}
	feature, err := repo.Commit("feature", "scale web, drop extra")
	if err != nil {
		t.Fatal(err)
	}

	r := converge(t, "diff", "shop", "--revision", "feature", "-n", ns)
	if r.code != 1 {
		t.Fatalf("diff exit %d, want 1: %s", r.code, r.output())
	}
	if !strings.Contains(r.stderr, "0 created, 1 configured, 1 unchanged, 1 deleted") {
		t.Fatalf("summary: want exactly one configured and one deleted:\n%s", r.stderr)
	}
	if !strings.Contains(r.stdout, "-  replicas: 2") || !strings.Contains(r.stdout, "+  replicas: 3") || strings.Count(r.stdout, "+++ ") != 2 {
		t.Fatalf("diff output:\n%s", r.stdout)
	}

	md := converge(t, "diff", "shop", "--revision", "feature", "--format", "markdown", "-n", ns)
	if md.code != 1 {
		t.Fatalf("markdown diff exit %d: %s", md.code, md.output())
	}
	got := strings.ReplaceAll(md.stdout, ns, "NAMESPACE")
	got = strings.ReplaceAll(got, feature[:12], "REVISION")
	got = regexp.MustCompile(`(?m)^(.*)deployment\.kubernetes\.io/revision: "\d+"$`).ReplaceAllString(got, `${1}deployment.kubernetes.io/revision: "N"`)
	golden := filepath.Join("testdata", "preview.md")
	if *update {
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if got != string(want) {
		t.Errorf("markdown differs from %s (run with -update to accept):\n%s", golden, got)
	}

	// Previewing main itself shows nothing to do, and exits 0.
	if r := converge(t, "diff", "shop", "--revision", "main", "-n", ns); r.code != 0 {
		t.Errorf("diff of the synced branch: exit %d: %s", r.code, r.output())
	}
	// The cluster was not touched by the preview.
	var d appsv1.Deployment
	if err := cluster.Client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "web"}, &d); err != nil || *d.Spec.Replicas != 2 {
		t.Fatalf("preview changed the Deployment: %v %v", err, d.Spec.Replicas)
	}
}

func TestVerify_SignedCommitsSyncUnsignedAreRefused(t *testing.T) {
	a := startAgent(t)
	ns := kubetest.Namespace(t, cluster.Client)
	dir := t.TempDir()
	pgp, err := gitserver.NewGPGSigner(dir, "Alice Signer", "alice@example.com")
	if err != nil {
		t.Fatal(err)
	}
	defer pgp.Close()
	sshKey, err := gitserver.NewSSHSigner(dir, "bob@example.com")
	if err != nil {
		t.Fatal(err)
	}
	keys := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "trusted", Namespace: ns},
		Data:       map[string][]byte{"alice.asc": []byte(pgp.Public), "allowed_signers": []byte(sshKey.Public)},
	}
	if err := cluster.Client.Create(context.Background(), keys); err != nil {
		t.Fatal(err)
	}
	repo, err := a.git.NewRepo(ns + "-signed")
	if err != nil {
		t.Fatal(err)
	}
	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "pgp")}); err != nil {
		t.Fatal(err)
	}
	first, err := repo.CommitSigned("main", "signed with OpenPGP", pgp)
	if err != nil {
		t.Fatal(err)
	}
	app := &v1alpha1.Application{
		ObjectMeta: metav1.ObjectMeta{Name: "signed", Namespace: ns},
		Spec: v1alpha1.ApplicationSpec{
			Source: v1alpha1.ApplicationSource{RepoURL: a.git.URL(repo.Name), Path: "deploy",
				Verify: &v1alpha1.SourceVerification{Mode: "head", SecretRef: v1alpha1.LocalObjectReference{Name: "trusted"}}},
			SyncPolicy: automated(true, true),
		},
	}
	if err := a.client.Create(context.Background(), app); err != nil {
		t.Fatal(err)
	}
	a.waitApp(t, ns, "signed", 30*time.Second, "OpenPGP-signed commit synced", synced(first))

	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "ssh")}); err != nil {
		t.Fatal(err)
	}
	second, err := repo.CommitSigned("main", "signed with SSH", sshKey)
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	st := a.waitApp(t, ns, "signed", 10*time.Second, "SSH-signed commit synced", synced(second))
	if c := st.Status.Sync.Commit; c == nil || c.Subject != "signed with SSH" || !strings.HasPrefix(c.Signer, "ssh:SHA256:") {
		t.Errorf("status.sync.commit = %+v, want the SSH-signed commit and its signer", c)
	}
	if got := configMapMode(t, ns); got != "ssh" {
		t.Fatalf("mode = %q, want ssh", got)
	}
	h := history(t, ns, "signed")
	if s := h.Entries[0].Signer; s == nil || s.Type != "ssh" || !strings.HasPrefix(s.Fingerprint, "SHA256:") {
		t.Errorf("newest entry signer = %+v, want the SSH key", s)
	}
	if s := h.Entries[1].Signer; s == nil || s.Type != "openpgp" || s.Fingerprint != pgp.Key {
		t.Errorf("older entry signer = %+v, want OpenPGP %s", s, pgp.Key)
	}

	if err := repo.Write(map[string]string{"deploy/cm.yaml": fmt.Sprintf(agentCM, "unsigned")}); err != nil {
		t.Fatal(err)
	}
	unsigned, err := repo.Commit("main", "not signed")
	if err != nil {
		t.Fatal(err)
	}
	a.push(t, repo, "refs/heads/main")
	got := a.waitApp(t, ns, "signed", 10*time.Second, "Stalled naming the unsigned commit", func(app *v1alpha1.Application) bool {
		st := apimeta.FindStatusCondition(app.Status.Conditions, v1alpha1.ConditionStalled)
		return st != nil && st.Status == metav1.ConditionTrue && st.Reason == v1alpha1.ReasonVerificationFailed &&
			strings.Contains(st.Message, unsigned[:12]) && strings.Contains(st.Message, "not signed")
	})
	if got.Status.Sync.Revision != second || configMapMode(t, ns) != "ssh" {
		t.Fatalf("the unsigned commit changed things: revision %s, mode %q", got.Status.Sync.Revision, configMapMode(t, ns))
	}

	// A sync request ends at once with the reason, not at its timeout.
	start := time.Now()
	if r := converge(t, "sync", "signed", "-n", ns, "--wait", "--timeout", "60s"); r.code != cli.ExitFailure || !strings.Contains(r.stderr, "not signed") || time.Since(start) > 20*time.Second {
		t.Errorf("sync --wait of an unsigned head: exit %d after %s: %s", r.code, time.Since(start), r.output())
	}

	// By hand: the head is refused (exit 1), the signed commit trusted.
	if r := converge(t, "verify", "signed", "-n", ns); r.code != 1 || !strings.Contains(r.stdout, "NOT TRUSTED") {
		t.Errorf("verify of the unsigned head: exit %d: %s", r.code, r.output())
	}
	if r := converge(t, "verify", "signed", second, "-n", ns); r.code != 0 || !strings.Contains(r.stdout, "good ssh signature") {
		t.Errorf("verify of the signed commit: exit %d: %s", r.code, r.output())
	}
}

func TestHistory_PushSyncsFromAWorkTreeRecordTheirCommits(t *testing.T) {
	ns := kubetest.Namespace(t, cluster.Client)
	dir := t.TempDir()
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	git("init", "-q", "-b", "main")
	var revs []string
	for i, author := range []string{"Alice", "Bob", "Carol"} {
		writeFile(t, filepath.Join(dir, "cm.yaml"), fmt.Sprintf(agentCM, fmt.Sprint("v", i)))
		git("add", "-A")
		git("-c", "user.name="+author, "-c", "user.email="+strings.ToLower(author)+"@example.com", "commit", "-q", "-m", "change "+fmt.Sprint(i))
		revs = append(revs, git("rev-parse", "HEAD"))
		if r := converge(t, "sync", dir, "--app", "pushed", "-n", ns); r.code != 0 {
			t.Fatalf("push sync %d: %s", i, r.output())
		}
	}
	// A README-only commit changes no object but is a new revision.
	writeFile(t, filepath.Join(dir, "README"), "docs\n")
	git("add", "-A")
	git("-c", "user.name=Dan", "-c", "user.email=dan@example.com", "commit", "-q", "-m", "docs only")
	revs = append(revs, git("rev-parse", "HEAD"))
	if r := converge(t, "sync", dir, "--app", "pushed", "-n", ns); r.code != 0 {
		t.Fatalf("push sync: %s", r.output())
	}
	// Re-running the same revision is not a new entry.
	if r := converge(t, "sync", dir, "--app", "pushed", "-n", ns); r.code != 0 {
		t.Fatalf("push resync: %s", r.output())
	}
	h := history(t, ns, "pushed")
	if len(h.Entries) != 4 {
		t.Fatalf("%d entries, want 4: %+v", len(h.Entries), h.Entries)
	}
	for i, want := range []struct{ author, subject string }{{"Dan", "docs only"}, {"Carol", "change 2"}, {"Bob", "change 1"}, {"Alice", "change 0"}} {
		e := h.Entries[i]
		if e.Mode != "push" || e.Revision != revs[3-i] || e.Commit == nil || e.Commit.Author != want.author || e.Commit.Subject != want.subject || e.Trigger.Type != engine.TriggerManual || e.Trigger.User == "" {
			t.Errorf("entry %d = %+v %+v, want %s %q at %s", i, e, e.Commit, want.author, want.subject, revs[3-i][:12])
		}
	}
}
