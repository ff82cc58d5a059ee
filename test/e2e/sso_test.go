//go:build e2e

package e2e

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/testutil/kubetest"
	"converge.dev/converge/internal/testutil/oidcop"
)

// oidcClientSecret is the UI's secret at the test provider.
const oidcClientSecret = "e2e-oidc-client-secret"

// trustCert makes Chromium accept the certificate in certFile (by its
// public key) as if a CA it knows had issued it.
func trustCert(t *testing.T, certFile string) chromedp.ExecAllocatorOption {
	t.Helper()
	data, err := os.ReadFile(certFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM", certFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return chromedp.Flag("ignore-certificate-errors-spki-list", base64.StdEncoding.EncodeToString(sum[:]))
}

// groupRole lets the OIDC group see and sync the Applications of ns.
func groupRole(t *testing.T, ns, group string) {
	t.Helper()
	ctx := context.Background()
	for _, obj := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Name: "sso", Namespace: ns}, Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{"converge.dev"}, Resources: []string{"applications"}, Verbs: []string{"get", "list", "watch", "patch", "update"}}, readObjs}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "sso", Namespace: ns},
			RoleRef:  rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "sso"},
			Subjects: []rbacv1.Subject{{Kind: "Group", APIGroup: "rbac.authorization.k8s.io", Name: group}}},
	} {
		if err := cluster.Client.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
}

// TestUI_SingleSignOnActsAsTheProvidersUser signs in at a real OpenID
// Provider's login page (zitadel's, from its Go module) and checks that
// the UI acts with the viewer's ID token: the apiserver (which trusts the
// same issuer) maps the groups claim to Kubernetes groups, RBAC decides
// what the viewer sees, and a sync is the viewer's request in the audit
// log. Signing out ends the session here and at the provider.
func TestUI_SingleSignOnActsAsTheProvidersUser(t *testing.T) {
	oidc, err := kubetest.LocalOIDC()
	if err != nil {
		t.Fatal(err)
	}
	a := startAgent(t)
	op, err := oidcop.Start(oidc.Issuer, oidc.CertFile, oidc.KeyFile,
		oidcop.Client{ID: oidc.ClientID, Secret: oidcClientSecret, RedirectURIs: []string{a.ui + "/auth/callback"}},
		oidcop.User{ID: "alice", Password: "alice-password", Groups: []string{"team-a"}},
		oidcop.User{ID: "bob", Password: "bob-password", Groups: []string{"team-b"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = op.Close() })

	mine := kubetest.Namespace(t, cluster.Client)
	other := kubetest.Namespace(t, cluster.Client)
	_, rev := a.newApp(t, mine, "mine", automated(true, true))
	_, otherRev := a.newApp(t, other, "theirs", automated(true, true))
	a.waitApp(t, mine, "mine", 30*time.Second, "mine synced", synced(rev))
	a.waitApp(t, other, "theirs", 30*time.Second, "theirs synced", synced(otherRev))
	groupRole(t, mine, "oidc:team-a")
	groupRole(t, other, "oidc:team-b")

	b := newBrowser(t, trustCert(t, oidc.CertFile))
	b.run("opening the sign-in page", chromedp.Navigate(a.ui+"/login"), visible("#sso"))
	if got := b.text("#sso"); got != "Sign in with the test provider" {
		t.Errorf("the button says %q", got)
	}
	b.accessible("the sign-in page")
	// The apiserver asks the provider for its keys every 10 s until it
	// answers; until then it refuses the ID token and the page says so.
	deadline := time.Now().Add(40 * time.Second)
	for {
		b.run("signing in at the provider", click("#sso"), visible("#username"),
			setValue("#username", "alice"), setValue("#password", "alice-password"), click("button[type=submit]"),
			until(`document.querySelector("#apps") !== null || document.querySelector("#error") !== null`))
		if evalJS[bool](b, `document.querySelector("#apps") !== null`) {
			break
		}
		msg := b.text("#error")
		if !strings.Contains(msg, "does not accept ID tokens") || time.Now().After(deadline) {
			t.Fatalf("signing in failed: %s", msg)
		}
		time.Sleep(2 * time.Second) // the apiserver's next look at the provider
	}
	if got := b.text(".who .user"); got != "oidc:alice" {
		t.Errorf("signed in as %q, want oidc:alice", got)
	}
	apps := evalJS[[]string](b, `[...document.querySelectorAll("#apps tbody tr")].map(tr => tr.dataset.app)`)
	if len(apps) != 1 || apps[0] != mine+"/mine" {
		t.Errorf("alice (team-a) sees %q, want only %s/mine", apps, mine)
	}
	if strings.Contains(b.html(), other) {
		t.Errorf("the list names team-b's namespace %s", other)
	}

	audit, err := kubetest.LocalAuditLog()
	if err != nil {
		t.Fatal(err)
	}
	if err := audit.Mark(); err != nil {
		t.Fatal(err)
	}
	b.run("opening the app", chromedp.Navigate(a.ui+"/apps/"+mine+"/mine"), visible("#act-sync"))
	b.confirm("#act-sync")
	if msg := b.text(".flash"); !strings.Contains(msg, "Sync requested") {
		t.Fatalf("after Sync the page says %q", msg)
	}
	got := &v1alpha1.Application{}
	if err := a.client.Get(context.Background(), client.ObjectKey{Namespace: mine, Name: "mine"}, got); err != nil {
		t.Fatal(err)
	}
	requested := got.Annotations[v1alpha1.AnnotationRequestedAt]
	a.waitApp(t, mine, "mine", 30*time.Second, "alice's sync request handled", func(got *v1alpha1.Application) bool {
		return requested != "" && got.Status.LastHandledRequest == requested
	})
	patches, err := audit.Since(func(e kubetest.AuditEvent) bool {
		return e.Verb == "patch" && e.ObjectRef != nil && e.ObjectRef.Resource == "applications" && e.ObjectRef.Namespace == mine && e.ObjectRef.Name == "mine" && e.ObjectRef.Subresource == ""
	})
	if err != nil {
		t.Fatal(err)
	}
	var byAlice int
	for _, e := range patches {
		if e.Actor() == "oidc:alice" && e.ResponseStatus != nil && e.ResponseStatus.Code == http.StatusOK {
			byAlice++
		}
	}
	if byAlice == 0 {
		t.Errorf("no patch of the Application by oidc:alice in the audit log (%d patches)", len(patches))
	}

	// Signing out ends the session and sends the browser to the
	// provider's end of session.
	b.run("signing out", click(".who button.link"), until(`location.href.startsWith(`+jsString(oidc.Issuer)+`)`))
	if got := b.text("body"); !strings.Contains(got, "signed out") {
		t.Errorf("the provider's end of session says %q", got)
	}
	b.run("opening the list again", chromedp.Navigate(a.ui+"/"), visible("#sso"))
	if !strings.HasSuffix(evalJS[string](b, `location.pathname`), "/login") {
		t.Errorf("after signing out / shows %s", evalJS[string](b, `location.href`))
	}

	// Another user of another group sees the other namespace only.
	b.run("signing in as bob", click("#sso"), visible("#username"),
		setValue("#username", "bob"), setValue("#password", "bob-password"), click("button[type=submit]"), visible("#apps"))
	if got := b.text(".who .user"); got != "oidc:bob" {
		t.Errorf("signed in as %q, want oidc:bob", got)
	}
	apps = evalJS[[]string](b, `[...document.querySelectorAll("#apps tbody tr")].map(tr => tr.dataset.app)`)
	if len(apps) != 1 || apps[0] != other+"/theirs" {
		t.Errorf("bob (team-b) sees %q, want only %s/theirs", apps, other)
	}
}

// TestUI_SingleSignOnRefusesAForeignCallback checks the callback alone: a
// code and state that this browser did not start are refused.
func TestUI_SingleSignOnRefusesAForeignCallback(t *testing.T) {
	if _, err := kubetest.LocalOIDC(); err != nil {
		t.Fatal(err)
	}
	a := startAgent(t)
	res, err := http.Get(a.ui + "/auth/callback?state=forged&code=stolen")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Errorf("a forged callback got %d, want 401", res.StatusCode)
	}
	for _, ck := range res.Cookies() {
		if ck.Name == "converge_session" && ck.Value != "" {
			t.Errorf("a forged callback was given a session")
		}
	}
}

func jsString(s string) string { return `"` + strings.ReplaceAll(s, `"`, `\"`) + `"` }
