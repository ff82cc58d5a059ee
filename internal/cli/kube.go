package cli

import (
	"errors"

	"github.com/spf13/pflag"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// KubeFlags are the kubectl-style connection flags.
type KubeFlags struct {
	Kubeconfig string
	Context    string
	Namespace  string
}

// Bind adds --kubeconfig, --context and -n/--namespace to fs.
func (f *KubeFlags) Bind(fs *pflag.FlagSet) {
	fs.StringVar(&f.Kubeconfig, "kubeconfig", "", "path to the kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
	fs.StringVar(&f.Context, "context", "", "kubeconfig context to use")
	fs.StringVarP(&f.Namespace, "namespace", "n", "", "namespace for namespaced objects that name none, and for the app's record (default: the context's namespace)")
}

// Config loads the REST config and the effective namespace.
func (f *KubeFlags) Config() (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = f.Kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: f.Context}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if clientcmd.IsEmptyConfig(err) {
		// client-go's own message points at KUBERNETES_MASTER.
		return nil, "", errors.New("no cluster to talk to: no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config) and not running in a cluster; pass --kubeconfig or set KUBECONFIG")
	}
	if err != nil {
		return nil, "", err
	}
	ns := f.Namespace
	if ns == "" {
		if ns, _, err = cc.Namespace(); err != nil {
			return nil, "", err
		}
	}
	if ns == "" {
		ns = "default"
	}
	cfg.UserAgent = "converge"
	return cfg, ns, nil
}
