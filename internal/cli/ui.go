package cli

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"runtime"
	"strconv"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/spf13/cobra"
	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	kruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	"converge.dev/converge/api/v1alpha1"
	"converge.dev/converge/internal/ui"
)

// UIOptions holds the flags of `converge ui`.
type UIOptions struct {
	Streams
	Kube            KubeFlags
	Address         string
	Open            bool
	SystemNamespace string
}

// NewUICommand returns `converge ui`.
func NewUICommand(streams Streams) *cobra.Command {
	o := &UIOptions{Streams: streams}
	cmd := &cobra.Command{
		Use:   "ui",
		Short: "Serve the web UI on this machine, acting with your kubeconfig's identity",
		Long: `Serve the web UI on a loopback address and print its URL (stdout). The URL
carries a sign-in key made at start: share it with no one, it acts as you.
Every read and action goes to the apiserver with your kubeconfig's
credentials, as kubectl would. Applications are watched cluster-wide when
you may list them, otherwise in your context's namespace. Runs until
Ctrl-C. See docs/ui.md.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error { return o.Run(cmd.Context()) },
	}
	o.Kube.Bind(cmd.Flags())
	f := cmd.Flags()
	f.StringVar(&o.Address, "address", "127.0.0.1:9393", "loopback address to serve on (port 0 picks a free one)")
	f.BoolVar(&o.Open, "open", false, "open the URL in a browser")
	f.StringVar(&o.SystemNamespace, "controller-namespace", DefaultSystemNamespace, "the agent's namespace, where the sealing certificate is published")
	return cmd
}

// Run serves until ctx ends.
func (o *UIOptions) Run(ctx context.Context) error {
	host, port, err := net.SplitHostPort(o.Address)
	if err != nil {
		return fmt.Errorf("--address %q: %w", o.Address, err)
	}
	if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
		return fmt.Errorf("--address %q: converge ui acts with your own credentials, so it listens on loopback only (127.0.0.1, ::1 or localhost); to share a UI, serve it from the agent (converge agent --ui-bind-address, docs/ui.md)", o.Address)
	}
	cfg, ns, err := o.Kube.Config()
	if err != nil {
		return err
	}
	scheme, mapper, namespaces, err := o.connect(ctx, cfg, ns)
	if err != nil {
		return err
	}
	hub, err := ui.NewHub(cfg, ui.HubOptions{Namespaces: namespaces, Scheme: scheme})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hubErr := make(chan error, 1)
	go func() { hubErr <- hub.Start(ctx) }()
	fmt.Fprintln(o.ErrOut, "Watching Applications…")
	syncCtx, syncCancel := context.WithTimeout(ctx, time.Minute)
	synced := hub.WaitForSync(syncCtx)
	syncCancel()
	if !synced {
		select {
		case err := <-hubErr:
			return fmt.Errorf("watching Applications: %w", err)
		default:
			return errors.New("watching Applications: no answer from the cluster within a minute")
		}
	}
	p, err := previewer(Streams{Out: o.ErrOut, ErrOut: o.ErrOut})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.Address)
	if err != nil {
		return err
	}
	defer ln.Close()
	addr := ln.Addr().(*net.TCPAddr)
	port = strconv.Itoa(addr.Port)
	hosts := []string{net.JoinHostPort(host, port), "localhost:" + port, "127.0.0.1:" + port, "[::1]:" + port}
	logs := funcr.NewJSON(func(obj string) { fmt.Fprintln(o.ErrOut, obj) }, funcr.Options{})
	site := &ui.Server{
		Cluster: cfg, Local: true, LoginKey: ui.NewLoginKey(), Hosts: hosts, Hub: hub,
		Previewer: p, SystemNamespace: o.SystemNamespace, Scheme: scheme, Mapper: mapper, Log: logs.WithName("ui"),
	}
	h, err := site.Handler()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s/login?key=%s", net.JoinHostPort(host, port), site.LoginKey)
	fmt.Fprintln(o.ErrOut, "converge UI: open this URL (it signs you in; keep it to yourself). Ctrl-C stops.")
	fmt.Fprintln(o.Out, url)
	if o.Open {
		openBrowser(url)
	}
	srv := ui.NewHTTPServer(h)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case <-ctx.Done():
		shutdown, stop := context.WithTimeout(context.Background(), 5*time.Second)
		defer stop()
		_ = srv.Shutdown(shutdown)
		return nil
	case err := <-hubErr:
		return fmt.Errorf("watching Applications: %w", err)
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}

// connect checks that the cluster serves Applications, and says which
// namespaces the user may watch them in (nil: all).
func (o *UIOptions) connect(ctx context.Context, cfg *rest.Config, ns string) (*kruntime.Scheme, meta.RESTMapper, []string, error) {
	scheme, err := v1alpha1.NewScheme()
	if err != nil {
		return nil, nil, nil, err
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, nil, nil, err
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, nil, nil, err
	}
	c, err := client.New(cfg, client.Options{Scheme: scheme, Mapper: mapper})
	if err != nil {
		return nil, nil, nil, err
	}
	if _, err := mapper.RESTMapping(v1alpha1.GroupVersion.WithKind("Application").GroupKind(), v1alpha1.GroupVersion.Version); err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil, nil, errors.New("the cluster has no Application kind: install converge first (converge install --apply)")
		}
		return nil, nil, nil, err
	}
	if canListApps(ctx, c, "") {
		return scheme, mapper, nil, nil
	}
	fmt.Fprintf(o.ErrOut, "You may not list Applications in every namespace: watching namespace %s\n", ns)
	return scheme, mapper, []string{ns}, nil
}

// canListApps asks whether c may list Applications in ns ("" for all).
func canListApps(ctx context.Context, c client.Client, ns string) bool {
	r := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
		ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: "list", Group: v1alpha1.GroupVersion.Group, Resource: "applications"},
	}}
	return c.Create(ctx, r) == nil && r.Status.Allowed
}

func openBrowser(url string) {
	name, args := "xdg-open", []string{url}
	switch runtime.GOOS {
	case "darwin":
		name = "open"
	case "windows":
		name, args = "rundll32", []string{"url.dll,FileProtocolHandler", url}
	}
	_ = exec.Command(name, args...).Start()
}
