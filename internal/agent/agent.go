// Package agent assembles the in-cluster agent: the controller-runtime
// manager and its caches, the Application and SealedSecret reconcilers,
// the Git source cache, the sealing keys, and the HTTP servers (webhook,
// sealing, metrics, probes). The CLI only binds flags to Options.
package agent

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/appspec"
	"converge.dev/converge/internal/charts"
	"converge.dev/converge/internal/controller"
	"converge.dev/converge/internal/egress"
	"converge.dev/converge/internal/engine"
	"converge.dev/converge/internal/notify"
	"converge.dev/converge/internal/preview"
	"converge.dev/converge/internal/render"
	"converge.dev/converge/internal/seal"
	"converge.dev/converge/internal/server"
	"converge.dev/converge/internal/source"
	"converge.dev/converge/internal/tenancy"
	"converge.dev/converge/internal/tracing"
	"converge.dev/converge/internal/ui"
)

// DefaultSystemNamespace is where `converge install` puts the agent.
const DefaultSystemNamespace = "converge-system"

// Options configure the agent; `converge agent` binds a flag to each.
type Options struct {
	MetricsAddr string
	ProbeAddr   string
	// PprofAddr serves Go's profiles (/debug/pprof); empty disables.
	PprofAddr string
	// OTLPEndpoint, when set, receives a trace of each reconcile over
	// OTLP/HTTP (internal/tracing).
	OTLPEndpoint      string
	WebhookAddr       string
	SealingAddr       string
	WebhookSecretFile string
	// WebhookSecret is the webhook secret itself (the command line reads
	// it from $CONVERGE_WEBHOOK_SECRET); WebhookSecretFile wins.
	WebhookSecret   []byte
	LeaderElect     bool
	CacheDir        string
	AllowFileRepos  bool
	Verbose         bool
	Concurrency     int
	SystemNamespace string
	KeyRotation     time.Duration
	KeyBits         int
	// RequireTenant refuses Applications no Tenant governs.
	RequireTenant bool
	// DefaultServiceAccount is impersonated for apps that name none and
	// that no Tenant governs.
	DefaultServiceAccount string
	// SourceHosts are the only hosts repositories may come from.
	SourceHosts []string
	// NotifyHosts are the only hosts apps' events may be sent to.
	NotifyHosts []string
	// IgnoreDifferencesFile holds ignoreDifferences every app gets
	// before its own (YAML, shaped as spec.ignoreDifferences).
	IgnoreDifferencesFile string
	// EgressAllow lists the ranges and hosts that charts, registries and
	// notifications may reach although they are loopback or private,
	// under RequireTenant (without it, those are reachable anyway).
	EgressAllow []string
	// WatchSelector selects the Applications this agent reconciles.
	WatchSelector string
	// Shards is "auto" to spread Applications over replicas by Leases
	// (ShardID names this one); "" reconciles them all here.
	Shards             string
	ShardID            string
	ShardLeaseDuration time.Duration
	// WatchNamespaces, when set, are the only namespaces the agent
	// reconciles Applications (and SealedSecrets) in and watches owned
	// objects in: an agent per team, with a Role in each namespace.
	WatchNamespaces []string
	// GitTimeout bounds each git command.
	GitTimeout time.Duration
	// KubeAPIQPS and KubeAPIBurst limit the agent's requests to the
	// apiserver on the client side; a QPS of 0 sets no such limit (the
	// default): --concurrency bounds requests in flight, and the
	// apiserver's priority and fairness queues them.
	KubeAPIQPS   float32
	KubeAPIBurst int
	// UIAddr, when set, serves the web UI there; UITLSCertFile and
	// UITLSKeyFile serve it over TLS (and mark its cookies Secure).
	UIAddr, UITLSCertFile, UITLSKeyFile string
	// UIOIDC, with an issuer, signs the UI's viewers in through OpenID
	// Connect as well (docs/ui.md).
	UIOIDC UIOIDC
	// LeaseDuration is how long a leader's Lease holds without renewal:
	// the longest a dead leader's work waits for another replica.
	LeaseDuration time.Duration
}

// namespaces is the cache's namespace set: nil (all) when none is given.
func namespaces(names []string) map[string]cache.Config {
	if len(names) == 0 {
		return nil
	}
	out := make(map[string]cache.Config, len(names))
	for _, n := range names {
		out[n] = cache.Config{}
	}
	return out
}

// durationPtr is nil for zero, so the manager keeps its default.
func durationPtr(d time.Duration) *time.Duration {
	if d <= 0 {
		return nil
	}
	return &d
}

// fetchers are the Git and chart caches under o.CacheDir, with the hosts
// they may reach, and the egress policy charts and notifications share:
// under the multi-tenant profile nothing a tenant names reaches the
// agent's loopback, the pod network or cluster Services unless the
// platform admin lists it (--egress-allow).
func fetchers(o Options) (*source.Cache, *charts.Cache, *egress.Policy, error) {
	sources, err := source.NewCache(o.CacheDir)
	if err != nil {
		return nil, nil, nil, err
	}
	sources.AllowFileURLs, sources.AllowedHosts, sources.Timeout = o.AllowFileRepos, o.SourceHosts, o.GitTimeout
	chartCache, err := charts.NewCache(filepath.Join(o.CacheDir, "charts"))
	if err != nil {
		return nil, nil, nil, err
	}
	policy, err := egress.New(!o.RequireTenant, o.EgressAllow, "the agent's --egress-allow")
	if err != nil {
		return nil, nil, nil, err
	}
	chartCache.AllowedHosts, chartCache.Egress = o.SourceHosts, policy
	return sources, chartCache, policy, nil
}

// ignoreRules reads the agent-wide ignoreDifferences of file; none
// without one.
func ignoreRules(file string) ([]engine.IgnoreRule, error) {
	if file == "" {
		return nil, nil
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return appspec.DefaultIgnoreRules(data, "--ignore-differences-file "+file)
}

// Run runs the agent against the cluster cfg reaches until ctx ends,
// logging JSON lines to logs.
func Run(ctx context.Context, cfg *rest.Config, o Options, logs io.Writer) error {
	logger := funcr.NewJSON(func(obj string) { fmt.Fprintln(logs, obj) }, funcr.Options{Verbosity: verbosity(o.Verbose)})
	ctrllog.SetLogger(logger)
	if o.OTLPEndpoint != "" {
		stop, err := tracing.Setup(ctx, o.OTLPEndpoint, "converge-agent")
		if err != nil {
			return err
		}
		defer func() { _ = stop(context.Background()) }()
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = "converge-agent"
	shards, err := sharding(cfg, &o, logger)
	if err != nil {
		return err
	}
	// client-go's default, 5 requests a second, made the agent's own
	// writes the limit (2.5 apps/s from cold), and 500 a second did the
	// same for a fleet (docs/benchmarks.md): without --kube-api-qps the
	// apiserver is the limit.
	cfg.QPS, cfg.Burst = engine.ClientRate(o.KubeAPIQPS, o.KubeAPIBurst)
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return err
	}
	mgr, err := newManager(cfg, scheme, o)
	if err != nil {
		return err
	}
	if shards != nil {
		if shards.Client, err = client.New(cfg, client.Options{Scheme: scheme}); err != nil {
			return err
		}
	}
	parts, err := setupReconcilers(ctx, mgr, cfg, scheme, o, shards, logger)
	if err != nil {
		return err
	}
	if err := setupServers(mgr, cfg, scheme, o, parts, logger); err != nil {
		return err
	}
	logger.Info("starting the agent", "webhook", o.WebhookAddr, "sealing", o.SealingAddr, "ui", o.UIAddr, "metrics", o.MetricsAddr, "leaderElect", o.LeaderElect, "shard", o.ShardID, "sharded", shards != nil)
	return mgr.Start(ctx)
}

// sharding reads --shards: nil for one agent; with auto, the Shards of
// this replica, and leader election on for the singletons (said, not done
// behind the operator's back).
func sharding(cfg *rest.Config, o *Options, logger logr.Logger) (*controller.Shards, error) {
	switch o.Shards {
	case "":
		return nil, nil
	case "auto":
	default:
		return nil, fmt.Errorf("--shards %q: want auto (membership by Leases) or nothing", o.Shards)
	}
	if o.ShardID == "" {
		return nil, fmt.Errorf("--shards=auto needs --shard-id (or $POD_NAME)")
	}
	// The shard is in the user agent: the audit log tells replicas apart.
	cfg.UserAgent += "/" + o.ShardID
	// The other controllers (ApplicationSets, Clusters, SealedSecrets)
	// stay singletons.
	if !o.LeaderElect {
		logger.Info("--shards=auto turns on leader election for the singletons (ApplicationSets, Clusters, SealedSecrets)")
	}
	o.LeaderElect = true
	return &controller.Shards{Namespace: o.SystemNamespace, ID: o.ShardID, Duration: o.ShardLeaseDuration}, nil
}

// newManager makes the controller manager: its leader election, and a
// cache of converge's own objects only (owned objects for drift,
// Applications for work; Secrets never).
func newManager(cfg *rest.Config, scheme *runtime.Scheme, o Options) (ctrl.Manager, error) {
	owned, err := labels.NewRequirement(engine.LabelApp, selection.Exists, nil)
	if err != nil {
		return nil, err
	}
	apps := labels.Everything()
	if o.WatchSelector != "" {
		if apps, err = labels.Parse(o.WatchSelector); err != nil {
			return nil, fmt.Errorf("--watch-label-selector: %w", err)
		}
	}
	return ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme,
		Metrics:                metricsserver.Options{BindAddress: o.MetricsAddr},
		HealthProbeBindAddress: o.ProbeAddr,
		PprofBindAddress:       o.PprofAddr,
		LeaderElection:         o.LeaderElect,
		LeaderElectionID:       "converge-agent.converge.dev",
		// The Lease lives in the agent's namespace wherever the agent
		// runs: in the cluster, or outside it with a kubeconfig.
		LeaderElectionNamespace: o.SystemNamespace,
		LeaseDuration:           durationPtr(o.LeaseDuration),
		RenewDeadline:           durationPtr(o.LeaseDuration * 2 / 3),
		RetryPeriod:             durationPtr(o.LeaseDuration / 7),
		// A leader stopping (a rolling update) hands over at once.
		LeaderElectionReleaseOnCancel: true,
		// One manager per process in production; tests run several
		// agents in one process, whose controllers share names.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{
			DefaultTransform:     slimForCache,
			DefaultLabelSelector: labels.NewSelector().Add(*owned),
			DefaultNamespaces:    namespaces(o.WatchNamespaces),
			ByObject: map[client.Object]cache.ByObject{
				&v1alpha1.Application{}:           {Label: apps},
				&v1alpha1.SealedSecret{}:          {Label: labels.Everything()},
				&v1alpha1.Tenant{}:                {Label: labels.Everything()},
				&v1alpha1.Cluster{}:               {Label: labels.Everything()},
				&v1alpha1.ApplicationSet{}:        {Label: labels.Everything()},
				&v1alpha1.Alert{}:                 {Label: labels.Everything()},
				&v1alpha1.Notifier{}:              {Label: labels.Everything()},
				&v1alpha1.ImageRepository{}:       {Label: labels.Everything()},
				&v1alpha1.ImagePolicy{}:           {Label: labels.Everything()},
				&v1alpha1.ImageUpdateAutomation{}: {Label: labels.Everything()},
			},
		},
		Client: client.Options{Cache: &client.CacheOptions{DisableFor: []client.Object{&corev1.Secret{}}}},
	})
}

// slimForCache drops managed fields before an object is stored in the
// agent's caches: a quarter of a cached object's metadata, which no
// reader there uses (the engine reads live objects uncached when it needs
// them). Applications written back from the cache (their status) keep
// theirs: a request without managed fields leaves them as they are.
var slimForCache = cache.TransformStripManagedFields()

// parts are what the reconcilers share with the servers beside them.
type parts struct {
	keys     *seal.Store
	previews *preview.Previewer
	// apps takes the webhook's pushes in memory (RequestFetch).
	apps *controller.ApplicationReconciler
}

// setupReconcilers adds the reconcilers (Applications, Clusters,
// ApplicationSets, SealedSecrets) and what they share: one builder of
// desired state, the Secret cache, the sealing keys.
func setupReconcilers(ctx context.Context, mgr ctrl.Manager, cfg *rest.Config, scheme *runtime.Scheme, o Options, shards *controller.Shards, logger logr.Logger) (parts, error) {
	eng, err := engine.New(cfg, engine.DefaultOptions())
	if err != nil {
		return parts{}, err
	}
	sources, chartCache, policy, err := fetchers(o)
	if err != nil {
		return parts{}, err
	}
	// Render workers read only the checkouts and charts below the cache:
	// not the agent's token, kubeconfig or anything else (Landlock).
	readRoots := []string{o.CacheDir}
	logger.Info("render workers confined", "landlockABI", render.LandlockABI(), "reads", o.CacheDir)
	secretCache, err := controller.NewSecretCache(cfg)
	if err != nil {
		return parts{}, err
	}
	if err := mgr.Add(secretCache); err != nil {
		return parts{}, err
	}
	ignore, err := ignoreRules(o.IgnoreDifferencesFile)
	if err != nil {
		return parts{}, err
	}
	// One builder of desired state, its caches shared by the reconciler
	// and the web UI's previews (which count no reconcile's fetches).
	builder := &appspec.Builder{Sources: sources, Charts: chartCache, ReadRoots: readRoots, Renders: appspec.NewRenderCache(64)}
	previews := *builder
	builder.Fetched = controller.CountGitFetch
	tenancyOpts := tenancy.Options{RequireTenant: o.RequireTenant, DefaultServiceAccount: o.DefaultServiceAccount}
	rec := &controller.ApplicationReconciler{
		Client: mgr.GetClient(), Secrets: mgr.GetAPIReader(), SecretCache: secretCache, Engine: eng, Config: cfg,
		Builder: builder, IgnoreDifferences: ignore, Recorder: mgr.GetEventRecorderFor("converge-agent"),
		Concurrency: o.Concurrency, Tenancy: tenancyOpts, Notifier: notify.New(ctx, logger.WithName("notify"), policy), Shards: shards,
		Clusters: &controller.Clusters{
			Reader: mgr.GetClient(), Secrets: secretCache.Reader("", mgr.GetAPIReader()),
			Namespace: o.SystemNamespace, Scheme: scheme,
		},
	}
	rec.Notifier.AllowedHosts = o.NotifyHosts
	if err := rec.SetupWithManager(mgr); err != nil {
		return parts{}, err
	}
	if err := (&controller.ClusterReconciler{Client: mgr.GetClient(), Clusters: rec.Clusters}).SetupWithManager(mgr); err != nil {
		return parts{}, err
	}
	sets := &controller.ApplicationSetReconciler{Client: mgr.GetClient(), Apps: rec, Recorder: mgr.GetEventRecorderFor("converge-agent")}
	if err := sets.SetupWithManager(mgr); err != nil {
		return parts{}, err
	}
	// Image automation: scans and policies, and the commits they make.
	recorder := mgr.GetEventRecorderFor("converge-agent")
	if err := (&controller.ImageReconciler{Client: mgr.GetClient(), Apps: rec, Egress: policy, Recorder: recorder, AllowedHosts: o.SourceHosts}).SetupWithManager(mgr); err != nil {
		return parts{}, err
	}
	if err := (&controller.ImageAutomationReconciler{Client: mgr.GetClient(), Apps: rec, Egress: policy, Recorder: recorder}).SetupWithManager(mgr); err != nil {
		return parts{}, err
	}
	direct, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper()})
	if err != nil {
		return parts{}, err
	}
	keys := &seal.Store{Client: direct, Namespace: o.SystemNamespace, Rotation: o.KeyRotation, Bits: o.KeyBits}
	if err := setupSealing(mgr, cfg, scheme, o, keys, logger); err != nil {
		return parts{}, err
	}
	return parts{keys: keys, previews: &preview.Previewer{Builder: &previews, Tenancy: &tenancyOpts, Tenants: mgr.GetClient(), IgnoreDifferences: ignore}, apps: rec}, nil
}

// setupServers adds the health checks and the HTTP servers the options
// ask for: webhook, sealing, web UI.
func setupServers(mgr ctrl.Manager, cfg *rest.Config, scheme *runtime.Scheme, o Options, p parts, logger logr.Logger) error {
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}
	if o.WebhookAddr != "" {
		secret := o.WebhookSecret
		if o.WebhookSecretFile != "" {
			data, err := os.ReadFile(o.WebhookSecretFile)
			if err != nil {
				return fmt.Errorf("--webhook-secret-file: %w", err)
			}
			secret = []byte(strings.TrimSpace(string(data)))
		}
		hook := &server.Webhook{Client: mgr.GetClient(), Secret: secret, Log: logger.WithName("webhook")}
		if p.apps != nil {
			hook.Local = p.apps.RequestFetch
		}
		if err := mgr.Add(&httpRunnable{addr: o.WebhookAddr, mux: webhookMux(hook)}); err != nil {
			return err
		}
	}
	if o.SealingAddr != "" {
		mux := http.NewServeMux()
		(&server.Sealing{Keys: p.keys, Log: logger.WithName("sealing")}).Register(mux)
		if err := mgr.Add(&httpRunnable{addr: o.SealingAddr, mux: mux}); err != nil {
			return err
		}
	}
	if o.UIAddr != "" {
		return setupUI(mgr, cfg, scheme, o, p.previews, logger)
	}
	return nil
}

func verbosity(v bool) int {
	if v {
		return 1
	}
	return 0
}

// webhookMux serves the webhook, each client within its own rate limit
// (10 deliveries a second, bursts of 50: far above any forge's rate).
func webhookMux(h http.Handler) *http.ServeMux {
	mux := http.NewServeMux()
	mux.Handle("/hooks/git", (&server.RateLimit{Rate: 10, Burst: 50}).Wrap(h))
	return mux
}

// httpRunnable serves an HTTP handler on every replica, leader or not,
// over TLS when given a certificate and key.
type httpRunnable struct {
	addr              string
	mux               http.Handler
	certFile, keyFile string
}

var _ manager.LeaderElectionRunnable = (*httpRunnable)(nil)

func (h *httpRunnable) NeedLeaderElection() bool { return false }

func (h *httpRunnable) Start(ctx context.Context) error {
	// Every phase of a request is bounded: a slow or idle client holds a
	// connection for seconds, not forever.
	srv := &http.Server{Addr: h.addr, Handler: h.mux, ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout: 30 * time.Second, WriteTimeout: time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 1)
	go func() {
		if h.certFile != "" {
			errc <- srv.ListenAndServeTLS(h.certFile, h.keyFile)
			return
		}
		errc <- srv.ListenAndServe()
	}()
	select {
	case <-ctx.Done():
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdown)
	case err := <-errc:
		return err
	}
}

// setupSealing adds the sealing key store (kept rotated by the leader), the
// SealedSecret controller and its cache of produced Secrets.
func setupSealing(mgr ctrl.Manager, cfg *rest.Config, scheme *runtime.Scheme, o Options, keys *seal.Store, logger logr.Logger) error {
	check := time.Hour
	if o.KeyRotation > 0 && o.KeyRotation/10 < check {
		check = max(o.KeyRotation/10, time.Second)
	}
	keysLog := logger.WithName("sealing-keys")
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return keys.Run(ctx, check, func(err error) { keysLog.Error(err, "keeping sealing keys") })
	})); err != nil {
		return err
	}
	produced, err := labels.NewRequirement(v1alpha1.LabelSealedSecret, selection.Exists, nil)
	if err != nil {
		return err
	}
	secrets, err := cache.New(cfg, cache.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper(), DefaultTransform: slimForCache, DefaultLabelSelector: labels.NewSelector().Add(*produced)})
	if err != nil {
		return err
	}
	if err := mgr.Add(secrets); err != nil {
		return err
	}
	rec := &controller.SealedSecretReconciler{
		Client: mgr.GetClient(), Reader: mgr.GetAPIReader(), Keys: keys,
		Recorder: mgr.GetEventRecorderFor("converge-agent"), Secrets: secrets,
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return err
	}
	return setupBitnami(mgr, cfg, scheme, rec, logger)
}

// setupBitnami opens Bitnami's SealedSecrets too, when the cluster serves
// their CRD (looked at once, at start).
func setupBitnami(mgr ctrl.Manager, cfg *rest.Config, scheme *runtime.Scheme, rec *controller.SealedSecretReconciler, logger logr.Logger) error {
	if !controller.BitnamiServed(mgr.GetRESTMapper()) {
		logger.V(1).Info("Bitnami's SealedSecret kind is not served: not opening them", "kind", controller.BitnamiSealedSecret.String())
		return nil
	}
	objects, err := cache.New(cfg, cache.Options{Scheme: scheme, Mapper: mgr.GetRESTMapper(), DefaultTransform: slimForCache})
	if err != nil {
		return err
	}
	if err := mgr.Add(objects); err != nil {
		return err
	}
	logger.Info("opening Bitnami's SealedSecrets with the sealing keys (stop the sealed-secrets controller)")
	return (&controller.BitnamiSealedSecretReconciler{SealedSecretReconciler: rec, Objects: objects}).SetupWithManager(mgr)
}

// setupUI serves the web UI: a hub watching Applications, history records
// and events with the agent's identity (names of changes only), and every
// viewer's reads and actions made with the viewer's own token.
func setupUI(mgr ctrl.Manager, cfg *rest.Config, scheme *runtime.Scheme, o Options, previewer *preview.Previewer, logger logr.Logger) error {
	if (o.UITLSCertFile == "") != (o.UITLSKeyFile == "") {
		return fmt.Errorf("--ui-tls-cert-file and --ui-tls-key-file go together")
	}
	hub, err := ui.NewHub(cfg, ui.HubOptions{Namespaces: o.WatchNamespaces, Scheme: scheme})
	if err != nil {
		return err
	}
	if err := mgr.Add(everyReplica(hub.Start)); err != nil {
		return err
	}
	sso, err := o.UIOIDC.sso()
	if err != nil {
		return err
	}
	site := &ui.Server{
		Cluster: cfg, Hub: hub, Previewer: previewer,
		SystemNamespace: o.SystemNamespace, Secure: o.UITLSCertFile != "", Records: mgr.GetClient(),
		Scheme: scheme, Mapper: mgr.GetRESTMapper(), Log: logger.WithName("ui"), SSO: sso,
	}
	h, err := site.Handler()
	if err != nil {
		return err
	}
	return mgr.Add(&httpRunnable{addr: o.UIAddr, mux: h, certFile: o.UITLSCertFile, keyFile: o.UITLSKeyFile})
}

// UIOIDC is the UI's registration at an OpenID Connect provider.
type UIOIDC struct {
	Issuer, ClientID, ClientSecretFile, RedirectURL, LogoutRedirectURL, Name string
	Scopes                                                                   []string
	// CAFile, when set, holds the CAs that the provider's certificate is
	// checked against (instead of the system's).
	CAFile string
}

// sso is the UI's single sign-on, or nil when no issuer is given.
func (o UIOIDC) sso() (*ui.SSO, error) {
	if o.Issuer == "" {
		return nil, nil
	}
	sso := &ui.SSO{Issuer: o.Issuer, ClientID: o.ClientID, RedirectURL: o.RedirectURL, Scopes: o.Scopes,
		LogoutRedirectURL: o.LogoutRedirectURL, Name: o.Name}
	if o.ClientSecretFile != "" {
		secret, err := os.ReadFile(o.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("--ui-oidc-client-secret-file: %w", err)
		}
		sso.ClientSecret = strings.TrimSpace(string(secret))
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("--ui-oidc-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ui-oidc-ca-file %s: no PEM certificate in it", o.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	sso.HTTPClient = &http.Client{Transport: tr, Timeout: 15 * time.Second}
	return sso, sso.Validate()
}

// everyReplica is a runnable that runs on every replica, leader or not.
type everyReplica func(context.Context) error

func (f everyReplica) Start(ctx context.Context) error { return f(ctx) }
func (f everyReplica) NeedLeaderElection() bool        { return false }
