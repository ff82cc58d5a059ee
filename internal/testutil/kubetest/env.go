package kubetest

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/render"
)

// Env is a running API server for tests.
type Env struct {
	// Config reaches the API server as an administrator.
	Config *rest.Config
	// Client is a controller-runtime client with the built-in types and any
	// schemes passed to StartEnv registered.
	Client client.Client
	// Scheme is the scheme Client uses.
	Scheme *runtime.Scheme

	stop func() error
}

// Stop shuts down an envtest API server; for the local cluster it does
// nothing, since the cluster outlives the tests.
func (e *Env) Stop() error {
	if e.stop == nil {
		return nil
	}
	return e.stop()
}

// EnvOptions configure StartEnv.
type EnvOptions struct {
	// CRDDirectoryPaths are installed before StartEnv returns.
	CRDDirectoryPaths []string
	// AddToScheme registers extra types with the client's scheme.
	AddToScheme []func(*runtime.Scheme) error
}

// WithConvergeAPI is opts with converge's CRDs (config/crd) installed and
// its types registered with the client's scheme.
func WithConvergeAPI(opts EnvOptions) EnvOptions {
	if root, err := RepoRoot(); err == nil {
		opts.CRDDirectoryPaths = append(opts.CRDDirectoryPaths, filepath.Join(root, "config", "crd"))
	}
	opts.AddToScheme = append(opts.AddToScheme, v1alpha1.AddToScheme)
	return opts
}

// StartEnv starts etcd and kube-apiserver with envtest. It needs
// KUBEBUILDER_ASSETS, which `make test` sets to the binaries built by
// tools/localcluster; without it the error says how to get them.
func StartEnv(opts EnvOptions) (*Env, error) {
	if os.Getenv("KUBEBUILDER_ASSETS") == "" {
		return nil, errors.New("KUBEBUILDER_ASSETS is not set: run the tests with `make test`, " +
			"or export KUBEBUILDER_ASSETS=$(make -s assets)")
	}
	ctrllog.SetLogger(logr.Discard())
	scheme, err := newScheme(opts.AddToScheme)
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{
		CRDDirectoryPaths:     opts.CRDDirectoryPaths,
		ErrorIfCRDPathMissing: true,
		Scheme:                scheme,
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("starting envtest: %w", err)
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		_ = env.Stop()
		return nil, err
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme, stop: env.Stop}, nil
}

// LocalCluster connects to the cluster started by `make cluster-up`. The
// kubeconfig is $CONVERGE_KUBECONFIG, or .cluster/kubeconfig at the root of
// the repository holding the working directory.
func LocalCluster(addToScheme ...func(*runtime.Scheme) error) (*Env, error) {
	path, err := LocalKubeconfig()
	if err != nil {
		return nil, err
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", path, err)
	}
	cfg.QPS, cfg.Burst = 200, 400
	scheme, err := newScheme(addToScheme)
	if err != nil {
		return nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, err
	}
	return &Env{Config: cfg, Client: c, Scheme: scheme}, nil
}

// LocalKubeconfig returns the path of the local cluster's admin kubeconfig,
// failing with a hint when the cluster has not been started.
func LocalKubeconfig() (string, error) {
	path := os.Getenv("CONVERGE_KUBECONFIG")
	if path == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		path = filepath.Join(root, ".cluster", "kubeconfig")
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("no local cluster (%w): run `make cluster-up` or `make test-e2e`", err)
	}
	return path, nil
}

// RepoRoot finds the repository root: the nearest directory above the
// working directory that holds go.mod for converge.dev/converge.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && containsModule(data, "converge.dev/converge") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("not inside the converge repository")
		}
		dir = parent
	}
}

func containsModule(gomod []byte, module string) bool {
	for _, line := range strings.Split(string(gomod), "\n") {
		if strings.TrimSpace(line) == "module "+module {
			return true
		}
	}
	return false
}

func newScheme(adders []func(*runtime.Scheme) error) (*runtime.Scheme, error) {
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return nil, err
	}
	for _, add := range adders {
		if err := add(scheme); err != nil {
			return nil, err
		}
	}
	return scheme, nil
}

// Main is the whole TestMain of a package tested against an API server: it
// starts envtest, stores it in *env, runs the tests, stops envtest and exits
// with the tests' status.
func Main(m *testing.M, opts EnvOptions, env **Env) {
	// Test binaries that render re-execute themselves as render workers.
	render.ServeWorkerIfRequested()
	// A fuzzing run needs no cluster: its parent and each of its workers
	// run TestMain, and an apiserver each would only slow them down.
	flag.Parse()
	if f := flag.Lookup("test.fuzz"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run())
	}
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		os.Exit(m.Run())
	}
	e, err := StartEnv(opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*env = e
	code := m.Run()
	if err := e.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping envtest:", err)
	}
	os.Exit(code)
}

// WriteKubeconfig writes a kubeconfig reaching the environment's API server
// as its administrator, for programs run by a test.
func (e *Env) WriteKubeconfig(path string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["env"] = &clientcmdapi.Cluster{Server: e.Config.Host, CertificateAuthorityData: e.Config.CAData}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: e.Config.CertData, ClientKeyData: e.Config.KeyData, Token: e.Config.BearerToken}
	cfg.Contexts["env"] = &clientcmdapi.Context{Cluster: "env", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "env"
	return clientcmd.WriteToFile(*cfg, path)
}
