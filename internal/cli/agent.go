package cli

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"converge.dev/converge/internal/agent"
	"converge.dev/converge/internal/seal"
	"converge.dev/converge/internal/source"
)

// AgentOptions holds the flags of `converge agent`.
type AgentOptions struct {
	Streams
	Kube  KubeFlags
	Agent agent.Options
}

// DefaultSystemNamespace is where `converge install` puts the agent.
const DefaultSystemNamespace = agent.DefaultSystemNamespace

// NewAgentCommand returns `converge agent`.
func NewAgentCommand(streams Streams) *cobra.Command {
	o := &AgentOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run the in-cluster agent (pull mode): reconcile Applications from Git",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.Run(cmd.Context())
		},
	}
	o.Kube.Bind(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.Agent.MetricsAddr, "metrics-bind-address", ":8080", "where /metrics is served; 0 disables")
	f.StringVar(&o.Agent.ProbeAddr, "health-probe-bind-address", ":8081", "where /healthz and /readyz are served")
	f.StringVar(&o.Agent.OTLPEndpoint, "otlp-endpoint", "", "send a trace of each reconcile (source, render, plan, apply, hooks, health) to this OTLP/HTTP collector, http(s)://host:4318; empty sends none")
	f.StringVar(&o.Agent.PprofAddr, "pprof-bind-address", "", "where Go's profiles (/debug/pprof) are served, for diagnosing the agent; empty disables (keep it on loopback)")
	f.StringVar(&o.Agent.WebhookAddr, "webhook-bind-address", ":9292", "where POST /hooks/git is served; empty disables")
	f.StringVar(&o.Agent.SealingAddr, "sealing-bind-address", ":9393", "where GET /v1/cert.pem and POST /v1/reseal are served, apart from the webhook (which is often exposed to the internet); empty disables")
	f.StringVar(&o.Agent.UIAddr, "ui-bind-address", "", "where the web UI is served (viewers sign in with a Kubernetes bearer token, or through --ui-oidc-issuer); empty disables")
	f.StringVar(&o.Agent.UITLSCertFile, "ui-tls-cert-file", "", "serve the web UI over TLS with this certificate (PEM)")
	f.StringVar(&o.Agent.UITLSKeyFile, "ui-tls-key-file", "", "the key of --ui-tls-cert-file (PEM)")
	f.StringVar(&o.Agent.UIOIDC.Issuer, "ui-oidc-issuer", "", "sign the UI's viewers in through this OpenID Connect issuer too (https); the apiserver must trust it for --ui-oidc-client-id (docs/ui.md)")
	f.StringVar(&o.Agent.UIOIDC.ClientID, "ui-oidc-client-id", "", "with --ui-oidc-issuer: the UI's client ID at the provider, also the audience the apiserver accepts")
	f.StringVar(&o.Agent.UIOIDC.ClientSecretFile, "ui-oidc-client-secret-file", "", "with --ui-oidc-issuer: file holding the client secret; none makes a public client (PKCE only)")
	f.StringVar(&o.Agent.UIOIDC.RedirectURL, "ui-oidc-redirect-url", "", "with --ui-oidc-issuer: the UI's address as browsers reach it, with the path /auth/callback (registered at the provider)")
	f.StringSliceVar(&o.Agent.UIOIDC.Scopes, "ui-oidc-scopes", []string{"openid", "profile", "email", "groups"}, "with --ui-oidc-issuer: the scopes asked for (add offline_access for sessions that outlive one ID token)")
	f.StringVar(&o.Agent.UIOIDC.CAFile, "ui-oidc-ca-file", "", "with --ui-oidc-issuer: CA certificates (PEM) for the provider's TLS, instead of the system's")
	f.StringVar(&o.Agent.UIOIDC.LogoutRedirectURL, "ui-oidc-logout-redirect-url", "", "with --ui-oidc-issuer: where the provider sends a viewer who signed out (registered there); empty leaves it to the provider")
	f.StringVar(&o.Agent.UIOIDC.Name, "ui-oidc-name", "single sign-on", "with --ui-oidc-issuer: the sign-in button's label, \"Sign in with NAME\"")
	f.StringVar(&o.Agent.WebhookSecretFile, "webhook-secret-file", "", "file holding the webhook secret (HMAC key or GitLab token); or set CONVERGE_WEBHOOK_SECRET")
	f.BoolVar(&o.Agent.LeaderElect, "leader-elect", false, "elect a leader among replicas (Lease converge-agent.converge.dev in --system-namespace)")
	f.StringVar(&o.Agent.Shards, "shards", "", "auto: spread Applications over the replicas (a Lease each in --system-namespace, consistent hashing); empty: one replica (the leader, with --leader-elect) reconciles them all")
	f.StringVar(&o.Agent.ShardID, "shard-id", defaultShardID(), "with --shards: this replica's name (default $POD_NAME, else the host name)")
	f.DurationVar(&o.Agent.ShardLeaseDuration, "shard-lease-duration", 10*time.Second, "with --shards: how long a replica's Lease holds without renewal (a dead replica's apps move within it)")
	f.DurationVar(&o.Agent.LeaseDuration, "lease-duration", 15*time.Second, "with --leader-elect: how long a leader's Lease holds without renewal (a dead leader is replaced within it)")
	f.StringVar(&o.Agent.CacheDir, "cache-dir", filepath.Join(os.TempDir(), "converge-cache"), "where Git repositories are cached")
	f.BoolVar(&o.Agent.AllowFileRepos, "allow-file-repos", false, "allow file:// repositories (tests)")
	f.BoolVar(&o.Agent.Verbose, "verbose", false, "log every reconcile")
	f.IntVar(&o.Agent.Concurrency, "concurrency", 8, "Applications reconciled at once")
	f.Float32Var(&o.Agent.KubeAPIQPS, "kube-api-qps", 0, "limit the agent's requests to the apiserver to this many a second on the client side; 0 sets no such limit (--concurrency bounds requests in flight, and the apiserver's priority and fairness queues them)")
	f.IntVar(&o.Agent.KubeAPIBurst, "kube-api-burst", 0, "with --kube-api-qps: the burst allowed above it (at least the QPS)")
	ns := os.Getenv("POD_NAMESPACE")
	if ns == "" {
		ns = DefaultSystemNamespace
	}
	f.StringVar(&o.Agent.SystemNamespace, "system-namespace", ns, "the agent's namespace: sealing keys and the published certificate live here (default $POD_NAMESPACE or converge-system)")
	f.DurationVar(&o.Agent.KeyRotation, "key-rotation-period", seal.DefaultRotation, "make a new sealing key when the newest is this old; 0 never rotates")
	f.IntVar(&o.Agent.KeyBits, "key-bits", seal.KeyBits, "size of new sealing keys (tests use less)")
	f.BoolVar(&o.Agent.RequireTenant, "require-tenant", false, "multi-tenant mode: refuse every Application that no Tenant governs, so nothing is applied with the agent's own rights")
	f.StringVar(&o.Agent.DefaultServiceAccount, "default-service-account", "", "ServiceAccount (in each Application's namespace) impersonated for apps that name none and that no Tenant governs")
	f.StringSliceVar(&o.Agent.SourceHosts, "source-hosts", nil, "the only hosts repositories may be fetched from (host, host:port or *.domain); empty allows any")
	f.StringSliceVar(&o.Agent.NotifyHosts, "notify-hosts", nil, "the only hosts Applications' notifications may be sent to (host, host:port or *.domain); empty allows any but link-local addresses")
	f.StringVar(&o.Agent.IgnoreDifferencesFile, "ignore-differences-file", "", "YAML list of ignoreDifferences (as spec.ignoreDifferences) every Application gets before its own, e.g. every MutatingWebhookConfiguration's caBundle")
	f.StringSliceVar(&o.Agent.EgressAllow, "egress-allow", nil, "ranges (10.0.0.0/8) and hosts (charts.internal, *.svc.cluster.local) that charts, registries and notifications may reach although loopback or private; needed only with --require-tenant, which refuses those otherwise (link-local and metadata addresses are always refused)")
	f.StringVar(&o.Agent.WatchSelector, "watch-label-selector", "", "reconcile only the Applications matching this label selector (sharding by hand)")
	f.StringVar(&o.Agent.WatchSelector, "selector", "", "the same as --watch-label-selector")
	f.StringArrayVar(&o.Agent.WatchNamespaces, "watch-namespace", nil, "reconcile only Applications and SealedSecrets in this namespace, and watch owned objects only there (repeatable; default: all)")
	f.DurationVar(&o.Agent.GitTimeout, "git-timeout", source.DefaultTimeout, "bound on each git command (ls-remote, fetch, push); a stalling server fails its apps' fetch instead of holding a worker")
	_ = f.MarkHidden("allow-file-repos")
	_ = f.MarkHidden("key-bits")
	return cmd
}

// Run runs the agent until ctx ends.
func (o *AgentOptions) Run(ctx context.Context) error {
	cfg, _, err := o.Kube.Config()
	if err != nil {
		return err
	}
	// The environment is read here, at the flag layer, only.
	o.Agent.WebhookSecret = []byte(strings.TrimSpace(os.Getenv("CONVERGE_WEBHOOK_SECRET")))
	return agent.Run(ctx, cfg, o.Agent, o.ErrOut)
}

func defaultShardID() string {
	if id := os.Getenv("POD_NAME"); id != "" {
		return id
	}
	host, _ := os.Hostname()
	return host
}
