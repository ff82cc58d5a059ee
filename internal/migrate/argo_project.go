package migrate

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/validation"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/source"
)

// Argo CD's Secret kinds, by the label it gives them.
const (
	argoSecretType   = "argocd.argoproj.io/secret-type"
	systemNamespace  = "converge-system"
	defaultDeployer  = "converge-deployer"
	argoProjectField = "spec.project"
)

// argoProject translates an AppProject into a Tenant governing the
// namespaces its Applications go to: sourceRepos, destinations,
// cluster-scoped kinds allowed, kinds denied and sync windows mean the
// same; what has no equivalent is named.
func (t *translator) argoProject(u *unstructured.Unstructured, apps []v1alpha1.Application) {
	spec := mapAt(u.Object, "spec")
	ten := v1alpha1.Tenant{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Tenant"},
		ObjectMeta: metav1.ObjectMeta{Name: u.GetName()}}
	ts := &ten.Spec
	repos, _, _ := unstructured.NestedStringSlice(spec, "sourceRepos")
	for _, r := range repos {
		switch {
		case strings.HasPrefix(r, "!"):
			t.note(u, "spec.sourceRepos", "%s: deny patterns are not supported (a Tenant lists what it allows); not carried over", r)
		case r == "*":
			ts.SourceRepos = append(ts.SourceRepos, "*/**")
		default:
			ts.SourceRepos = append(ts.SourceRepos, source.NormalizeURL(r))
		}
	}
	t.projectDestinations(u, spec, ts)
	// The Tenant governs where its Applications live: their namespaces.
	seen := map[string]bool{}
	for _, a := range apps {
		if !seen[a.Namespace] {
			seen[a.Namespace] = true
			ts.Namespaces = append(ts.Namespaces, a.Namespace)
		}
	}
	for _, ns := range ts.DestinationNamespaces {
		if ns != "*" && !seen[ns] {
			seen[ns] = true
			ts.Namespaces = append(ts.Namespaces, ns)
		}
	}
	sort.Strings(ts.Namespaces)
	if len(ts.Namespaces) == 0 {
		t.note(u, "spec.destinations", "no Application of this project and no destination namespace to govern: not translated")
		return
	}
	ts.ServiceAccountName = t.projectAccount(u, spec)
	ts.ClusterResources = t.kinds(u, spec, "clusterResourceWhitelist")
	ts.DeniedResources = append(t.kinds(u, spec, "clusterResourceBlacklist"), t.kinds(u, spec, "namespaceResourceBlacklist")...)
	if wl, _, _ := unstructured.NestedSlice(spec, "namespaceResourceWhitelist"); len(wl) > 0 {
		t.note(u, "spec.namespaceResourceWhitelist", "a Tenant allows every namespaced kind but its deniedResources: list the kinds to refuse there instead")
	}
	ts.SyncWindows = t.projectWindows(u, spec)
	for _, f := range []string{"roles", "signatureKeys", "orphanedResources", "sourceNamespaces", "permitOnlyProjectScopedClusters"} {
		if _, ok := spec[f]; ok {
			t.note(u, "spec."+f, "no Tenant equivalent; not carried over (docs/compat.md)")
		}
	}
	t.res.Tenants = append(t.res.Tenants, ten)
}

// projectDestinations reads an AppProject's destinations: namespaces on
// the agent's cluster, and other clusters mapped to converge Clusters.
func (t *translator) projectDestinations(u *unstructured.Unstructured, spec map[string]any, ts *v1alpha1.TenantSpec) {
	dests, _, _ := unstructured.NestedSlice(spec, "destinations")
	seen := map[string]bool{}
	for i, d := range dests {
		m, _ := d.(map[string]any)
		server, name, ns := strAt(m, "server"), strAt(m, "name"), strAt(m, "namespace")
		field := fmt.Sprintf("spec.destinations[%d]", i)
		if server == "*" || name == "*" {
			t.note(u, field, "every cluster: a Tenant names its Clusters (spec.clusters); not carried over")
		} else if !inCluster(server, name) {
			if c, ok := t.cluster(u, field, "another cluster ("+firstNonEmpty(server, name)+")", server, name); ok && !seen["cluster/"+c] {
				seen["cluster/"+c] = true
				ts.Clusters = append(ts.Clusters, c)
			}
		}
		if ns == "" || seen[ns] {
			continue
		}
		if ns == "*" {
			t.note(u, field+".namespace", "*: a Tenant over every namespace would overlap every other Tenant; the namespaces of the project's Applications are used")
			continue
		}
		seen[ns] = true
		ts.DestinationNamespaces = append(ts.DestinationNamespaces, ns)
	}
}

// projectAccount is the ServiceAccount the Tenant's apps run as: Argo CD's
// destinationServiceAccounts when they name one, else converge-deployer,
// which the team must make (named).
func (t *translator) projectAccount(u *unstructured.Unstructured, spec map[string]any) string {
	list, _, _ := unstructured.NestedSlice(spec, "destinationServiceAccounts")
	names := map[string]bool{}
	for _, d := range list {
		m, _ := d.(map[string]any)
		if sa := strAt(m, "defaultServiceAccount"); sa != "" {
			names[sa[strings.LastIndex(sa, ":")+1:]] = true
		}
	}
	if len(names) == 1 {
		for n := range names {
			return n
		}
	}
	if len(names) > 1 {
		t.note(u, "spec.destinationServiceAccounts", "several accounts: a Tenant runs every app as one ServiceAccount (in each app's namespace); %s is used", defaultDeployer)
	} else {
		t.note(u, "spec", "Argo CD applies with its own rights; a Tenant's apps run as a ServiceAccount: create %s, with the rights the project's apps need, in each of its namespaces", defaultDeployer)
	}
	return defaultDeployer
}

// kinds reads a list of {group, kind} of an AppProject.
func (t *translator) kinds(u *unstructured.Unstructured, spec map[string]any, field string) []v1alpha1.GroupKind {
	list, _, _ := unstructured.NestedSlice(spec, field)
	var out []v1alpha1.GroupKind
	for _, k := range list {
		m, _ := k.(map[string]any)
		if strAt(m, "kind") == "" {
			t.note(u, "spec."+field, "an entry without a kind: not carried over")
			continue
		}
		out = append(out, v1alpha1.GroupKind{Group: strAt(m, "group"), Kind: strAt(m, "kind")})
	}
	return out
}

var cronDays = map[string]string{"0": "Sun", "1": "Mon", "2": "Tue", "3": "Wed", "4": "Thu", "5": "Fri", "6": "Sat", "7": "Sun",
	"sun": "Sun", "mon": "Mon", "tue": "Tue", "wed": "Wed", "thu": "Thu", "fri": "Fri", "sat": "Sat"}

// projectWindows translates sync windows whose schedule is a daily or
// weekly time ("M H * * D"): converge's windows have days, a start and an
// end. Others, and windows for some apps only, are named.
func (t *translator) projectWindows(u *unstructured.Unstructured, spec map[string]any) []v1alpha1.SyncWindow {
	list, _, _ := unstructured.NestedSlice(spec, "syncWindows")
	var out []v1alpha1.SyncWindow
	for i, w := range list {
		m, _ := w.(map[string]any)
		field := fmt.Sprintf("spec.syncWindows[%d]", i)
		for _, sel := range []string{"applications", "namespaces", "clusters"} {
			if l, _, _ := unstructured.NestedStringSlice(m, sel); len(l) > 0 && !(len(l) == 1 && l[0] == "*") {
				t.note(u, field+"."+sel, "a Tenant's windows hold all its apps; this one is carried over for all of them")
			}
		}
		win, err := cronWindow(strAt(m, "schedule"), strAt(m, "duration"))
		if err != nil {
			t.note(u, field, "%v; not carried over", err)
			continue
		}
		win.Kind = strAt(m, "kind")
		win.TimeZone = strAt(m, "timeZone")
		if manual, ok, _ := unstructured.NestedBool(m, "manualSync"); ok {
			win.ManualSync = &manual
		}
		out = append(out, win)
	}
	return out
}

// cronWindow reads "M H * * D" and a duration into a window.
func cronWindow(schedule, dur string) (v1alpha1.SyncWindow, error) {
	f := strings.Fields(schedule)
	if len(f) != 5 || f[2] != "*" || f[3] != "*" {
		return v1alpha1.SyncWindow{}, fmt.Errorf("schedule %q: only \"M H * * D\" (a time on some or all days) is carried over", schedule)
	}
	minute, err1 := strconv.Atoi(f[0])
	hour, err2 := strconv.Atoi(f[1])
	d, err3 := time.ParseDuration(dur)
	if err1 != nil || err2 != nil || err3 != nil || minute > 59 || hour > 23 || d <= 0 || d >= 24*time.Hour {
		return v1alpha1.SyncWindow{}, fmt.Errorf("schedule %q, duration %q: want a fixed minute and hour and a duration under a day", schedule, dur)
	}
	w := v1alpha1.SyncWindow{Start: fmt.Sprintf("%02d:%02d", hour, minute)}
	end := time.Date(0, 1, 1, hour, minute, 0, 0, time.UTC).Add(d)
	w.End = end.Format("15:04")
	if f[4] != "*" {
		for _, day := range strings.Split(f[4], ",") {
			name, ok := cronDays[strings.ToLower(day)]
			if !ok {
				return v1alpha1.SyncWindow{}, fmt.Errorf("schedule %q: day %q: list days (0-6 or names), no ranges", schedule, day)
			}
			w.Days = append(w.Days, name)
		}
	}
	return w, nil
}

// argoSecret handles Argo CD's labelled Secrets: clusters become converge
// Clusters (with their credentials), repository credentials the Secrets
// the Applications' sources name. Credentials are carried in the output
// (the input held them); they are never printed on stderr.
func (t *translator) argoSecret(u *unstructured.Unstructured) {
	switch typ := u.GetLabels()[argoSecretType]; typ {
	case "cluster":
		t.argoCluster(u)
	case "repository", "repo-creds":
		t.repoCreds = append(t.repoCreds, u)
	default:
		t.note(u, "metadata.labels", "%s=%s is not translated", argoSecretType, typ)
	}
}

// secretData is a Secret's data and stringData, decoded.
func secretData(u *unstructured.Unstructured) map[string]string {
	out := map[string]string{}
	data, _, _ := unstructured.NestedStringMap(u.Object, "data")
	for k, v := range data {
		if b, err := base64.StdEncoding.DecodeString(v); err == nil {
			out[k] = string(b)
		}
	}
	sd, _, _ := unstructured.NestedStringMap(u.Object, "stringData")
	for k, v := range sd {
		out[k] = v
	}
	return out
}

// argoClusterConfig is the part of Argo CD's cluster config converge
// reads; the rest is named.
type argoClusterConfig struct {
	BearerToken     string          `json:"bearerToken"`
	Username        string          `json:"username"`
	AWSAuthConfig   json.RawMessage `json:"awsAuthConfig"`
	ExecProvider    json.RawMessage `json:"execProviderConfig"`
	TLSClientConfig struct {
		Insecure   bool   `json:"insecure"`
		ServerName string `json:"serverName"`
		CAData     []byte `json:"caData"`
		CertData   []byte `json:"certData"`
		KeyData    []byte `json:"keyData"`
	} `json:"tlsClientConfig"`
}

// argoCluster translates a cluster Secret into a Cluster and the Secret
// of its credentials; Applications aimed at its server or name go to it.
func (t *translator) argoCluster(u *unstructured.Unstructured) {
	d := secretData(u)
	server, name := d["server"], d["name"]
	if server == "" {
		t.note(u, "data.server", "missing: not translated")
		return
	}
	var cfg argoClusterConfig
	if err := json.Unmarshal([]byte(d["config"]), &cfg); err != nil {
		t.note(u, "data.config", "not JSON: not translated")
		return
	}
	switch {
	case len(cfg.AWSAuthConfig) > 0 && string(cfg.AWSAuthConfig) != "null":
		t.note(u, "data.config.awsAuthConfig", "IAM authentication is not supported: give the Cluster a token or a client certificate; not translated")
		return
	case len(cfg.ExecProvider) > 0 && string(cfg.ExecProvider) != "null":
		t.note(u, "data.config.execProviderConfig", "exec credential plugins are not supported: give the Cluster a token or a client certificate; not translated")
		return
	case cfg.Username != "":
		t.note(u, "data.config.username", "basic authentication is not supported: not translated")
		return
	case cfg.TLSClientConfig.Insecure:
		t.note(u, "data.config.tlsClientConfig.insecure", "converge always verifies the apiserver's certificate: give its CA (caData); not translated")
		return
	}
	creds := map[string][]byte{}
	switch {
	case cfg.BearerToken != "":
		creds["token"] = []byte(cfg.BearerToken)
	case len(cfg.TLSClientConfig.CertData) > 0 && len(cfg.TLSClientConfig.KeyData) > 0:
		creds["tls.crt"], creds["tls.key"] = cfg.TLSClientConfig.CertData, cfg.TLSClientConfig.KeyData
	default:
		t.note(u, "data.config", "neither a bearer token nor a client certificate: not translated")
		return
	}
	cname := dnsName(firstNonEmpty(name, u.GetName()))
	secretName := "cluster-" + cname
	t.res.Secrets = append(t.res.Secrets, corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: systemNamespace}, Data: creds})
	// Its labels select it in ApplicationSets' clusters generators.
	labels := map[string]string{}
	for k, v := range u.GetLabels() {
		if !strings.HasPrefix(k, "argocd.argoproj.io/") {
			labels[k] = v
		}
	}
	t.res.Clusters = append(t.res.Clusters, v1alpha1.Cluster{TypeMeta: metav1.TypeMeta{APIVersion: v1alpha1.GroupVersion.String(), Kind: "Cluster"},
		ObjectMeta: metav1.ObjectMeta{Name: cname, Labels: labels},
		Spec: v1alpha1.ClusterSpec{Server: server, CAData: cfg.TLSClientConfig.CAData, TLSServerName: cfg.TLSClientConfig.ServerName,
			SecretRef: v1alpha1.LocalObjectReference{Name: secretName}}})
	// What names this cluster now goes to the Cluster made of it, unless
	// the user mapped it.
	for _, key := range []string{server, name} {
		if _, mapped := t.opts.Clusters[key]; key != "" && !mapped {
			t.opts.Clusters[key] = cname
		}
	}
}

// dnsName makes s a valid object name (lower case, '-' for the rest).
func dnsName(s string) string {
	b := []byte(strings.ToLower(s))
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '-' && c != '.' {
			b[i] = '-'
		}
	}
	out := strings.Trim(string(b), "-.")
	if errs := validation.IsDNS1123Subdomain(out); len(errs) > 0 || out == "" {
		return "cluster"
	}
	return out
}

// applyRepoCreds gives each Application whose Git or chart repository an
// Argo CD repository Secret covers (its url; a repo-creds Secret's url as
// a prefix) the credentials, as a Secret in the app's namespace. What
// converge's sources cannot use is named.
func (t *translator) applyRepoCreds() {
	made := map[string]bool{}
	for i := range t.res.Applications {
		app := &t.res.Applications[i]
		if url := app.Spec.Source.RepoURL; url != "" {
			if name, ok := t.repoSecret(app.Namespace, url, made); ok {
				app.Spec.Source.SecretRef = &v1alpha1.LocalObjectReference{Name: name}
			}
		}
		if c := app.Spec.Source.Chart; c != nil {
			if name, ok := t.repoSecret(app.Namespace, c.RepoURL, made); ok {
				c.SecretRef = &v1alpha1.LocalObjectReference{Name: name}
			}
		}
	}
}

// repoSecret is the Secret (made once per namespace) holding the
// credentials of the Argo CD Secret that covers url: a repository
// Secret for exactly url first, else the longest repo-creds prefix.
func (t *translator) repoSecret(namespace, url string, made map[string]bool) (string, bool) {
	var best *unstructured.Unstructured
	bestLen := -1
	for _, u := range t.repoCreds {
		d := secretData(u)
		want := source.NormalizeURL(d["url"])
		got := source.NormalizeURL(url)
		switch u.GetLabels()[argoSecretType] {
		case "repository":
			if want == got {
				best, bestLen = u, 1<<30
			}
		case "repo-creds":
			if strings.HasPrefix(got, want) && len(want) > bestLen {
				best, bestLen = u, len(want)
			}
		}
	}
	if best == nil {
		return "", false
	}
	d := secretData(best)
	name := "argocd-" + dnsName(best.GetName())
	key := namespace + "/" + name
	if made[key] {
		return name, true
	}
	made[key] = true
	creds := map[string][]byte{}
	if d["username"] != "" || d["password"] != "" {
		creds["username"], creds["password"] = []byte(d["username"]), []byte(d["password"])
	}
	if k := d["sshPrivateKey"]; k != "" {
		creds["identity"] = []byte(k)
		t.note(best, "data.sshPrivateKey", "carried over as identity; add the server's known_hosts to Secret %s (Argo CD keeps them in argocd-ssh-known-hosts-cm)", key)
	}
	for _, f := range []string{"githubAppPrivateKey", "tlsClientCertData", "gcpServiceAccountKey", "bearerToken"} {
		if d[f] != "" {
			t.note(best, "data."+f, "not supported by converge's sources; not carried over")
		}
	}
	if d["insecure"] == "true" || d["insecureIgnoreHostKey"] == "true" {
		t.note(best, "data.insecure", "converge verifies hosts and certificates: not carried over")
	}
	if d["enableOCI"] == "true" {
		t.note(best, "data.enableOCI", "write the chart repository as oci://... in the Application instead")
	}
	t.res.Secrets = append(t.res.Secrets, corev1.Secret{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, Data: creds})
	return name, true
}
